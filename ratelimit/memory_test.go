package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func newTestMemory(t testing.TB, clock *fakeClock, opts ...Option) *Memory {
	t.Helper()
	m := NewMemory(append([]Option{WithNow(clock.Now), WithSweepInterval(0)}, opts...)...)
	t.Cleanup(func() { m.Close() })
	return m
}

func window(name string, limit int64, period time.Duration) Limit {
	return Limit{Name: name, Key: "k:test:" + name, Kind: Window, Limit: limit, Period: period}
}

func quota(name string, kind Kind, limit int64) Limit {
	return Limit{Name: name, Key: "k:test:" + name, Kind: kind, Limit: limit}
}

func check(t testing.TB, l Limiter, limits []Limit, cost int64) Decision {
	t.Helper()
	var d Decision
	if err := l.Check(context.Background(), limits, cost, &d); err != nil {
		t.Fatalf("Check(%v, %d) = %v", limits, cost, err)
	}
	return d
}

// TestWindowAccuracy drives one window with more demand than it allows, at several request
// spacings, and checks SPEC §5's bounds on every run of D seconds (endpoints included).
func TestWindowAccuracy(t *testing.T) {
	tests := []struct {
		limit  int64
		period time.Duration
		step   time.Duration // time between bursts of demand
		run    time.Duration
	}{
		{5, time.Second, 10 * time.Millisecond, 20 * time.Second},
		{5, time.Second, 200 * time.Millisecond, 20 * time.Second}, // step == emission interval
		{3, time.Second, 7 * time.Millisecond, 20 * time.Second},   // period not divisible by limit
		{1, time.Second, time.Second, 30 * time.Second},            // demand exactly on the edges
		{2, time.Second, 499 * time.Millisecond, 30 * time.Second}, // just faster than the emission interval
		{100, time.Minute, 50 * time.Millisecond, 10 * time.Minute},
		{1000, time.Hour, time.Second, 5 * time.Hour},
		{7, 3 * time.Second, 3 * time.Second, time.Minute}, // demand arrives on the window edges
		{3, time.Second, time.Second, time.Minute},         // T is not a whole number of ns
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d per %v every %v", tt.limit, tt.period, tt.step), func(t *testing.T) {
			clock := newFakeClock(t0)
			m := newTestMemory(t, clock)
			limits := []Limit{window("w", tt.limit, tt.period)}
			var allowed []time.Duration // offsets from t0
			for at := time.Duration(0); at <= tt.run; at += tt.step {
				for { // excess demand: ask until refused
					d := check(t, m, limits, 1)
					if !d.Allowed {
						if d.RetryAfter <= 0 {
							t.Fatalf("refused with RetryAfter %v", d.RetryAfter)
						}
						break
					}
					allowed = append(allowed, at)
				}
				clock.Advance(tt.step)
			}
			for _, spanMul := range []float64{0.5, 1, 3, 10} {
				span := time.Duration(spanMul * float64(tt.period))
				if span > tt.run {
					continue
				}
				upper := float64(tt.limit) * (1 + span.Seconds()/tt.period.Seconds())
				for i := range allowed { // every run [allowed[i], allowed[i]+span]
					n := 0
					for j := i; j < len(allowed) && allowed[j] <= allowed[i]+span; j++ {
						n++
					}
					if float64(n) > upper {
						t.Fatalf("%d allowed in [%v, %v]; want <= %.1f", n, allowed[i], allowed[i]+span, upper)
					}
				}
				// Lower bound on the run [0, span] of a fresh key under excess demand.
				if span >= tt.period {
					lower := 0.9 * float64(tt.limit) * span.Seconds() / tt.period.Seconds()
					n := 0
					for _, a := range allowed {
						if a <= span {
							n++
						}
					}
					if float64(n) < lower {
						t.Fatalf("%d allowed in [0, %v]; want >= %.1f", n, span, lower)
					}
				}
			}
		})
	}
}

// TestWindowEdges checks the exact instants a GCRA window admits at.
func TestWindowEdges(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	limits := []Limit{window("burst", 5, time.Second)} // T = 200ms
	for i := range 5 {
		if d := check(t, m, limits, 1); !d.Allowed || d.States[0].Remaining != int64(4-i) {
			t.Fatalf("request %d: allowed %v remaining %d; want true %d", i, d.Allowed, d.States[0].Remaining, 4-i)
		}
	}
	d := check(t, m, limits, 1)
	if d.Allowed || d.RetryAfter != 200*time.Millisecond || d.States[0].Reset != time.Second {
		t.Fatalf("6th: allowed %v RetryAfter %v Reset %v; want false 200ms 1s", d.Allowed, d.RetryAfter, d.States[0].Reset)
	}
	clock.Advance(200*time.Millisecond - 1)
	if d := check(t, m, limits, 1); d.Allowed || d.RetryAfter != 1 {
		t.Fatalf("1ns early: allowed %v RetryAfter %v; want false 1ns", d.Allowed, d.RetryAfter)
	}
	clock.Advance(1)
	if d := check(t, m, limits, 1); !d.Allowed || d.States[0].Remaining != 0 {
		t.Fatalf("on the edge: allowed %v remaining %d; want true 0", d.Allowed, d.States[0].Remaining)
	}
	if d := check(t, m, limits, 1); d.Allowed {
		t.Fatal("right after the edge: allowed; want refused")
	}
	clock.Advance(time.Second)
	if d := check(t, m, limits, 1); !d.Allowed || d.States[0].Remaining != 4 || d.States[0].Reset != 200*time.Millisecond {
		t.Fatalf("after a full period: %+v; want allowed, remaining 4, reset 200ms", d)
	}
}

