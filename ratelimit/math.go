package ratelimit

import "time"

const day = int64(24 * time.Hour)

// emission returns the GCRA emission interval T (the time one unit of the limit takes to free)
// and the burst capacity limit×T, in the unit of period (ns here, µs in Redis). T is rounded up,
// so limit×T >= period: the limiter errs on the strict side and never exceeds limit per period.
// ok is false for a limit Check can only refuse (Limit < 1 or Period <= 0).
func emission(limit, period int64) (t, capacity int64, ok bool) {
	if limit < 1 || period <= 0 {
		return 0, 0, false
	}
	t = (period + limit - 1) / limit
	return t, limit * t, true
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
