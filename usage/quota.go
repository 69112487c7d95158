package usage

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
)

// QuotaWatcher turns limiter decisions into quota.warning (at 80% of a quota, once per period)
// and quota.exceeded (once per period) events (SPEC §6).
type QuotaWatcher struct {
	events keygate.Events
	now    func() time.Time
	// claim, when set, makes "once per period" hold across a cluster: it returns true for the
	// first caller of a name on any node (Redis SET NX). Without it, once per node.
	claim func(ctx context.Context, name string, ttl time.Duration) bool

	mu   sync.Mutex
	sent map[string]time.Time // event + limit key + period start → period end
}

// NewQuotaWatcher returns a watcher that emits to events. claim may be nil.
func NewQuotaWatcher(events keygate.Events, now func() time.Time, claim func(ctx context.Context, name string, ttl time.Duration) bool) *QuotaWatcher {
	if now == nil {
		now = time.Now
	}
	return &QuotaWatcher{events: events, now: now, claim: claim, sent: map[string]time.Time{}}
}

// Observe looks at one decision; it is called on the hot path and does work only for quotas at
// or above 80%.
func (w *QuotaWatcher) Observe(e *verify.Entry, d *ratelimit.Decision) {
	for i := range d.States {
		st := &d.States[i]
		if st.Kind == ratelimit.Window || st.Limit <= 0 || i >= len(e.Limits) {
			continue
		}
		used := st.Limit - st.Remaining
		switch {
		case !d.Allowed && d.Denied == i:
			w.emit(keygate.EventQuotaExceeded, e, &e.Limits[i], st, used)
		case d.Allowed && used*5 >= st.Limit*4:
			w.emit(keygate.EventQuotaWarning, e, &e.Limits[i], st, used)
		}
	}
}

func (w *QuotaWatcher) emit(event string, e *verify.Entry, l *ratelimit.Limit, st *ratelimit.State, used int64) {
	period := keygate.PeriodMonth
	if l.Kind == ratelimit.QuotaDay {
		period = keygate.PeriodDay
	}
	now := w.now()
	start, end := keygate.PeriodBounds(period, now)
	name := event + "|" + l.Key + "|" + strconv.FormatInt(start.Unix(), 10)
	w.mu.Lock()
	if _, done := w.sent[name]; done {
		w.mu.Unlock()
		return
	}
	if len(w.sent) > 10000 {
		for k, until := range w.sent {
			if now.After(until) {
				delete(w.sent, k)
			}
		}
	}
	w.sent[name] = end
	w.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if w.claim != nil && !w.claim(ctx, "keygate:quota-event:"+name, end.Sub(now)+time.Hour) {
			return
		}
		w.events.Emit(ctx, event, map[string]any{
			"key_id": e.Key.ID, "consumer_id": e.ConsumerID, "limit_name": l.Name,
			"limit": st.Limit, "used": used, "period": period, "resets_at": end,
		})
	}()
}