func TestAllOrNothing(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	burst, minute, q := window("burst", 5, time.Second), window("minute", 2, time.Minute), quota("quota", QuotaDay, 3)
	limits := []Limit{burst, minute, q}

	for range 2 {
		if d := check(t, m, limits, 1); !d.Allowed {
			t.Fatalf("refused early: %+v", d)
		}
	}
	for range 10 { // refused by minute: nothing counts anywhere
		d := check(t, m, limits, 1)
		if d.Allowed || d.Denied != 1 || d.States[1].Name != "minute" {
			t.Fatalf("third: allowed %v denied %d; want false 1", d.Allowed, d.Denied)
		}
	}
	d := check(t, m, []Limit{burst, q}, 0)
	if d.States[0].Remaining != 3 || d.States[1].Remaining != 1 {
		t.Fatalf("after refusals: burst remaining %d quota remaining %d; want 3 1", d.States[0].Remaining, d.States[1].Remaining)
	}

	// The quota refuses: the windows are untouched.
	clock.Advance(time.Minute)
	if d := check(t, m, limits, 1); !d.Allowed || d.States[2].Remaining != 0 {
		t.Fatalf("last of the quota: %+v", d)
	}
	clock.Advance(time.Minute)
	for range 5 {
		d := check(t, m, limits, 1)
		if d.Allowed || d.Denied != 2 || d.RetryAfter != 12*time.Hour-2*time.Minute {
			t.Fatalf("over quota: allowed %v denied %d RetryAfter %v; want false 2 %v", d.Allowed, d.Denied, d.RetryAfter, 12*time.Hour-2*time.Minute)
		}
		if d.States[0].Remaining != 5 || d.States[1].Remaining != 2 {
			t.Fatalf("over quota: windows consumed: %+v", d.States)
		}
	}
}

// TestDeniedLongestWait: of several refusing limits, Denied is the one that frees last.
func TestDeniedLongestWait(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	limits := []Limit{window("burst", 1, time.Second), window("minute", 1, time.Minute)}
	check(t, m, limits, 1)
	d := check(t, m, limits, 1)
	if d.Allowed || d.Denied != 1 || d.RetryAfter != time.Minute {
		t.Fatalf("Denied %d RetryAfter %v; want 1 1m", d.Denied, d.RetryAfter)
	}
}

func TestPeek(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	limits := []Limit{window("burst", 2, time.Second), quota("quota", QuotaMonth, 10)}
	for range 5 {
		d := check(t, m, limits, 0)
		if !d.Allowed || d.States[0].Remaining != 2 || d.States[1].Remaining != 10 || d.States[0].Reset != 0 {
			t.Fatalf("peek on fresh limits: %+v", d)
		}
	}
	check(t, m, limits, 2)
	d := check(t, m, limits, 0)
	if d.Allowed || d.Denied != 0 || d.RetryAfter != 500*time.Millisecond || d.States[1].Remaining != 8 {
		t.Fatalf("peek on a full window: %+v; want refused by 0 after 500ms, quota remaining 8", d)
	}
}

func TestCost(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	limits := []Limit{window("w", 10, 10*time.Second), quota("q", QuotaDay, 100)}
	tests := []struct {
		cost          int64
		allowed       bool
		wRem, qRem    int64
		retry         time.Duration
		advanceBefore time.Duration
	}{
		{cost: 4, allowed: true, wRem: 6, qRem: 96},
		{cost: 6, allowed: true, wRem: 0, qRem: 90},
		{cost: 3, allowed: false, wRem: 0, qRem: 90, retry: 3 * time.Second},
		{cost: 3, allowed: true, wRem: 0, qRem: 87, advanceBefore: 3 * time.Second},
		{cost: 11, allowed: false, wRem: 0, qRem: 87, retry: 10 * time.Second}, // above the limit: never
	}
	for i, tt := range tests {
		clock.Advance(tt.advanceBefore)
		d := check(t, m, limits, tt.cost)
		if d.Allowed != tt.allowed || d.States[0].Remaining != tt.wRem || d.States[1].Remaining != tt.qRem || d.RetryAfter != tt.retry {
			t.Errorf("%d: Check(cost %d) = allowed %v remaining %d/%d retry %v; want %v %d/%d %v", i, tt.cost,
				d.Allowed, d.States[0].Remaining, d.States[1].Remaining, d.RetryAfter, tt.allowed, tt.wRem, tt.qRem, tt.retry)
		}
	}
}

