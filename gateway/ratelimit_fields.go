package gateway

import (
	"math/bits"
	"net/http"
	"strconv"
	"time"

	"github.com/keygate/keygate/ratelimit"
)

// setRateLimitFields sets RateLimit-Policy (every window and quota) and RateLimit (the one item
// closest to refusing) of draft-ietf-httpapi-ratelimit-headers-11 from a decision, formatting
// into buf, which it returns for reuse. Without states it sets nothing.
func setRateLimitFields(h http.Header, d *ratelimit.Decision, buf []byte) []byte {
	if len(d.States) == 0 {
		return buf
	}
	buf = appendPolicy(buf[:0], d.States)
	policy := string(buf)
	buf = appendRateLimit(buf[:0], d.States)
	v := []string{policy, string(buf)}
	h["Ratelimit-Policy"] = v[0:1:1]
	h["Ratelimit"] = v[1:2:2]
	return buf
}

// appendPolicy formats RateLimit-Policy: "burst";q=5;w=1, "minute";q=100;w=60, …
func appendPolicy(b []byte, states []ratelimit.State) []byte {
	for i := range states {
		s := &states[i]
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendSFString(b, s.Name)
		b = append(b, ";q="...)
		b = strconv.AppendInt(b, s.Limit, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, ceilSeconds(s.Window), 10)
	}
	return b
}

// appendRateLimit formats RateLimit with the one item of the lowest remaining/limit (ties: the
// shorter window): "minute";r=57;t=30.
func appendRateLimit(b []byte, states []ratelimit.State) []byte {
	best := 0
	for i := 1; i < len(states); i++ {
		if tighter(&states[i], &states[best]) {
			best = i
		}
	}
	s := &states[best]
	b = appendSFString(b, s.Name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, max(s.Remaining, 0), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(s.Reset), 10)
	return b
}

// tighter reports whether a's remaining share is lower than b's, or equal with a shorter window.
// The ratios are compared by cross-multiplying in 128 bits: limits go up to 10^15.
func tighter(a, b *ratelimit.State) bool {
	ar, br := uint64(max(a.Remaining, 0)), uint64(max(b.Remaining, 0))
	aq, bq := uint64(max(a.Limit, 1)), uint64(max(b.Limit, 1))
	h1, l1 := bits.Mul64(ar, bq)
	h2, l2 := bits.Mul64(br, aq)
	if h1 != h2 {
		return h1 < h2
	}
	if l1 != l2 {
		return l1 < l2
	}
	return a.Window < b.Window
}

// retryAfter formats Retry-After: whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(ceilSeconds(d), 1), 10)
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// appendSFString appends a structured-field string (RFC 9651): quoted, with " and \ escaped;
// characters outside printable ASCII cannot appear in one and are dropped.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c >= 0x20 && c < 0x7f:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
