// Package usage keeps the durable record of usage (SPEC §5): every key's successful requests,
// counted per UTC day in the database, and each key's last use. The hot path only adds to an
// in-memory batch; a goroutine owned by the Recorder writes the batch at least once a second,
// and Close writes whatever is left, so a clean stop loses nothing.
package usage

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate"
)

// Store is the part of keygate.Store the recorder writes to.
type Store interface {
	AddUsage(ctx context.Context, deltas []keygate.UsageDelta) error
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error
}

type counterKey struct {
	keyID, consumerID, limiterID string
	day                          int64 // Unix seconds of midnight UTC
}

// Recorder batches usage and writes it to the store.
type Recorder struct {
	store    Store
	now      func() time.Time
	interval time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	counts   map[counterKey]int64
	lastUsed map[string]time.Time
	// touched is when each key's last_used_at was last written (only the flusher uses it).
	// last_used_at is kept to the minute: a key in steady use costs one write a minute, not one
	// a second.
	touched map[string]time.Time

	touchMu sync.Mutex
	failed  atomic.Int64 // flushes that failed (their counts are kept and retried)
	stop    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

// Options configure a Recorder.
type Options struct {
	// Interval between writes (default and maximum 1s).
	Interval time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
}

// New starts a Recorder; Close stops it.
func New(store Store, o Options) *Recorder {
	r := &Recorder{store: store, now: o.Now, interval: o.Interval, log: o.Logger,
		counts: map[counterKey]int64{}, lastUsed: map[string]time.Time{}, touched: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if r.now == nil {
		r.now = time.Now
	}
	if r.interval <= 0 || r.interval > time.Second {
		r.interval = time.Second
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	go r.loop()
	return r
}

// Add counts n successful requests of a key now.
func (r *Recorder) Add(keyID, consumerID, limiterID string, n int64) {
	now := r.now().UTC()
	day := now.Unix() - now.Unix()%86400
	r.mu.Lock()
	r.counts[counterKey{keyID, consumerID, limiterID, day}] += n
	r.lastUsed[keyID] = now
	r.mu.Unlock()
}

func (r *Recorder) loop() {
	defer close(r.done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.Flush(context.Background())
		case <-r.stop:
			return
		}
	}
}

// Flush writes the current batch. On failure the counts are put back and retried next time,
// so a database outage delays the record but does not lose it (while the process lives).
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	if len(r.counts) == 0 && len(r.lastUsed) == 0 {
		r.mu.Unlock()
		return nil
	}
	counts, lastUsed := r.counts, r.lastUsed
	r.counts, r.lastUsed = map[counterKey]int64{}, map[string]time.Time{}
	r.mu.Unlock()

	deltas := make([]keygate.UsageDelta, 0, len(counts))
	for k, n := range counts {
		deltas = append(deltas, keygate.UsageDelta{KeyID: k.keyID, ConsumerID: k.consumerID,
			LimiterID: k.limiterID, Day: time.Unix(k.day, 0).UTC(), Requests: n})
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := r.store.AddUsage(ctx, deltas)
	if err == nil {
		r.touch(ctx, lastUsed)
		return nil
	}
	r.failed.Add(1)
	r.log.Error("writing usage counters failed; will retry", "err", err, "keys", len(deltas))
	r.mu.Lock()
	for k, n := range counts {
		r.counts[k] += n
	}
	for id, t := range lastUsed {
		if t.After(r.lastUsed[id]) {
			r.lastUsed[id] = t
		}
	}
	r.mu.Unlock()
	return err
}

// TouchPrecision is how stale a key's last_used_at may be.
const TouchPrecision = time.Minute

// touch writes last_used_at for the keys whose stored value is over TouchPrecision old.
func (r *Recorder) touch(ctx context.Context, lastUsed map[string]time.Time) {
	r.touchMu.Lock()
	defer r.touchMu.Unlock()
	due := make(map[string]time.Time, len(lastUsed))
	for id, t := range lastUsed {
		if w, ok := r.touched[id]; !ok || t.Sub(w) >= TouchPrecision {
			due[id] = t
		}
	}
	if len(due) == 0 {
		return
	}
	if err := r.store.TouchKeys(ctx, due); err != nil {
		r.log.Warn("recording last use of keys failed", "err", err)
		return
	}
	now := r.now()
	for id, w := range r.touched {
		if now.Sub(w) >= TouchPrecision {
			delete(r.touched, id) // due again anyway: keep the map to the keys of the last minute
		}
	}
	for id, t := range due {
		r.touched[id] = t
	}
}

// FailedFlushes returns how many flushes failed so far.
func (r *Recorder) FailedFlushes() int64 { return r.failed.Load() }

// Close stops the background writer and flushes what is left.
func (r *Recorder) Close(ctx context.Context) error {
	r.closeMu.Do(func() { close(r.stop) })
	<-r.done
	return r.Flush(ctx)
}