func TestQuotaCalendar(t *testing.T) {
	tests := []struct {
		kind   Kind
		start  time.Time
		window time.Duration
		reset  time.Duration
	}{
		{QuotaDay, time.Date(2026, 11, 29, 23, 59, 59, 0, time.UTC), 24 * time.Hour, time.Second},
		{QuotaMonth, time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC), 30 * 24 * time.Hour, time.Hour},
		{QuotaMonth, time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), 29 * 24 * time.Hour, 12 * time.Hour},
		{QuotaMonth, time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC), 31 * 24 * time.Hour, time.Minute},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v %v", tt.kind, tt.start), func(t *testing.T) {
			clock := newFakeClock(tt.start)
			m := newTestMemory(t, clock)
			limits := []Limit{quota("q", tt.kind, 2)}
			check(t, m, limits, 1)
			d := check(t, m, limits, 1)
			if st := d.States[0]; st.Window != tt.window || st.Reset != tt.reset || st.Remaining != 0 {
				t.Fatalf("state %+v; want window %v reset %v remaining 0", st, tt.window, tt.reset)
			}
			if d := check(t, m, limits, 1); d.Allowed || d.RetryAfter != tt.reset {
				t.Fatalf("over quota: allowed %v retry %v; want false %v", d.Allowed, d.RetryAfter, tt.reset)
			}
			clock.Advance(tt.reset)
			if d := check(t, m, limits, 1); !d.Allowed || d.States[0].Remaining != 1 {
				t.Fatalf("new period: %+v; want allowed with 1 remaining", d)
			}
		})
	}
}

