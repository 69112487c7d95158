package usage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
)

type memStore struct {
	mu       sync.Mutex
	counts   map[string]int64
	lastUsed map[string]time.Time
	fail     bool
}

func (m *memStore) AddUsage(_ context.Context, ds []keygate.UsageDelta) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("database down")
	}
	for _, d := range ds {
		m.counts[d.KeyID+"|"+d.Day.Format("2006-01-02")] += d.Requests
	}
	return nil
}

func (m *memStore) TouchKeys(_ context.Context, lu map[string]time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, t := range lu {
		m.lastUsed[k] = t
	}
	return nil
}

func TestRecorderBatchesAndNeverLoses(t *testing.T) {
	st := &memStore{counts: map[string]int64{}, lastUsed: map[string]time.Time{}}
	now := time.Date(2026, 11, 29, 23, 59, 59, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := New(st, Options{Now: clock, Interval: time.Hour})
	for i := 0; i < 100; i++ {
		r.Add("key_a", "con_1", "key_a", 1)
	}
	mu.Lock()
	now = now.Add(2 * time.Second) // next UTC day
	mu.Unlock()
	r.Add("key_a", "con_1", "key_a", 5)

	st.fail = true
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("Flush with the database down succeeded")
	}
	st.fail = false
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"key_a|2026-11-29": 100, "key_a|2026-11-30": 5}
	for k, v := range want {
		if st.counts[k] != v {
			t.Errorf("counts[%s] = %d; want %d (all: %v)", k, st.counts[k], v, st.counts)
		}
	}
	if !st.lastUsed["key_a"].Equal(now) {
		t.Errorf("last used = %v; want %v", st.lastUsed["key_a"], now)
	}
}

func TestLastUsedWrittenOncePerMinute(t *testing.T) {
	st := &memStore{counts: map[string]int64{}, lastUsed: map[string]time.Time{}}
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := New(st, Options{Now: clock, Interval: time.Hour})
	defer r.Close(context.Background())
	first := now
	for i := 0; i < 30; i++ { // 30 flushes, 2s apart
		r.Add("key_a", "con_1", "key_a", 1)
		r.Flush(context.Background())
		mu.Lock()
		now = now.Add(2 * time.Second)
		mu.Unlock()
	}
	if got := st.lastUsed["key_a"]; !got.Equal(first) {
		t.Fatalf("last_used_at = %v; want it written once in the first minute (%v)", got, first)
	}
	r.Add("key_a", "con_1", "key_a", 1) // a minute after the first write
	r.Flush(context.Background())
	if got := st.lastUsed["key_a"]; !got.Equal(now) {
		t.Fatalf("last_used_at after a minute = %v; want %v", got, now)
	}
	if st.counts["key_a|2026-11-29"] != 31 {
		t.Fatalf("usage = %d; want every request counted", st.counts["key_a|2026-11-29"])
	}
}

type eventLog struct {
	mu  sync.Mutex
	got []string
}

func (l *eventLog) Emit(_ context.Context, typ string, data map[string]any) {
	l.mu.Lock()
	l.got = append(l.got, typ+":"+data["limit_name"].(string))
	l.mu.Unlock()
}

func (l *eventLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

func TestQuotaWatcherOncePerPeriod(t *testing.T) {
	ev := &eventLog{}
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	w := NewQuotaWatcher(ev, func() time.Time { return now }, nil)
	e := &verify.Entry{Key: &keygate.Key{ID: "key_a"}, ConsumerID: "con_1", Limits: []ratelimit.Limit{
		{Name: "burst", Key: "k:a:burst", Kind: ratelimit.Window, Limit: 5, Period: time.Second},
		{Name: "quota", Key: "k:a:quota", Kind: ratelimit.QuotaMonth, Limit: 10},
	}}
	decide := func(allowed bool, remaining int64) *ratelimit.Decision {
		d := &ratelimit.Decision{Allowed: allowed, Denied: -1, States: []ratelimit.State{
			{Name: "burst", Kind: ratelimit.Window, Limit: 5, Remaining: 4},
			{Name: "quota", Kind: ratelimit.QuotaMonth, Limit: 10, Remaining: remaining}}}
		if !allowed {
			d.Denied = 1
		}
		return d
	}
	for _, rem := range []int64{5, 3, 2, 1, 0} { // used 5,7,8,9,10: warning at 8 only once
		w.Observe(e, decide(true, rem))
	}
	w.Observe(e, decide(false, 0))
	w.Observe(e, decide(false, 0))
	now = now.AddDate(0, 1, 0) // next month: both may fire again
	w.Observe(e, decide(true, 2))
	deadline := time.Now().Add(2 * time.Second)
	for len(ev.list()) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	got := ev.list()
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	if count["quota.warning:quota"] != 2 || count["quota.exceeded:quota"] != 1 || len(got) != 3 {
		t.Fatalf("events = %v; want one warning and one exceeded this month, one warning next month", got)
	}
}
