package ratelimit

import (
	"context"
	"strconv"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// model is a reference limiter written the plain way: each window a leaky bucket whose level
// (in ns×limit, so it stays exact) drains by limit per ns and fills by period per request, each
// quota a count per calendar period, found with time.Date.
type model struct {
	now    time.Time
	levels map[string]int64 // window key -> level at last
	last   map[string]time.Time
	used   map[string]int64 // quota key + period start -> count
}

func (m *model) level(l Limit) int64 {
	lv := m.levels[l.Key]
	drained := int64(m.now.Sub(m.last[l.Key])) * l.Limit
	if m.last[l.Key].IsZero() || drained >= lv {
		return 0
	}
	return lv - drained
}

func (m *model) period(l Limit) (start, end time.Time) {
	y, mo, d := m.now.Date()
	if l.Kind == QuotaDay {
		start = time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	}
	start = time.Date(y, mo, 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func (m *model) check(limits []Limit, cost int64) Decision {
	need := max(cost, 1)
	d := Decision{Allowed: true, Denied: -1}
	for i, l := range limits {
		var retry time.Duration
		ok := true
		if l.Kind == Window {
			p := int64(l.Period)
			lv := m.level(l)
			if need > l.Limit {
				ok, retry = false, l.Period
			} else if over := lv + need*p - l.Limit*p; over > 0 {
				ok, retry = false, time.Duration(ceilDiv(over, l.Limit))
			}
		} else {
			start, end := m.period(l)
			if m.used[l.Key+start.String()]+need > l.Limit {
				ok, retry = false, end.Sub(m.now)
			}
		}
		if !ok {
			if d.Allowed || retry > d.RetryAfter {
				d.Denied, d.RetryAfter = i, retry
			}
			d.Allowed = false
		}
	}
	for _, l := range limits {
		st := State{Name: l.Name, Kind: l.Kind, Limit: l.Limit}
		if l.Kind == Window {
			p := int64(l.Period)
			lv := m.level(l)
			if d.Allowed && cost > 0 {
				lv += cost * p
				m.levels[l.Key], m.last[l.Key] = lv, m.now
			}
			st.Remaining = (l.Limit*p - lv) / p
			st.Reset = time.Duration(ceilDiv(lv, l.Limit))
			st.Window = l.Period
		} else {
			start, end := m.period(l)
			if d.Allowed && cost > 0 {
				m.used[l.Key+start.String()] += cost
			}
			st.Remaining = max(l.Limit-m.used[l.Key+start.String()], 0)
			st.Reset, st.Window = end.Sub(m.now), end.Sub(start)
		}
		d.States = append(d.States, st)
	}
	return d
}

// TestMemoryAgainstModel: any sequence of checks and clock moves gets the model's answers.
func TestMemoryAgainstModel(t *testing.T) {
	pool := []Limit{
		{Name: "burst", Key: "k:1:burst", Kind: Window, Limit: 3, Period: time.Second}, // T not whole
		{Name: "minute", Key: "k:1:minute", Kind: Window, Limit: 5, Period: 7 * time.Second},
		{Name: "half", Key: "c:1:half", Kind: Window, Limit: 2, Period: 500 * time.Millisecond},
		{Name: "day", Key: "k:1:day", Kind: QuotaDay, Limit: 20},
		{Name: "month", Key: "c:1:month", Kind: QuotaMonth, Limit: 60},
	}
	rapid.Check(t, func(t *rapid.T) {
		start := time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC).Add(time.Duration(rapid.Int64Range(0, int64(2*time.Minute)).Draw(t, "start")))
		clock := newFakeClock(start)
		mem := NewMemory(WithNow(clock.Now), WithSweepInterval(0), WithShards(rapid.SampledFrom([]int{1, 4}).Draw(t, "shards")))
		defer mem.Close()
		ref := &model{now: start, levels: map[string]int64{}, last: map[string]time.Time{}, used: map[string]int64{}}
		d := &Decision{}
		t.Repeat(map[string]func(*rapid.T){
			"advance": func(t *rapid.T) {
				step := rapid.OneOf(
					rapid.Int64Range(0, int64(2*time.Second)),
					rapid.SampledFrom([]int64{1, int64(time.Second / 3), int64(200 * time.Millisecond), int64(time.Second), int64(7 * time.Second)}),
				).Draw(t, "step")
				clock.Advance(time.Duration(step))
				ref.now = ref.now.Add(time.Duration(step))
			},
			"check": func(t *rapid.T) {
				var limits []Limit
				for i, l := range pool {
					if rapid.Bool().Draw(t, pool[i].Name) {
						limits = append(limits, l)
					}
				}
				if len(limits) == 0 {
					return
				}
				cost := rapid.Int64Range(0, 4).Draw(t, "cost")
				if err := mem.Check(context.Background(), limits, cost, d); err != nil {
					t.Fatal(err)
				}
				want := ref.check(limits, cost)
				if d.Allowed != want.Allowed || d.Denied != want.Denied || d.RetryAfter != want.RetryAfter {
					t.Fatalf("Check(%v, cost %d) at %v = allowed %v denied %d retry %v; model says %v %d %v",
						names(limits), cost, clock.Now(), d.Allowed, d.Denied, d.RetryAfter, want.Allowed, want.Denied, want.RetryAfter)
				}
				for i := range want.States {
					if d.States[i] != want.States[i] {
						t.Fatalf("Check(%v, cost %d) at %v: state %d = %+v; model says %+v",
							names(limits), cost, clock.Now(), i, d.States[i], want.States[i])
					}
				}
			},
		})
	})
}

func names(limits []Limit) []string {
	var s []string
	for _, l := range limits {
		s = append(s, l.Name)
	}
	return s
}

// TestRedisAgainstMemory: the Lua script and the Go code decide alike. The windows refill so
// slowly (T >= 8 min) that Redis's moving clock does not matter within a run; their periods are
// not multiples of their limits, so the exact-T arithmetic is exercised.
func TestRedisAgainstMemory(t *testing.T) {
	c, prefix := sharedClient(t, nil)
	pool := []Limit{
		{Name: "a", Key: "k:1:a", Kind: Window, Limit: 7, Period: time.Hour},
		{Name: "b", Key: "k:1:b", Kind: Window, Limit: 3, Period: 25 * time.Minute},
		{Name: "c", Key: "c:1:c", Kind: Window, Limit: 1, Period: time.Hour},
		{Name: "day", Key: "k:1:day", Kind: QuotaDay, Limit: 12},
		{Name: "month", Key: "c:1:month", Kind: QuotaMonth, Limit: 9},
	}
	run := 0
	rapid.Check(t, func(t *rapid.T) {
		run++
		r, err := NewRedis(c, WithPrefix(prefix+strconv.Itoa(run)+":"), WithTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		mem := NewMemory(WithSweepInterval(0))
		defer mem.Close()
		var dr, dm Decision
		for range rapid.IntRange(1, 30).Draw(t, "checks") {
			var limits []Limit
			for i := range pool {
				if rapid.Bool().Draw(t, pool[i].Name) {
					limits = append(limits, pool[i])
				}
			}
			if len(limits) == 0 {
				continue
			}
			cost := rapid.Int64Range(0, 4).Draw(t, "cost")
			if err := r.Check(context.Background(), limits, cost, &dr); err != nil {
				t.Fatal(err)
			}
			mem.Check(context.Background(), limits, cost, &dm)
			if dr.Allowed != dm.Allowed || dr.Denied != dm.Denied {
				t.Fatalf("Check(%v, %d): redis allowed %v denied %d; memory %v %d", names(limits), cost, dr.Allowed, dr.Denied, dm.Allowed, dm.Denied)
			}
			for i := range dm.States {
				if dr.States[i].Remaining != dm.States[i].Remaining || dr.States[i].Window != dm.States[i].Window {
					t.Fatalf("Check(%v, %d): state %d: redis %+v; memory %+v", names(limits), cost, i, dr.States[i], dm.States[i])
				}
			}
		}
	})
}