func TestMemorySeed(t *testing.T) {
	clock := newFakeClock(t0)
	var calls atomic.Int32
	seed := func(ctx context.Context, key string, kind Kind, start time.Time) (int64, error) {
		calls.Add(1)
		if key != "k:test:q" || kind != QuotaMonth || !start.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("Seed(%q, %v, %v); want k:test:q month 2026-11-01", key, kind, start)
		}
		return 8, nil
	}
	m := newTestMemory(t, clock, WithSeed(seed))
	limits := []Limit{window("w", 100, time.Second), quota("q", QuotaMonth, 10)}
	for i, want := range []bool{true, true, false} {
		if d := check(t, m, limits, 1); d.Allowed != want {
			t.Fatalf("request %d: allowed %v; want %v", i, d.Allowed, want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("Seed called %d times; want 1", n)
	}
}

func TestSweep(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	check(t, m, []Limit{window("w", 10, time.Second), quota("q", QuotaDay, 10)}, 1)
	if n := m.sweep(clock.Now().UnixNano()); n != 0 {
		t.Fatalf("sweep of busy entries removed %d", n)
	}
	clock.Advance(100 * time.Millisecond)
	if n := m.sweep(clock.Now().UnixNano()); n != 1 || m.size() != 1 {
		t.Fatalf("sweep after the window refilled removed %d, left %d; want 1, 1 (the quota stays)", n, m.size())
	}
	clock.Advance(12 * time.Hour)
	if n := m.sweep(clock.Now().UnixNano()); n != 1 || m.size() != 0 {
		t.Fatalf("sweep after the day removed %d, left %d; want 1, 0", n, m.size())
	}
}

func TestSweeperStops(t *testing.T) {
	m := NewMemory(WithSweepInterval(time.Millisecond))
	check(t, m, []Limit{window("w", 10, time.Nanosecond*10)}, 1)
	time.Sleep(5 * time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m.Close() // twice is fine
}

func TestInvalidLimitsRefuse(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	for _, l := range []Limit{window("zero", 0, time.Second), window("noperiod", 5, 0), quota("q", QuotaDay, 0)} {
		if err := l.Validate(); err == nil {
			t.Errorf("%+v.Validate() = nil; want an error", l)
		}
		if d := check(t, m, []Limit{l}, 1); d.Allowed || d.RetryAfter <= 0 {
			t.Errorf("Check(%+v) = %+v; want refused with a RetryAfter", l, d)
		}
	}
}

// TestMemoryConcurrent: 50 clients at once. The quota is exact; windows stay within bounds.
func TestMemoryConcurrent(t *testing.T) {
	m := NewMemory()
	defer m.Close()
	t.Run("quota", func(t *testing.T) {
		limits := []Limit{
			{Name: "burst", Key: "k:conc:burst", Kind: Window, Limit: 1 << 30, Period: time.Second},
			{Name: "quota", Key: "k:conc:quota", Kind: QuotaMonth, Limit: 1000},
			{Name: "consumer-quota", Key: "c:conc:quota", Kind: QuotaDay, Limit: 1500},
		}
		allowed := hammer(t, m, limits, 50, 100, 0)
		if allowed != 1000 {
			t.Fatalf("%d allowed by a quota of 1000", allowed)
		}
		d := check(t, m, limits, 0)
		if d.States[2].Remaining != 500 {
			t.Fatalf("consumer quota remaining %d; want 500 (refusals must not count)", d.States[2].Remaining)
		}
	})
	t.Run("window", func(t *testing.T) {
		limits := []Limit{{Name: "w", Key: "k:conc2:w", Kind: Window, Limit: 100, Period: 100 * time.Millisecond}}
		start := time.Now()
		allowed := hammer(t, m, limits, 50, 0, 500*time.Millisecond)
		checkWindowBounds(t, allowed, 100, 100*time.Millisecond, time.Since(start))
	})
}

// hammer runs clients goroutines that each call Check n times (or, with n 0, for dur) and
// returns how many were allowed.
func hammer(t testing.TB, l Limiter, limits []Limit, clients, n int, dur time.Duration) int64 {
	var allowed atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(dur)
	for range clients {
		wg.Go(func() {
			d := &Decision{}
			for i := 0; n == 0 || i < n; i++ {
				if n == 0 && time.Now().After(deadline) {
					return
				}
				if err := l.Check(context.Background(), limits, 1, d); err != nil {
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
	return allowed.Load()
}

func checkWindowBounds(t testing.TB, allowed, limit int64, period, run time.Duration) {
	t.Helper()
	upper := float64(limit) * (1 + run.Seconds()/period.Seconds())
	lower := 0.9 * float64(limit) * run.Seconds() / period.Seconds()
	if float64(allowed) > upper || float64(allowed) < lower {
		t.Fatalf("%d allowed in %v by %d per %v; want within [%.0f, %.0f]", allowed, run, limit, period, lower, upper)
	}
}

func TestManyLimits(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	var limits []Limit
	for i := range 12 { // more than maxStack, over several owners
		limits = append(limits, Limit{Name: fmt.Sprint(i), Key: fmt.Sprintf("o%d:w%d", i%5, i), Kind: Window, Limit: int64(i + 1), Period: time.Minute})
	}
	d := check(t, m, limits, 1)
	if !d.Allowed || len(d.States) != 12 || d.States[11].Remaining != 11 {
		t.Fatalf("first: %+v", d)
	}
	d = check(t, m, limits, 1)
	if d.Allowed || d.Denied != 0 || d.States[11].Remaining != 11 {
		t.Fatalf("second: allowed %v denied %d remaining of the last %d; want false 0 11", d.Allowed, d.Denied, d.States[11].Remaining)
	}
}

// TestLimitChanges: a key whose limit, period or kind changes (a plan edit) goes on sensibly.
func TestLimitChanges(t *testing.T) {
	clock := newFakeClock(t0)
	m := newTestMemory(t, clock)
	l := Limit{Name: "x", Key: "k:1:x", Kind: Window, Limit: 3, Period: time.Second}
	check(t, m, []Limit{l}, 3)
	l.Limit = 6 // the window is used up for its period (the TAT is time), and refills twice as fast
	if d := check(t, m, []Limit{l}, 0); d.States[0].Remaining != 0 {
		t.Fatalf("after raising the limit: remaining %d; want 0", d.States[0].Remaining)
	}
	clock.Advance(500 * time.Millisecond)
	if d := check(t, m, []Limit{l}, 0); d.States[0].Remaining != 3 {
		t.Fatalf("500ms after raising the limit: remaining %d; want 3", d.States[0].Remaining)
	}
	l.Kind = QuotaDay
	if d := check(t, m, []Limit{l}, 1); !d.Allowed || d.States[0].Remaining != 5 || d.States[0].Window != 24*time.Hour {
		t.Fatalf("as a quota: %+v", d)
	}
	l.Kind = 9
	if d := check(t, m, []Limit{l}, 1); d.Allowed {
		t.Fatalf("unknown kind: allowed")
	}
}

// TestMemoryCheckAllocs guards the hot path: a reused Decision, no allocation.
func TestMemoryCheckAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	m := NewMemory()
	defer m.Close()
	limits := benchLimits("allocs")
	d := &Decision{}
	check(t, m, limits, 1)
	if n := testing.AllocsPerRun(1000, func() { m.Check(context.Background(), limits, 1, d) }); n != 0 {
		t.Fatalf("Check allocates %v times; want 0", n)
	}
}
