package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Canonicalize returns v in the JSON Canonicalization Scheme of RFC 8785: v is marshalled with
// encoding/json, then written again with object members sorted by the UTF-16 code units of
// their names, no white space, only the escapes RFC 8785 requires, and numbers in ECMAScript's
// Number.prototype.toString form.
//
// As in RFC 8785, every number is an IEEE 754 double: integers beyond ±2^53 lose precision
// (9007199254740993 canonicalizes as 9007199254740992), and a number outside the double range
// is an error. A json.RawMessage or json.Marshaler value is canonicalized as the JSON it holds.
// Invalid UTF-8 in strings becomes U+FFFD, as encoding/json decodes it.
func Canonicalize(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("canonicalize: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("canonicalize: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := writeCanonical(&buf, tree); err != nil {
		return nil, fmt.Errorf("canonicalize: %w", err)
	}
	return buf.Bytes(), nil
}

func writeCanonical(buf *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		buf.WriteString(strconv.FormatBool(v))
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return fmt.Errorf("number %s is not an IEEE 754 double", v)
		}
		buf.WriteString(formatNumber(f))
	case string:
		writeString(buf, v)
	case []any:
		buf.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeCanonical(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]any:
		names := make([]string, 0, len(v))
		for name := range v {
			names = append(names, name)
		}
		slices.SortFunc(names, compareUTF16)
		buf.WriteByte('{')
		for i, name := range names {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeString(buf, name)
			buf.WriteByte(':')
			if err := writeCanonical(buf, v[name]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("unexpected %T", v) // unreachable: the decoder yields only the types above
	}
	return nil
}

// compareUTF16 orders strings by their UTF-16 code units (RFC 8785 §3.2.3), which differs from
// Go's byte (code point) order only for characters above U+FFFF against U+E000..U+FFFF.
func compareUTF16(a, b string) int {
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

// writeString writes s quoted with only the escapes RFC 8785 §3.2.2.2 requires.
func writeString(buf *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	buf.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\b':
			buf.WriteString(`\b`)
		case '\t':
			buf.WriteString(`\t`)
		case '\n':
			buf.WriteString(`\n`)
		case '\f':
			buf.WriteString(`\f`)
		case '\r':
			buf.WriteString(`\r`)
		default:
			if r < 0x20 {
				buf.WriteString(`\u00`)
				buf.WriteByte(hexDigits[r>>4])
				buf.WriteByte(hexDigits[r&0xf])
			} else {
				buf.WriteRune(r)
			}
		}
	}
	buf.WriteByte('"')
}

// formatNumber writes f as ECMAScript's Number::toString (ECMA-262 §6.1.6.1.20) does. Go's
// shortest round-trip digits are the digits ECMAScript requires. f must be finite.
func formatNumber(f float64) string {
	if f == 0 {
		return "0" // also -0
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		panic("audit: formatNumber of a non-finite number") // ParseFloat never returns one without an error
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// "d.ddde±x": digits are the k significant digits s, and f = 0.s × 10^n with n = x+1.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	k, n := len(digits), x+1

	var out string
	switch {
	case k <= n && n <= 21:
		out = digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		out = digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		out = "0." + strings.Repeat("0", -n) + digits
	default:
		expSign := "+"
		if n-1 < 0 {
			expSign = "-"
		}
		out = digits[:1]
		if k > 1 {
			out += "." + digits[1:]
		}
		out += "e" + expSign + strconv.Itoa(abs(n-1))
	}
	return sign + out
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
