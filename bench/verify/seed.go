package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
)

// benchScope is the scope every seeded key grants and every verification asks for.
const benchScope = "products:read"

// seedResult is what seeding one database produced.
type seedResult struct {
	plain    []string // every key's plaintext, in creation order
	consumer string
	elapsed  time.Duration
}

func (r seedResult) rate() float64 { return float64(len(r.plain)) / r.elapsed.Seconds() }

// seedKeys creates one consumer and n live secret keys owned by it through the store's bulk path
// (Tx.CreateKeys, batch keys per transaction, writers transactions in flight at once), and times
// it from the first key generated to the last transaction committed: key generation
// (crypto/rand, base62, CRC32, SHA-256) is part of the cost of creating a key.
//
// The keys look like keys made through the API: a scope, one rate-limit window (generous enough
// that the benchmark never hits it, so every verification runs the limiter and answers VALID),
// no quota, no allow-lists. Unlike the API path, no audit entry is written per key.
func seedKeys(ctx context.Context, s keygate.Store, n, batch, writers int) (seedResult, error) {
	start := time.Now()
	at := start.UTC().Truncate(time.Microsecond)
	c := &keygate.Consumer{ID: keys.NewID("con"), Name: "bench", Email: "bench@example.com",
		RateLimits: []keygate.Window{}, Metadata: map[string]any{}, CreatedAt: at, UpdatedAt: at}
	if err := s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateConsumer(ctx, c) }); err != nil {
		return seedResult{}, fmt.Errorf("seed consumer: %w", err)
	}
	plain := make([]string, n)

	// Generators fill batches on every CPU; writers commit them. Generation is much cheaper than
	// writing, so a small channel keeps the writers fed without holding many batches in memory.
	todo := make(chan [2]int)
	ready := make(chan []*keygate.Key, writers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var writeErr error
	var errOnce sync.Once
	fail := func(err error) { // the first error wins; the rest are its consequences
		errOnce.Do(func() { writeErr = err })
		cancel()
	}
	go func() {
		defer close(todo)
		for lo := 0; lo < n; lo += batch {
			select {
			case todo <- [2]int{lo, min(lo+batch, n)}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var gens sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		gens.Go(func() {
			for r := range todo {
				ks, err := generate(c.ID, at.Add(time.Duration(r[0])*time.Microsecond), plain[r[0]:r[1]])
				if err != nil {
					fail(err)
					return
				}
				select {
				case ready <- ks:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	go func() { gens.Wait(); close(ready) }()
	var ws sync.WaitGroup
	for range writers {
		ws.Go(func() {
			for ks := range ready {
				if ctx.Err() != nil {
					continue // drain
				}
				if err := s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, ks...) }); err != nil {
					fail(fmt.Errorf("seed keys: %w", err))
				}
			}
		})
	}
	ws.Wait()
	if writeErr != nil {
		return seedResult{}, writeErr
	}
	if err := ctx.Err(); err != nil {
		return seedResult{}, err
	}
	return seedResult{plain: plain, consumer: c.ID, elapsed: time.Since(start)}, nil
}

// generate fills plain with new key strings and returns their key objects, created one
// microsecond apart from at on: keys made one by one have increasing creation times, so the
// (created_at, id) indexes grow at their end instead of at random places, as they would if every
// key had the same time.
func generate(consumerID string, at time.Time, plain []string) ([]*keygate.Key, error) {
	out := make([]*keygate.Key, len(plain))
	limits := []keygate.Window{{Name: "minute", Limit: 1_000_000, Period: keygate.Duration(time.Minute)}}
	for i := range plain {
		s, err := keys.Generate(keys.DefaultPrefix, keys.TagSecret, "live")
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		p, err := keys.Parse(s, keys.DefaultPrefix)
		if err != nil {
			return nil, fmt.Errorf("parse generated key: %w", err)
		}
		h := keys.Hash(s)
		id := keys.NewID("key")
		plain[i] = s
		out[i] = &keygate.Key{
			ID: id, ConsumerID: consumerID, Name: "bench", Kind: keygate.KindSecret, Env: keygate.EnvLive,
			Start: keys.Start(s, p), Scopes: []string{benchScope}, RateLimits: limits,
			IPAllow: []string{}, ReferrerAllow: []string{}, Metadata: map[string]any{},
			State: keygate.StateActive, Status: keygate.StateActive,
			CreatedAt: at, UpdatedAt: at, Hash: h[:], LimiterID: id,
		}
		at = at.Add(time.Microsecond)
	}
	return out, nil
}
