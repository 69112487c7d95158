package keygate

import "time"

// Effective is a key's effective settings, computed by the rules of SPEC §2 — in this one place
// for every path (admin answers, verify, gateway).
type Effective struct {
	Plan       string
	Scopes     []string
	RateLimits []Window
	Quota      *Quota
	// ConsumerRateLimits and ConsumerQuota are the consumer's own, shared by all its keys, and
	// apply in addition to the key's.
	ConsumerRateLimits []Window
	ConsumerQuota      *Quota
	MaxAge             time.Duration // 0: none
}

// PlanName returns the plan that applies to k: the key's, else its consumer's, else "".
func PlanName(k *Key, c *Consumer) string {
	if k.Plan != "" {
		return k.Plan
	}
	if c != nil {
		return c.Plan
	}
	return ""
}

// EffectiveSettings computes k's effective settings. c is its consumer and p the plan named by
// PlanName(k, c) (nil when none or not found).
func EffectiveSettings(k *Key, c *Consumer, p *Plan) Effective {
	e := Effective{Plan: PlanName(k, c), Scopes: k.Scopes}
	if p != nil {
		e.RateLimits = MergeWindows(p.RateLimits, k.RateLimits)
	} else {
		e.RateLimits = k.RateLimits
	}
	switch {
	case k.Quota != nil:
		e.Quota = &Quota{Limit: k.Quota.Limit, Period: k.Quota.Period}
	case p != nil && p.Quota != nil:
		e.Quota = &Quota{Limit: p.Quota.Limit, Period: p.Quota.Period}
	}
	if c != nil {
		e.ConsumerRateLimits = c.RateLimits
		if c.Quota != nil {
			e.ConsumerQuota = &Quota{Limit: c.Quota.Limit, Period: c.Quota.Period}
		}
	}
	switch {
	case k.MaxAge != nil:
		e.MaxAge = k.MaxAge.D()
	case p != nil && p.MaxAge != nil:
		e.MaxAge = p.MaxAge.D()
	}
	return e
}

// MergeWindows returns base's windows with those of over replacing the ones of the same name and
// adding new ones, in base's order followed by over's new names.
func MergeWindows(base, over []Window) []Window {
	if len(over) == 0 {
		return base
	}
	out := make([]Window, 0, len(base)+len(over))
	for _, b := range base {
		w := b
		for _, o := range over {
			if o.Name == b.Name {
				w = o
				break
			}
		}
		out = append(out, w)
	}
	for _, o := range over {
		found := false
		for _, b := range base {
			if b.Name == o.Name {
				found = true
				break
			}
		}
		if !found {
			out = append(out, o)
		}
	}
	return out
}

// RotationDue reports whether a key created at created with effective max age maxAge is due for
// rotation at now.
func RotationDue(created time.Time, maxAge time.Duration, now time.Time) bool {
	return maxAge > 0 && now.Sub(created) >= maxAge
}

// PeriodBounds returns the start of the calendar period (UTC) containing t and the start of the next.
func PeriodBounds(period string, t time.Time) (start, end time.Time) {
	t = t.UTC()
	if period == PeriodDay {
		start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	}
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}
