package ratelimit

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func benchLimits(id string) []Limit {
	return []Limit{
		// Limits high enough never to refuse at benchmark speed.
		{Name: "burst", Key: "k:" + id + ":burst", Kind: Window, Limit: 1e9, Period: time.Second},
		{Name: "minute", Key: "k:" + id + ":minute", Kind: Window, Limit: 60e9, Period: time.Minute},
		{Name: "hour", Key: "k:" + id + ":hour", Kind: Window, Limit: 3600e9, Period: time.Hour},
		{Name: "quota", Key: "k:" + id + ":quota", Kind: QuotaMonth, Limit: 1 << 60},
	}
}

// BenchmarkMemoryCheck is the hot path of the gateway: 3 windows and a quota, one key.
func BenchmarkMemoryCheck(b *testing.B) {
	m := NewMemory()
	defer m.Close()
	limits := benchLimits("bench")
	d := &Decision{States: make([]State, 0, len(limits))}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Check(ctx, limits, 1, d); err != nil || !d.Allowed {
			b.Fatalf("Check = %v, allowed %v", err, d.Allowed)
		}
	}
}

// BenchmarkMemoryCheckFixedClock is BenchmarkMemoryCheck without the cost of reading the clock
// (time.Now), which varies a lot between machines (about 20ns on bare metal, 80ns or more in
// some sandboxes and VMs).
func BenchmarkMemoryCheckFixedClock(b *testing.B) {
	now := time.Now()
	m := NewMemory(WithNow(func() time.Time { return now }))
	defer m.Close()
	limits := benchLimits("bench")
	d := &Decision{States: make([]State, 0, len(limits))}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Check(ctx, limits, 1, d); err != nil || !d.Allowed {
			b.Fatalf("Check = %v, allowed %v", err, d.Allowed)
		}
	}
}

// BenchmarkMemoryCheckParallel is BenchmarkMemoryCheck from every P at once, each on its own key.
func BenchmarkMemoryCheckParallel(b *testing.B) {
	m := NewMemory()
	defer m.Close()
	var ids atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		limits := benchLimits(strconv.FormatInt(ids.Add(1), 10))
		d := &Decision{States: make([]State, 0, len(limits))}
		for pb.Next() {
			if err := m.Check(context.Background(), limits, 1, d); err != nil || !d.Allowed {
				b.Errorf("Check = %v, allowed %v", err, d.Allowed)
				return
			}
		}
	})
}

// BenchmarkRedisCheck is the shared limiter with about 50 concurrent callers (each its own key,
// 3 windows and a quota) against the Redis at 127.0.0.1:6379.
func BenchmarkRedisCheck(b *testing.B) {
	c, prefix := sharedClient(b, &redis.Options{PoolSize: 64})
	hook := &roundTrips{}
	c.AddHook(hook)
	r, err := NewRedis(c, WithPrefix(prefix), WithTimeout(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if err := r.Check(ctx, benchLimits("warm"), 1, &Decision{}); err != nil { // loads the script
		b.Fatal(err)
	}
	var ids atomic.Int64
	hook.n.Store(0)
	b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		limits := benchLimits(strconv.FormatInt(ids.Add(1), 10))
		d := &Decision{}
		for pb.Next() {
			if err := r.Check(ctx, limits, 1, d); err != nil || !d.Allowed {
				b.Errorf("Check = %v, allowed %v", err, d.Allowed)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if !r.Healthy() {
		b.Fatal("the limiter fell back during the benchmark")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "checks/s")
	b.ReportMetric(float64(hook.n.Load())/float64(b.N), "roundtrips/check")
}
