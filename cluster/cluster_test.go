package cluster

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// testRedis returns a client of the machine's Redis; with CI=true an unreachable Redis fails
// the test, otherwise it skips.
func testRedis(t *testing.T) *redis.Client {
	t.Helper()
	addr := os.Getenv("KEYGATE_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis not reachable at %s (CI=true requires it): %v", addr, err)
		}
		t.Skipf("redis not reachable at %s: %v (start redis-server to run this test)", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}
func (r *recorder) KeyChanged(id string, hash []byte)     { r.add("key:" + id + ":" + string(hash)) }
func (r *recorder) ConsumerChanged(id string)             { r.add("consumer:" + id) }
func (r *recorder) PlanChanged(name string)               { r.add("plan:" + name) }
func (r *recorder) RootKeyChanged(id string, hash []byte) { r.add("root_key:" + id) }

func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.calls {
		if c == s {
			return true
		}
	}
	return false
}

func waitHealthy(t *testing.T, b *Bus) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !b.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("bus never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInvalidationReachesOtherNodeWithinOneSecond(t *testing.T) {
	rdb := testRedis(t)
	a, b := &recorder{}, &recorder{}
	busA := New(rdb, a, "node-a", Hooks{}, nil)
	defer busA.Close()
	busB := New(rdb, b, "node-b", Hooks{}, nil)
	defer busB.Close()
	waitHealthy(t, busA)
	waitHealthy(t, busB)

	tests := []struct {
		name string
		do   func()
		want string
	}{
		{"key", func() { busA.KeyChanged("key_1", []byte{0xab}) }, "key:key_1:\xab"},
		{"consumer", func() { busA.ConsumerChanged("con_1") }, "consumer:con_1"},
		{"plan", func() { busA.PlanChanged("gold") }, "plan:gold"},
		{"root key", func() { busA.RootKeyChanged("rk_1", nil) }, "root_key:rk_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			tt.do()
			if !a.has(tt.want) {
				t.Fatalf("local node did not apply %q at once", tt.want)
			}
			for !b.has(tt.want) {
				if time.Since(start) > time.Second {
					t.Fatalf("other node did not get %q within 1s", tt.want)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	// A node ignores its own messages (it applied them already).
	time.Sleep(100 * time.Millisecond)
	a.mu.Lock()
	n := len(a.calls)
	a.mu.Unlock()
	if n != len(tests) {
		t.Fatalf("node a applied %d invalidations; want %d (its own, once each)", n, len(tests))
	}
}

func TestDegradedWhenRedisUnreachable(t *testing.T) {
	// Nothing listens on port 1: the bus must report degraded without blocking anyone.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	degraded := make(chan struct{}, 1)
	r := &recorder{}
	bus := New(rdb, r, "n", Hooks{Degraded: func() {
		select {
		case degraded <- struct{}{}:
		default:
		}
	}}, nil)
	defer bus.Close()
	select {
	case <-degraded:
	case <-time.After(3 * time.Second):
		t.Fatal("Degraded not called with Redis down")
	}
	start := time.Now()
	bus.PlanChanged("gold") // applied locally even though publishing fails
	if !r.has("plan:gold") || time.Since(start) > time.Second {
		t.Fatalf("local invalidation with Redis down took %v or was lost", time.Since(start))
	}
}
