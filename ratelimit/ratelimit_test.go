package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

func TestParseStoreErrorMode(t *testing.T) {
	tests := []struct {
		in      string
		want    StoreErrorMode
		wantErr bool
	}{
		{"", Local, false},
		{"local", Local, false},
		{"open", Open, false},
		{"closed", Closed, false},
		{"Closed", 0, true},
		{"fail", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseStoreErrorMode(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseStoreErrorMode(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.String() != tt.in && tt.in != "" {
			t.Errorf("%v.String() = %q; want %q", got, got.String(), tt.in)
		}
	}
}

// TestNewRedisRegisters: the metric is registered, and a second limiter on the same registry
// (a reload) shares it instead of failing.
func TestNewRedisRegisters(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer c.Close()
	reg := prometheus.NewRegistry()
	a, err := NewRedis(c, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewRedis(c, WithRegisterer(reg))
	if err != nil {
		t.Fatalf("second NewRedis on one registry: %v", err)
	}
	defer b.Close()
	a.storeErrors.Inc()
	if got := storeErrors(t, reg); got != 1 {
		t.Fatalf("keygate_limiter_store_errors_total = %v; want 1", got)
	}
	if _, err := NewRedis(nil); err == nil {
		t.Fatal("NewRedis(nil) = nil error")
	}
}

// TestRedisDownAtStart: a Redis that never answers is not fatal; each mode answers at once.
func TestRedisDownAtStart(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer c.Close()
	limits := []Limit{window("w", 100, time.Second), quota("q", QuotaDay, 3)}
	for _, tt := range []struct {
		mode    StoreErrorMode
		allowed int
		err     error
	}{{Local, 3, nil}, {Open, 5, nil}, {Closed, 0, ErrUnavailable}} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			r := newTestRedis(t, c, WithOnStoreError(tt.mode), WithTimeout(50*time.Millisecond))
			allowed := 0
			for range 5 {
				var d Decision
				err := r.Check(context.Background(), limits, 1, &d)
				if !errors.Is(err, tt.err) {
					t.Fatalf("Check = %v; want %v", err, tt.err)
				}
				if d.Allowed {
					allowed++
				}
			}
			if allowed != tt.allowed || r.Healthy() {
				t.Fatalf("%d allowed, healthy %v; want %d, false", allowed, r.Healthy(), tt.allowed)
			}
		})
	}
}
