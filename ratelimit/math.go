package ratelimit

import (
	"math/bits"
	"time"
)

const day = int64(24 * time.Hour)

// gcra is the arithmetic of one window: the emission interval T = period/limit, kept exact as
// q + r/limit, so that limit×T is exactly period whatever the two numbers are. A theoretical
// arrival time (TAT) is likewise a pair (ns, frac): ns + frac/limit, with 0 <= frac < limit.
// Rounding T instead would cost up to one request per period (3 per second would admit 2 to a
// client that sends its bursts on the second).
type gcra struct{ period, limit, q, r int64 }

// newGCRA returns the arithmetic of limit per period; ok is false for a window Check can only
// refuse (limit < 1 or period <= 0).
func newGCRA(limit, period int64) (g gcra, ok bool) {
	if limit < 1 || period <= 0 {
		return gcra{}, false
	}
	return gcra{period: period, limit: limit, q: period / limit, r: period % limit}, true
}

// add returns the TAT (ns, frac) + n×T, for 0 <= n <= limit.
func (g gcra) add(ns, frac, n int64) (int64, int64) {
	ns += n * g.q
	if g.r == 0 {
		return ns, frac
	}
	hi, lo := bits.Mul64(uint64(n), uint64(g.r))
	lo, carry := bits.Add64(lo, uint64(frac), 0)
	quo, rem := bits.Div64(hi+carry, lo, uint64(g.limit)) // n×r + frac < limit×(limit+1): no overflow
	return ns + int64(quo), int64(rem)
}

// fits reports whether a TAT lies within the burst capacity (one period) of now.
func (g gcra) fits(ns, frac, now int64) bool {
	ahead := ns - now
	return ahead < g.period || (ahead == g.period && frac == 0)
}

// remaining is the number of whole T that fit between a TAT (>= now) and now + period.
func (g gcra) remaining(ns, frac, now int64) int64 {
	free := g.period - (ns - now)
	if free <= 0 {
		return 0
	}
	if g.r == 0 {
		return min(free/g.q, g.limit)
	}
	// floor((free×limit - frac) / period), in 128 bits: free×limit <= period×limit.
	hi, lo := bits.Mul64(uint64(free), uint64(g.limit))
	lo, borrow := bits.Sub64(lo, uint64(frac), 0)
	quo, _ := bits.Div64(hi-borrow, lo, uint64(g.period))
	return min(int64(quo), g.limit)
}

// ceilSince is (ns, frac) - now rounded up to a whole unit.
func ceilSince(ns, frac, now int64) int64 {
	if frac > 0 {
		ns++
	}
	return ns - now
}

// periodBounds returns the calendar UTC period of kind containing now, in unix ns.
func periodBounds(kind Kind, now int64) (start, end int64) {
	if kind == QuotaDay {
		start = floorDiv(now, day) * day
		return start, start + day
	}
	y, m, _ := time.Unix(0, now).UTC().Date()
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).UnixNano(),
		time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
