package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
)

// seedBatch is how many keys SeedKeys writes per transaction.
const seedBatch = 5000

// SeedKeys creates a consumer and n live secret keys owned by it, and returns their plaintexts in
// creation order. Keys are generated on every CPU while the previous batch is written, so
// seeding 1M keys takes minutes, not hours.
func SeedKeys(ctx context.Context, s keygate.Store, n int) ([]string, error) {
	at := time.Now().UTC().Truncate(time.Microsecond)
	c := newConsumer(at)
	c.Name = "seed"
	if err := s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateConsumer(ctx, c) }); err != nil {
		return nil, fmt.Errorf("seed consumer: %w", err)
	}
	plain := make([]string, n)
	type batch struct {
		keys []*keygate.Key
		err  error
	}
	batches := make(chan batch, 2)
	go func() {
		defer close(batches)
		for lo := 0; lo < n; lo += seedBatch {
			hi := min(lo+seedBatch, n)
			ks, err := generateKeys(c.ID, at, plain[lo:hi])
			select {
			case batches <- batch{ks, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for b := range batches {
		if b.err != nil {
			return nil, b.err
		}
		if err := s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, b.keys...) }); err != nil {
			return nil, fmt.Errorf("seed keys: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return plain, nil
}

// generateKeys fills plain with new key strings and returns their key objects.
func generateKeys(consumerID string, at time.Time, plain []string) ([]*keygate.Key, error) {
	out := make([]*keygate.Key, len(plain))
	workers := runtime.GOMAXPROCS(0)
	per := (len(plain) + workers - 1) / workers
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, len(plain))
		if lo >= hi {
			break
		}
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				s, err := keys.Generate(keys.DefaultPrefix, keys.TagSecret, "live")
				if err != nil {
					errs[w] = err
					return
				}
				p, err := keys.Parse(s, keys.DefaultPrefix)
				if err != nil {
					errs[w] = err
					return
				}
				h := keys.Hash(s)
				k := newKey(consumerID, at)
				k.Start, k.Hash = keys.Start(s, p), h[:]
				plain[i], out[i] = s, k
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
	}
	return out, nil
}

// BenchCreateKeys measures creating keys through the store, in transactions of batch keys
// (b.N keys in all), and reports keys/s.
func BenchCreateKeys(b *testing.B, s keygate.Store, batch int) {
	ctx := context.Background()
	c := newConsumer(time.Now().UTC())
	if err := s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateConsumer(ctx, c) }); err != nil {
		b.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	all := make([]*keygate.Key, b.N)
	for i := range all {
		all[i] = newKey(c.ID, at)
	}
	b.ResetTimer()
	start := time.Now()
	for lo := 0; lo < b.N; lo += batch {
		ks := all[lo:min(lo+batch, b.N)]
		if err := s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, ks...) }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
}

// BenchKeyByHash measures KeyByHash of random existing keys (b.RunParallel) in a store of 10k
// keys, and of 1M keys when KEYGATE_BENCH_BIG=1 (seeding them takes minutes). open returns an
// empty store for each size.
func BenchKeyByHash(b *testing.B, open func(testing.TB) keygate.Store) {
	sizes := []int{10_000}
	if os.Getenv("KEYGATE_BENCH_BIG") == "1" {
		sizes = append(sizes, 1_000_000)
	}
	ctx := context.Background()
	for _, n := range sizes {
		s := open(b)
		start := time.Now()
		plain, err := SeedKeys(ctx, s, n)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("seeded %d keys in %v", n, time.Since(start).Round(time.Millisecond))
		hashes := make([][]byte, len(plain))
		for i, p := range plain {
			h := keys.Hash(p)
			hashes[i] = h[:]
		}
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
				for pb.Next() {
					if _, err := s.KeyByHash(ctx, hashes[r.IntN(len(hashes))]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
