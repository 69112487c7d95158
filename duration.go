package keygate

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Day is the length of the "d" unit in durations. keygate's days are always 24 hours.
const Day = 24 * time.Hour

// maxDays bounds durations (about 274 years) well inside time.Duration's range.
const maxDays = 100_000

// ParseDuration parses a Go duration that may also use "d" for days ("90d", "1d12h", "500ms").
// Negative durations are refused: no setting of keygate takes one.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	if s == "" {
		return 0, fmt.Errorf("invalid duration %q", orig)
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", orig)
	}
	var total time.Duration
	for {
		// Find a run of digits followed by 'd' (but not a longer unit) and take it out.
		i := strings.IndexByte(s, 'd')
		if i < 0 {
			break
		}
		j := i
		for j > 0 && (s[j-1] >= '0' && s[j-1] <= '9' || s[j-1] == '.') {
			j--
		}
		if j == i {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}
		if j > 0 && !isUnitEnd(s[j-1]) {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}
		n, err := strconv.ParseFloat(s[j:i], 64)
		if err != nil || n > maxDays {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}
		total += time.Duration(n * float64(Day))
		if total > time.Duration(maxDays)*Day {
			return 0, fmt.Errorf("invalid duration %q: longer than %d days", orig, maxDays)
		}
		s = s[:j] + s[i+1:]
	}
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", orig)
		}
		if d < 0 {
			return 0, fmt.Errorf("invalid duration %q: must not be negative", orig)
		}
		if d > time.Duration(maxDays)*Day-total {
			return 0, fmt.Errorf("invalid duration %q: longer than %d days", orig, maxDays)
		}
		total += d
	}
	return total, nil
}

// isUnitEnd reports whether c can end a unit of a Go duration ("h", "m", "s", "ms", "us", "ns", "µs").
func isUnitEnd(c byte) bool {
	return c == 'h' || c == 'm' || c == 's' || c >= 0x80
}

// FormatDuration formats d the way ParseDuration reads it, using days when d is a whole number of
// days ("90d") and Go's notation otherwise ("1h30m0s").
func FormatDuration(d time.Duration) string {
	if d > 0 && d%Day == 0 {
		return strconv.FormatInt(int64(d/Day), 10) + "d"
	}
	return d.String()
}

// Duration is a time.Duration that reads and writes as a duration string in JSON and YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON accepts only a JSON string, so that a number is a clear error rather than nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string like \"24h\" or \"90d\"")
	}
	return d.UnmarshalText([]byte(s))
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }
