package ratelimit

import (
	"context"
	"testing"
	"time"
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
