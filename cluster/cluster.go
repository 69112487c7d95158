// Package cluster carries cache invalidations between the nodes of a keygate cluster through
// Redis pub/sub (SPEC §4, §10): a key, consumer, plan or root-key change made on one node reaches
// every other node's verification cache within a second. While the channel is down, the
// Bus tells the node to trust cached entries only briefly (Degraded), and on reconnect to drop
// everything it may have missed.
package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Channel is the pub/sub channel of invalidations.
const Channel = "keygate:invalidate"

// Local is what a node does with an invalidation: its verify cache (and root-key cache).
type Local interface {
	KeyChanged(id string, hash []byte)
	ConsumerChanged(id string)
	PlanChanged(name string)
	RootKeyChanged(id string, hash []byte)
}

// Hooks are told when the channel goes down and comes back.
type Hooks struct {
	// Degraded is called when the channel is lost: cached entries must expire quickly.
	Degraded func()
	// Recovered is called when the channel is back: drop everything cached (messages may have
	// been missed) and trust the cache again.
	Recovered func()
}

type message struct {
	Node string `json:"n"`
	Kind string `json:"k"` // key, consumer, plan, root_key
	ID   string `json:"i,omitempty"`
	Hash string `json:"h,omitempty"`
}

// Bus publishes this node's changes and applies other nodes'. It implements control.Invalidator:
// every change is applied locally at once and then published.
type Bus struct {
	rdb   redis.UniversalClient
	local Local
	hooks Hooks
	node  string
	log   *slog.Logger

	healthy   atomic.Bool
	published atomic.Int64
	received  atomic.Int64

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// New starts a Bus; Close stops it. node identifies this process (its own messages are ignored).
func New(rdb redis.UniversalClient, local Local, node string, hooks Hooks, log *slog.Logger) *Bus {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{rdb: rdb, local: local, hooks: hooks, node: node, log: log, cancel: cancel, done: make(chan struct{})}
	go b.run(ctx)
	return b
}

// Healthy reports whether the channel is subscribed.
func (b *Bus) Healthy() bool { return b.healthy.Load() }

func (b *Bus) run(ctx context.Context) {
	defer close(b.done)
	backoff, first := 100*time.Millisecond, true
	for ctx.Err() == nil {
		err := b.subscribe(ctx)
		if ctx.Err() != nil {
			return
		}
		if wasHealthy := b.healthy.Swap(false); wasHealthy || first {
			b.log.Warn("cluster invalidation channel down; cached keys are trusted for a few seconds at most until it returns", "err", err)
			if b.hooks.Degraded != nil {
				b.hooks.Degraded()
			}
			if wasHealthy {
				backoff = 100 * time.Millisecond
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// subscribe listens until the connection fails or ctx ends.
func (b *Bus) subscribe(ctx context.Context) error {
	ps := b.rdb.Subscribe(ctx, Channel)
	defer ps.Close()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := ps.Receive(sctx) // the subscription confirmation
	cancel()
	if err != nil {
		return err
	}
	if !b.healthy.Swap(true) {
		if b.hooks.Recovered != nil {
			b.hooks.Recovered()
		}
		b.log.Info("cluster invalidation channel subscribed")
	}
	for {
		// A timeout on an idle channel is normal; Ping proves the connection is alive.
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		msg, err := ps.ReceiveTimeout(rctx, 2*time.Second)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isTimeout(err) {
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				perr := ps.Ping(pctx)
				cancel()
				if perr != nil {
					return perr
				}
				continue
			}
			return err
		}
		if m, ok := msg.(*redis.Message); ok {
			b.apply(m.Payload)
		}
	}
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}

func (b *Bus) apply(payload string) {
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.Node == b.node {
		return
	}
	b.received.Add(1)
	h, _ := hex.DecodeString(m.Hash)
	switch m.Kind {
	case "key":
		b.local.KeyChanged(m.ID, h)
	case "consumer":
		b.local.ConsumerChanged(m.ID)
	case "plan":
		b.local.PlanChanged(m.ID)
	case "root_key":
		b.local.RootKeyChanged(m.ID, h)
	}
}

func (b *Bus) publish(kind, id string, hash []byte) {
	p, _ := json.Marshal(message{Node: b.node, Kind: kind, ID: id, Hash: hex.EncodeToString(hash)})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := b.rdb.Publish(ctx, Channel, p).Err(); err != nil {
		// Other nodes lose this message; while their channel is down too, their short TTL covers
		// it, otherwise the change shows there when the entry is next loaded.
		b.log.Warn("publishing a cache invalidation failed", "kind", kind, "err", err)
		return
	}
	b.published.Add(1)
}

// KeyChanged implements control.Invalidator.
func (b *Bus) KeyChanged(id string, hash []byte) {
	b.local.KeyChanged(id, hash)
	b.publish("key", id, hash)
}

// ConsumerChanged implements control.Invalidator.
func (b *Bus) ConsumerChanged(id string) {
	b.local.ConsumerChanged(id)
	b.publish("consumer", id, nil)
}

// PlanChanged implements control.Invalidator.
func (b *Bus) PlanChanged(name string) {
	b.local.PlanChanged(name)
	b.publish("plan", name, nil)
}

// RootKeyChanged implements control.Invalidator.
func (b *Bus) RootKeyChanged(id string, hash []byte) {
	b.local.RootKeyChanged(id, hash)
	b.publish("root_key", id, hash)
}

// Close stops the subscriber.
func (b *Bus) Close() {
	b.once.Do(func() {
		b.cancel()
		<-b.done
	})
}
