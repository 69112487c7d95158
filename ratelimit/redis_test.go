package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// newTestRedis returns a limiter with a 2s timeout unless opts say otherwise: on a loaded CI
// machine, dialling a connection can take longer than the 50ms default, and a test that does
// not mean to fall back must not.
func newTestRedis(t testing.TB, c redis.UniversalClient, opts ...Option) *Redis {
	t.Helper()
	r, err := NewRedis(c, append([]Option{WithTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestLimiterSemantics runs the same script of checks against both limiters. The windows are
// long enough (T = 12 min) that Redis's moving clock does not change the answers.
func TestLimiterSemantics(t *testing.T) {
	burst, minute := window("burst", 5, time.Hour), window("minute", 2, time.Hour)
	q := quota("quota", QuotaDay, 3)
	type step struct {
		limits    []Limit
		cost      int64
		allowed   bool
		denied    int
		remaining []int64
		retry     time.Duration // approximate (Redis time moves), 0: not checked
	}
	steps := []step{
		{limits: []Limit{burst, minute, q}, cost: 0, allowed: true, denied: -1, remaining: []int64{5, 2, 3}},
		{limits: []Limit{burst, minute, q}, cost: 1, allowed: true, denied: -1, remaining: []int64{4, 1, 2}},
		{limits: []Limit{burst, minute, q}, cost: 1, allowed: true, denied: -1, remaining: []int64{3, 0, 1}},
		{limits: []Limit{burst, minute, q}, cost: 1, allowed: false, denied: 1, remaining: []int64{3, 0, 1}, retry: 30 * time.Minute},
		{limits: []Limit{burst, minute, q}, cost: 0, allowed: false, denied: 1, remaining: []int64{3, 0, 1}},
		{limits: []Limit{burst, q}, cost: 1, allowed: true, denied: -1, remaining: []int64{2, 0}},
		{limits: []Limit{burst, q}, cost: 1, allowed: false, denied: 1, remaining: []int64{2, 0}},
		{limits: []Limit{burst}, cost: 3, allowed: false, denied: 0, remaining: []int64{2}, retry: 12 * time.Minute},
		{limits: []Limit{burst}, cost: 2, allowed: true, denied: -1, remaining: []int64{0}},
		{limits: []Limit{burst}, cost: 6, allowed: false, denied: 0, remaining: []int64{0}, retry: time.Hour},
	}
	impls := map[string]func(t *testing.T) Limiter{
		"memory": func(t *testing.T) Limiter { return newTestMemory(t, newFakeClock(t0)) },
		"redis": func(t *testing.T) Limiter {
			c, prefix := sharedClient(t, nil)
			return newTestRedis(t, c, WithPrefix(prefix))
		},
	}
	for name, newLimiter := range impls {
		t.Run(name, func(t *testing.T) {
			l := newLimiter(t)
			for i, s := range steps {
				d := check(t, l, s.limits, s.cost)
				var rem []int64
				for _, st := range d.States {
					rem = append(rem, st.Remaining)
				}
				if d.Allowed != s.allowed || d.Denied != s.denied || fmt.Sprint(rem) != fmt.Sprint(s.remaining) {
					t.Fatalf("step %d: allowed %v denied %d remaining %v; want %v %d %v", i, d.Allowed, d.Denied, rem, s.allowed, s.denied, s.remaining)
				}
				if s.retry != 0 && (d.RetryAfter > s.retry || d.RetryAfter < s.retry-time.Second) {
					t.Fatalf("step %d: RetryAfter %v; want about %v", i, d.RetryAfter, s.retry)
				}
				for j, st := range d.States {
					if st.Name != s.limits[j].Name || st.Limit != s.limits[j].Limit || st.Reset < 0 {
						t.Fatalf("step %d: state %d = %+v", i, j, st)
					}
					if st.Kind == QuotaDay && (st.Window != 24*time.Hour || st.Reset > 24*time.Hour) {
						t.Fatalf("step %d: quota state %+v; want a 24h window", i, st)
					}
					if st.Kind == Window && st.Window != time.Hour {
						t.Fatalf("step %d: window state %+v; want a 1h window", i, st)
					}
				}
			}
		})
	}
}

// TestRedisKeys: counters live under the prefix in one hash per owner (the limit key up to its
// last ':'), quotas in per-period fields; the hash expires after the last thing it must keep,
// and a quota's new period drops its earlier ones.
func TestRedisKeys(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	r := newTestRedis(t, c, WithPrefix(prefix))
	ctx := context.Background()
	tm, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	old := "d:" + periodSuffix(QuotaDay, tm.UTC().AddDate(0, 0, -1))
	if err := c.HSet(ctx, prefix+"k:test", old, 7, "m:m197001", 3, "w:m197001x", "kept").Err(); err != nil {
		t.Fatal(err)
	}
	check(t, r, []Limit{window("w", 10, time.Second), quota("d", QuotaDay, 10), quota("m", QuotaMonth, 10)}, 1)
	consumer := Limit{Name: "cw", Key: "c:test:cw", Kind: Window, Limit: 10, Period: time.Second}
	check(t, r, []Limit{consumer}, 1)
	got, err := c.HGetAll(ctx, prefix+"k:test").Result()
	if err != nil {
		t.Fatal(err)
	}
	day, month := "d:"+periodSuffix(QuotaDay, tm.UTC()), "m:"+periodSuffix(QuotaMonth, tm.UTC())
	if got[day] != "1" || got[month] != "1" || !strings.Contains(got["w"], ":") || got[":exp"] == "" ||
		got["w:m197001x"] != "kept" || len(got) != 5 {
		t.Errorf("hash k:test = %v; want w, %s=1, %s=1, :exp and the foreign field, earlier periods gone", got, day, month)
	}
	for _, k := range []struct {
		key    string
		maxTTL time.Duration
	}{
		{prefix + "k:test", 32*24*time.Hour + time.Hour}, // the month's end + an hour
		{prefix + "c:test", 2 * time.Second},             // its TAT (≤ 1 s ahead) + one period
	} {
		ttl, err := c.PTTL(ctx, k.key).Result()
		if err != nil || ttl <= 0 || ttl > k.maxTTL+time.Millisecond {
			keys, _ := c.Keys(ctx, prefix+"*").Result()
			t.Errorf("PTTL(%s) = %v, %v; want in (0, %v] (keys: %v)", k.key, ttl, err, k.maxTTL, keys)
		}
	}
	_, end := periodBounds(QuotaMonth, tm.UnixNano())
	if exp, _ := c.HGet(ctx, prefix+"k:test", ":exp").Int64(); exp != time.Unix(0, end).Add(quotaGrace).UnixMilli() {
		t.Errorf(":exp = %d; want the month's end + 1h", exp)
	}
}

// TestRedisWindowExpiry: a window's hash always outlives its TAT, whether a write kept the
// hash's expiry or moved it on (the script moves it about once per period).
func TestRedisWindowExpiry(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	r := newTestRedis(t, c, WithPrefix(prefix))
	ctx := context.Background()
	key := prefix + "k:test"
	limits := []Limit{window("w", 20, 300*time.Millisecond)}
	moved := map[int64]bool{}
	for i := range 60 {
		check(t, r, limits, int64(1+i%3))
		v, err := c.HMGet(ctx, key, "w", ":exp").Result()
		if err != nil {
			t.Fatal(err)
		}
		ttl, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		var tat, frac, exp int64
		if _, err := fmt.Sscanf(fmt.Sprint(v[0], ":", v[1]), "%d:%d:%d", &tat, &frac, &exp); err != nil {
			t.Fatalf("values %q: %v", v, err)
		}
		moved[exp] = true
		left := time.Duration(tat-now.UnixMicro()) * time.Microsecond
		if ttl <= 0 || ttl < left {
			t.Fatalf("check %d: hash expires in %v, its TAT is %v ahead", i, ttl, left)
		}
		if expiresAt := now.Add(ttl); expiresAt.UnixMilli() > exp+1 || expiresAt.UnixMilli() < exp-2 {
			t.Fatalf("check %d: hash expires at %d ms, :exp says %d", i, expiresAt.UnixMilli(), exp)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(moved) < 2 || len(moved) > 30 {
		t.Fatalf("expiry set %d times in 60 checks over ~0.6 s of a 0.3 s window; want a few", len(moved))
	}
}

// TestRedisCalendar checks check.lua's calendar arithmetic against Go's for every day of
// 1970-2200.
func TestRedisCalendar(t *testing.T) {
	c, _ := sharedClient(t, nil)
	funcs := checkLua[:strings.Index(checkLua, "local t = rcall('TIME')")]
	script := funcs + `
local out = {}
for z = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local y, m = civil(z)
  local s = days(y, m)
  local e
  if m == 12 then e = days(y + 1, 1) else e = days(y, m + 1) end
  out[#out + 1] = y * 100 + m
  out[#out + 1] = s
  out[#out + 1] = e
end
return out`
	first, last := int64(0), int64(84000)
	res, err := c.Eval(context.Background(), script, nil, first, last).Int64Slice()
	if err != nil {
		t.Fatal(err)
	}
	for z := first; z <= last; z++ {
		v := res[3*(z-first):]
		now := z * day
		start, end := periodBounds(QuotaMonth, now)
		tm := time.Unix(0, now).UTC()
		if v[0] != int64(tm.Year()*100+int(tm.Month())) || v[1]*day != start || v[2]*day != end {
			t.Fatalf("day %d (%v): lua says %d, %d..%d; want %v, %v..%v", z, tm, v[0], v[1], v[2],
				periodSuffix(QuotaMonth, tm), time.Unix(0, start).UTC(), time.Unix(0, end).UTC())
		}
	}
}

// TestRedisRoundTrips: one round trip per Check, all limits included.
func TestRedisRoundTrips(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	hook := &roundTrips{}
	c.AddHook(hook)
	r := newTestRedis(t, c, WithPrefix(prefix))
	limits := benchLimits("rt")
	check(t, r, limits, 1) // may load the script and create the quota counter
	hook.n.Store(0)
	for range 100 {
		check(t, r, limits, 1)
	}
	if n := hook.n.Load(); n != 100 {
		t.Fatalf("%d round trips for 100 checks; want 100", n)
	}
}

func TestRedisSeed(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	var calls atomic.Int32
	seed := func(ctx context.Context, key string, kind Kind, start time.Time) (int64, error) {
		calls.Add(1)
		time.Sleep(5 * time.Millisecond) // a database answer: lets the nodes race
		return 900, nil
	}
	// Two nodes seed the same counter at once: SET NX keeps one value and the quota holds.
	nodes := []*Redis{
		newTestRedis(t, c, WithPrefix(prefix), WithSeed(seed), WithTimeout(time.Second)),
		newTestRedis(t, c, WithPrefix(prefix), WithSeed(seed), WithTimeout(time.Second)),
	}
	limits := []Limit{quota("q", QuotaMonth, 1000), quota("d", QuotaDay, 10000)}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			d := &Decision{}
			for range 10 {
				if err := nodes[i%2].Check(context.Background(), limits, 1, d); err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 100 {
		t.Fatalf("%d allowed with 900 of 1000 used; want 100", n)
	}
	if n := calls.Load(); n < 2 || n > 2*20 {
		t.Fatalf("Seed called %d times; want a few (once per counter and racing node)", n)
	}
	d := check(t, nodes[0], limits, 0)
	if d.States[0].Remaining != 0 || d.States[1].Remaining != 10000-900-100 {
		t.Fatalf("remaining %d, %d; want 0, %d", d.States[0].Remaining, d.States[1].Remaining, 10000-900-100)
	}
	tm, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	key := prefix + "k:test"
	if ttl, err := c.PTTL(context.Background(), key).Result(); err != nil || ttl <= 0 || ttl > 32*24*time.Hour {
		t.Fatalf("PTTL(%s) = %v, %v; want the rest of the month and an hour", key, ttl, err)
	}
	if used, err := c.HGet(context.Background(), key, "q:"+periodSuffix(QuotaMonth, tm.UTC())).Int64(); err != nil || used != 1000 {
		t.Fatalf("quota field = %d, %v; want 1000", used, err)
	}
}

// TestRedisConcurrent: 50 clients on two nodes. The quota is exact; windows stay within bounds.
func TestRedisConcurrent(t *testing.T) {
	c, prefix := sharedClient(t, &redis.Options{PoolSize: 60})
	a := newTestRedis(t, c, WithPrefix(prefix), WithTimeout(2*time.Second))
	b := newTestRedis(t, c, WithPrefix(prefix), WithTimeout(2*time.Second))
	both := &twoNodes{a, b}
	t.Run("quota", func(t *testing.T) {
		limits := []Limit{
			{Name: "burst", Key: "k:conc:burst", Kind: Window, Limit: 1e9, Period: time.Second},
			{Name: "quota", Key: "k:conc:quota", Kind: QuotaMonth, Limit: 500},
			{Name: "consumer-quota", Key: "c:conc:quota", Kind: QuotaDay, Limit: 700},
		}
		if allowed := hammer(t, both, limits, 50, 20, 0); allowed != 500 {
			t.Fatalf("%d allowed by a quota of 500", allowed)
		}
		if d := check(t, a, limits, 0); d.States[2].Remaining != 200 {
			t.Fatalf("consumer quota remaining %d; want 200 (refusals must not count)", d.States[2].Remaining)
		}
	})
	t.Run("window", func(t *testing.T) {
		limits := []Limit{{Name: "w", Key: "k:conc:w", Kind: Window, Limit: 50, Period: 100 * time.Millisecond}}
		start := time.Now()
		allowed := hammer(t, both, limits, 50, 0, 500*time.Millisecond)
		checkWindowBounds(t, allowed, 50, 100*time.Millisecond, time.Since(start))
	})
}

// twoNodes spreads Checks over two limiters, like a load balancer over two nodes.
type twoNodes struct{ a, b Limiter }

var flip atomic.Int64

func (n *twoNodes) Check(ctx context.Context, limits []Limit, cost int64, d *Decision) error {
	if flip.Add(1)%2 == 0 {
		return n.a.Check(ctx, limits, cost, d)
	}
	return n.b.Check(ctx, limits, cost, d)
}

// TestRedisStoreErrors freezes and kills a private Redis under each on_store_error mode.
func TestRedisStoreErrors(t *testing.T) {
	for _, mode := range []StoreErrorMode{Local, Open, Closed} {
		for _, ctxAware := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/ContextTimeoutEnabled=%v", mode, ctxAware), func(t *testing.T) {
				testStoreErrors(t, mode, ctxAware)
			})
		}
	}
}

func testStoreErrors(t *testing.T, mode StoreErrorMode, ctxAware bool) {
	srv := startRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ctxAware, MaxRetries: -1})
	defer c.Close()
	var durable atomic.Int64 // the database's count of allowed requests
	seed := func(ctx context.Context, key string, kind Kind, start time.Time) (int64, error) {
		return durable.Load(), nil
	}
	reg := prometheus.NewRegistry()
	const timeout = 50 * time.Millisecond
	r := newTestRedis(t, c, WithOnStoreError(mode), WithSeed(seed), WithRegisterer(reg),
		WithTimeout(timeout), WithRetryBackoff(100*time.Millisecond))
	const quotaLimit = 30
	limits := []Limit{window("burst", 1000, time.Second), quota("quota", QuotaMonth, quotaLimit)}
	ctx := context.Background()
	// A connection and the script ready, so that the healthy calls fit in 50ms on a busy machine.
	if err := r.script.Load(ctx, c).Err(); err != nil {
		t.Fatal(err)
	}

	// call checks once, timed, and counts allowed requests into the durable record.
	call := func() (Decision, error) {
		var d Decision
		start := time.Now()
		err := r.Check(ctx, limits, 1, &d)
		if took := time.Since(start); took > timeout+250*time.Millisecond {
			t.Fatalf("Check took %v with a %v timeout", took, timeout)
		}
		if err == nil && d.Allowed {
			durable.Add(1)
		}
		return d, err
	}
	for range 10 {
		if d, err := call(); err != nil || !d.Allowed {
			t.Fatalf("healthy: %+v, %v", d, err)
		}
	}

	// outage makes 15 requests while Redis is unusable and checks the mode's answers.
	outage := func(what string, wantAllowed int) {
		t.Helper()
		allowed := 0
		for range 15 {
			d, err := call()
			if mode == Closed {
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("%s, closed: Check = %v; want ErrUnavailable", what, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s, %v: Check = %v", what, mode, err)
			}
			if d.Allowed {
				allowed++
			}
		}
		if allowed != wantAllowed {
			t.Fatalf("%s, %v: %d of 15 allowed; want %d", what, mode, allowed, wantAllowed)
		}
		if n := storeErrors(t, reg); n < 1 {
			t.Fatalf("%s: keygate_limiter_store_errors_total = %v; want > 0", what, n)
		}
	}
	// back waits (at most 2s) until the limiter is on Redis again, and returns a peek.
	back := func(what string) Decision {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			var d Decision
			err := r.Check(ctx, limits, 0, &d)
			if err == nil && r.Healthy() {
				if err := r.Check(ctx, limits, 0, &d); err != nil {
					t.Fatal(err)
				}
				return d
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not back on Redis after 2s: %v", what, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wantAllowed := map[StoreErrorMode][2]int{Local: {15, 5}, Open: {15, 15}, Closed: {0, 0}}[mode]

	srv.Freeze()
	outage("frozen", wantAllowed[0])
	srv.Thaw()
	d := back("thawed")
	want := int64(quotaLimit - 10) // open and closed: Redis holds what it counted
	if mode == Local {
		want = quotaLimit - durable.Load() // the fallback's usage was added to Redis
	}
	// The Check that ran into the freeze had sent its script: Redis ran it when it woke up, so
	// that request may count twice (the error is on the strict side).
	if got := d.States[1].Remaining; got != want && got != want-1 {
		t.Fatalf("after the freeze, quota remaining %d; want %d (or one less)", got, want)
	}

	srv.Kill()
	if mode == Local { // the fallback goes on from what Redis said last
		wantAllowed[1] = int(min(d.States[1].Remaining, 15))
	}
	outage("killed", wantAllowed[1])
	srv.Restart() // empty: the quota comes back through Seed
	d = back("restarted")
	if want := max(quotaLimit-durable.Load(), 0); d.States[1].Remaining != want {
		t.Fatalf("after the restart, quota remaining %d; want %d (from Seed)", d.States[1].Remaining, want)
	}
	left := d.States[1].Remaining
	for i := int64(0); i <= left; i++ {
		if d, err := call(); err != nil || d.Allowed != (i < left) {
			t.Fatalf("after the restart, request %d: %+v, %v", i, d, err)
		}
	}
}

func storeErrors(t testing.TB, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "keygate_limiter_store_errors_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("keygate_limiter_store_errors_total not registered")
	return 0
}

// TestRedisSeedFails: a failing seed means the quota cannot be exact: the store-error mode
// answers (here Closed), and the next Check after the backoff tries again.
func TestRedisSeedFails(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	var fail atomic.Bool
	fail.Store(true)
	seed := func(ctx context.Context, key string, kind Kind, start time.Time) (int64, error) {
		if fail.Load() {
			return 0, errors.New("database down")
		}
		return 4, nil
	}
	r := newTestRedis(t, c, WithPrefix(prefix), WithSeed(seed), WithOnStoreError(Closed), WithRetryBackoff(0))
	limits := []Limit{quota("q", QuotaDay, 5)}
	var d Decision
	if err := r.Check(context.Background(), limits, 1, &d); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check with the seed failing = %v; want ErrUnavailable", err)
	}
	fail.Store(false)
	if d := check(t, r, limits, 1); !d.Allowed || d.States[0].Remaining != 0 {
		t.Fatalf("after the seed recovered: %+v; want allowed with 0 remaining", d)
	}
}

func TestRedisHungSeedTimesOut(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	seed := func(ctx context.Context, key string, kind Kind, start time.Time) (int64, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	r := newTestRedis(t, c, WithPrefix(prefix), WithSeed(seed), WithSeedTimeout(30*time.Millisecond), WithOnStoreError(Open))
	start := time.Now()
	if d := check(t, r, []Limit{quota("q", QuotaDay, 5)}, 1); !d.Allowed {
		t.Fatalf("open mode with a hung seed: %+v; want allowed", d)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Check took %v with a hung seed", took)
	}
}

// TestRedisFallbackStaleUsage: when what this node last heard from Redis about a quota is old,
// the Local fallback starts from the database's record, which counts the other nodes' requests.
func TestRedisFallbackStaleUsage(t *testing.T) {
	for _, tt := range []struct {
		name        string
		age         time.Duration
		wantAllowed int
	}{
		{"fresh", 0, 25},                    // 30 - 5 that this node knows of
		{"stale", 3 * time.Second, 30 - 25}, // 30 - 25 in the database
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startRedisServer(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
			defer c.Close()
			var durable atomic.Int64
			seed := func(ctx context.Context, key string, kind Kind, start time.Time) (int64, error) {
				return durable.Load(), nil
			}
			clock := newFakeClock(time.Now())
			r := newTestRedis(t, c, WithSeed(seed), WithNow(clock.Now), WithTimeout(50*time.Millisecond))
			limits := []Limit{quota("quota", QuotaMonth, 30)}
			for range 5 {
				if d := check(t, r, limits, 1); !d.Allowed {
					t.Fatalf("healthy: refused")
				}
			}
			durable.Store(25) // meanwhile, other nodes used 20 more
			srv.Kill()
			clock.Advance(tt.age)
			allowed := 0
			for range 40 {
				if d := check(t, r, limits, 1); d.Allowed {
					allowed++
				}
			}
			if allowed != tt.wantAllowed {
				t.Fatalf("fallback allowed %d; want %d", allowed, tt.wantAllowed)
			}
		})
	}
}

// TestRedisScriptFlushed: a Redis that lost its scripts (SCRIPT FLUSH, a restart) gets the script
// again, for lone Checks and for Checks sharing a pipeline, and no Check fails meanwhile.
func TestRedisScriptFlushed(t *testing.T) {
	srv := startRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	r := newTestRedis(t, c)
	limits := benchLimits("flush")
	limits[len(limits)-1].Limit = 1_000_000 // exact in the script's doubles, unlike 1<<60 - n
	for round := range 3 {
		if err := c.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var failed atomic.Int32
		n := 1
		if round > 0 {
			n = 40 // concurrent Checks share pipelines
		}
		for range n {
			wg.Go(func() {
				d := &Decision{}
				if err := r.Check(t.Context(), limits, 1, d); err != nil || !d.Allowed {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			t.Fatalf("round %d: %d of %d Checks failed after SCRIPT FLUSH", round, f, n)
		}
	}
	// Every admitted Check was counted once: 1 + 40 + 40.
	d := &Decision{}
	if err := r.Check(t.Context(), limits, 0, d); err != nil {
		t.Fatal(err)
	}
	q := d.States[len(d.States)-1]
	if used := q.Limit - q.Remaining; used != 81 {
		t.Errorf("quota used %d; want 81", used)
	}
}

// TestRedisAbandonedChecksRefunded: Checks whose callers go away while their script is on its
// way (Redis frozen with SIGSTOP, contexts cancelled, Redis thawed) consume no quota: the script
// runs when Redis wakes, and its consumption is given back. Quotas stay exact when clients hang
// up mid-request.
func TestRedisAbandonedChecksRefunded(t *testing.T) {
	srv := startRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	r := newTestRedis(t, c, WithTimeout(10*time.Second))
	limits := benchLimits("refund")
	limits[len(limits)-1].Limit = 1_000_000 // exact in the script's doubles
	used := func() int64 {
		d := &Decision{}
		if err := r.Check(t.Context(), limits, 0, d); err != nil {
			t.Fatal(err)
		}
		q := d.States[len(d.States)-1]
		return q.Limit - q.Remaining
	}
	for range 10 {
		check(t, r, limits, 1)
	}

	srv.Freeze()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var admitted atomic.Int32
	for range 40 {
		wg.Go(func() {
			d := &Decision{}
			if err := r.Check(ctx, limits, 1, d); err == nil && d.Allowed {
				admitted.Add(1)
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // the scripts are sent; Redis sleeps
	cancel()
	wg.Wait()
	srv.Thaw()
	if a := admitted.Load(); a != 0 {
		t.Fatalf("%d Checks of gone callers were admitted", a)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.refunds.Load() == 0 || used() != 10 {
		if time.Now().After(deadline) {
			t.Fatalf("quota used %d after %d refunds; want 10 (the 40 abandoned Checks given back)", used(), r.refunds.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRedisBatch sends Checks with every kind of answer as one batch (one EVALSHA): each is
// decided as if alone, in order, and one Check's trouble is its own.
func TestRedisBatch(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	ctx := context.Background()
	r := newTestRedis(t, c, WithPrefix(prefix), WithSeed(func(context.Context, string, Kind, time.Time) (int64, error) {
		return 0, nil
	}))
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// An owner whose key holds another type than a hash fails its Check.
	if err := c.Set(ctx, prefix+"odd", "v", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	dayField := "seeded:" + periodSuffix(QuotaDay, now.UTC())
	if err := c.HSet(ctx, prefix+"k:test", dayField, 4).Err(); err != nil {
		t.Fatal(err)
	}
	pair := []Limit{window("pair", 2, time.Hour)}
	seeded := []Limit{window("w1", 100, time.Hour), quota("seeded", QuotaDay, 5)}
	cases := []struct {
		limits  []Limit
		cost    int64
		want    string // allowed, refused, missing or error
		remains int64  // of the first limit, when decided
	}{
		{pair, 1, "allowed", 1},
		{pair, 1, "allowed", 0},
		{pair, 1, "refused", 0},
		{[]Limit{window("w2", 100, time.Hour), quota("fresh", QuotaMonth, 10)}, 1, "missing", 0},
		{[]Limit{window("w3", 100, time.Hour), {Name: "odd", Key: "odd:q", Kind: QuotaMonth, Limit: 10}}, 1, "error", 0},
		{seeded, 1, "allowed", 99},
		{seeded, 1, "refused", 99}, // 4 used + 1 = 5 of 5
		{pair, 0, "refused", 0},    // cost 0 asks whether one more would pass
	}
	batch := make([]*evalCall, len(cases))
	for i, tc := range cases {
		keys, args := r.scriptArgs(tc.limits, tc.cost)
		batch[i] = &evalCall{ctx: ctx, keys: keys, args: args, done: make(chan struct{})}
	}
	hook := &roundTrips{}
	c.AddHook(hook)
	r.batch.exec(batch)
	if n := hook.n.Load(); n > 3 { // EVALSHA, and on a fresh Redis NOSCRIPT, SCRIPT LOAD, EVALSHA
		t.Fatalf("%d round trips for one batch", n)
	}
	for i, tc := range cases {
		call := batch[i]
		<-call.done
		got := "error"
		switch {
		case call.err != nil:
		case call.res[0] == 2:
			got = "missing"
		case call.res[0] == 1:
			got = "allowed"
		case call.res[0] == 0:
			got = "refused"
		}
		if got != tc.want {
			t.Errorf("check %d: %s (%v, %v); want %s", i, got, call.res, call.err, tc.want)
			continue
		}
		if got == "error" && !errors.Is(call.err, errNotCounter) {
			t.Errorf("check %d: error %v; want errNotCounter", i, call.err)
		}
		if got == "allowed" || got == "refused" {
			var d Decision
			if err := r.decision(tc.limits, call.res, &d); err != nil {
				t.Fatalf("check %d: %v", i, err)
			}
			if d.States[0].Remaining != tc.remains {
				t.Errorf("check %d: remaining %d; want %d", i, d.States[0].Remaining, tc.remains)
			}
		}
	}
	// Nothing was written for the refused, missing and failed Checks.
	for _, f := range []string{"w2", "w3"} {
		if n, err := c.HExists(ctx, prefix+"k:test", f).Result(); err != nil || n {
			t.Errorf("%s exists (%v, %v): a Check that was not decided wrote it", f, n, err)
		}
	}
	if typ, _ := c.Type(ctx, prefix+"odd").Result(); typ != "string" {
		t.Errorf("the odd owner is a %s now; want the string left alone", typ)
	}
	used, err := c.HGet(ctx, prefix+"k:test", dayField).Int64()
	if err != nil || used != 5 {
		t.Errorf("seeded quota used %d, %v; want 5", used, err)
	}
}

// TestRedisDecisionAnyAnswer: whatever numbers come back from Redis, decision answers or
// errs, and never panics (the script always sends TATs at or after its now; a broken proxy in
// front of Redis or a foreign script might not).
func TestRedisDecisionAnyAnswer(t *testing.T) {
	r, err := NewRedis(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})) // never dialled
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	limits := []Limit{window("a", 10, time.Second), window("b", 7, time.Minute), quota("q", QuotaMonth, 1000), window("bad", 0, 0)}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() int64 {
		switch rng.IntN(5) {
		case 0:
			return 0
		case 1:
			return -rng.Int64()
		case 2:
			return rng.Int64N(100)
		case 3:
			return time.Now().UnixMicro() + rng.Int64N(1e8) - 5e7
		}
		return rng.Int64()
	}
	for range 20000 {
		vals := make([]int64, 4+2*len(limits))
		for i := range vals {
			vals[i] = pick()
		}
		vals[0] = rng.Int64N(2)
		var d Decision
		if err := r.decision(limits, vals, &d); err != nil {
			t.Fatal(err)
		}
		for _, st := range d.States {
			if st.Remaining < 0 || st.Remaining > max(st.Limit, 0) || st.Reset < 0 {
				t.Fatalf("answer %v: state %+v", vals, st)
			}
		}
	}
}
