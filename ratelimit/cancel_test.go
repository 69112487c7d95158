package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRedisCancelledCallerAdmitsNothing: a Check whose caller gave up before Redis answered
// admits nothing (and is no store error), so no usage bypasses Redis's counters.
func TestRedisCancelledCallerAdmitsNothing(t *testing.T) {
	client, prefix := sharedClient(t, nil)
	r, err := NewRedis(client, WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	limits := []Limit{{Name: "quota", Key: "k:cancel:quota", Kind: QuotaDay, Limit: 10}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var d Decision
	err = r.Check(ctx, limits, 1, &d)
	if !errors.Is(err, ErrUnavailable) || d.Allowed {
		t.Fatalf("Check with a cancelled context = %v, allowed %v; want ErrUnavailable, refused", err, d.Allowed)
	}
	if !r.Healthy() {
		t.Fatal("a caller's cancellation marked Redis down")
	}
	// All 10 remain for live callers.
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := r.Check(ctx, limits, 1, &d); err != nil || !d.Allowed {
			t.Fatalf("check %d: %v allowed=%v", i, err, d.Allowed)
		}
		cancel()
	}
	if r.Check(context.Background(), limits, 1, &d); d.Allowed {
		t.Fatal("the quota admitted an 11th request")
	}
}
