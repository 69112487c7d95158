package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// The examples of RFC 8785 (§3.2.2, §3.2.3) and its test data (cyberphone/json-canonicalization,
// testdata/input and testdata/output).
func TestCanonicalizeRFC8785(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			"arrays",
			"[\n  56,\n  {\n    \"d\": true,\n    \"10\": null,\n    \"1\": [ ]\n  }\n]",
			`[56,{"1":[],"10":null,"d":true}]`,
		},
		{
			"french",
			`{"peach": "This sorting order", "péché": "is wrong according to French", "pêche": "but canonicalization MUST", "sin":   "ingnore locale"}`,
			`{"peach":"This sorting order","péché":"is wrong according to French","pêche":"but canonicalization MUST","sin":"ingnore locale"}`,
		},
		{
			"structures",
			`{"1": {"f": {"f": "hi","F": 5} ,"\n": 56.0}, "10": { }, "": "empty", "a": { }, "111": [ { } ], "A": { }}`,
			`{"":"empty","1":{"\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}`,
		},
		{
			"unicode",
			`{"Unnormalized Unicode":"\u1e0d\u0307"}`,
			"{\"Unnormalized Unicode\":\"\u1e0d\u0307\"}",
		},
		{
			"values",
			`{"numbers": [1E30, 4.50, 333333333.33333329, 2e-3, 0.000000000000000000000000001], "escaping": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}`,
			`{"escaping":"€$\u000f\nA'B\"\\\\\"/","literals":[null,true,false],"numbers":[1e+30,4.5,333333333.3333333,0.002,1e-27]}`,
		},
		{
			"weird",
			`{"\u20ac": "Euro Sign", "1": "One", "\u0080": "Control\u007f", "\ud83d\ude02": "Smiley", "\u00f6": "Latin Small Letter O With Diaeresis", "\ufb33": "Hebrew Letter Dalet With Dagesh", "</script>": "Browser Challenge"}`,
			"{\"1\":\"One\",\"</script>\":\"Browser Challenge\",\"\u0080\":\"Control\u007f\",\"\u00f6\":\"Latin Small Letter O With Diaeresis\",\"\u20ac\":\"Euro Sign\",\"\U0001f602\":\"Smiley\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
		{
			"sorting (RFC 8785 §3.2.3)",
			`{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}`,
			"{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"\u00f6\":\"Latin Small Letter O With Diaeresis\",\"\u20ac\":\"Euro Sign\",\"\U0001f600\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonicalize(json.RawMessage(tt.in))
			if err != nil {
				t.Fatalf("Canonicalize(%q): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("Canonicalize(%q) =\n%s\nwant\n%s", tt.in, got, tt.want)
			}
		})
	}
}

// RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript form.
func TestCanonicalizeNumbers(t *testing.T) {
	tests := []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	}
	for _, tt := range tests {
		f := math.Float64frombits(tt.bits)
		got, err := Canonicalize(f)
		if err != nil {
			t.Errorf("Canonicalize(%#016x): %v", tt.bits, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("Canonicalize(%#016x) = %s; want %s", tt.bits, got, tt.want)
		}
	}
}

func TestCanonicalizeValues(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"html characters are not escaped", map[string]string{"a": "<b>&</b>"}, `{"a":"<b>&</b>"}`},
		{"line and paragraph separators are not escaped", "\u2028\u2029", "\"\u2028\u2029\""},
		{"short escapes", "\b\t\n\f\r\"\\", `"\b\t\n\f\r\"\\"`},
		{"other control characters", "\x00\x01\x1f\x7f", "\"\\u0000\\u0001\\u001f\x7f\""},
		{"slash", "a/b", `"a/b"`},
		{"non-ASCII", "é😀", `"é😀"`},
		{"invalid UTF-8", "a\xffb", "\"a\ufffdb\""},
		{"integers", []int64{0, -1, 1 << 53, 1<<53 + 1, math.MaxInt64}, `[0,-1,9007199254740992,9007199254740992,9223372036854776000]`},
		{"floats", []float64{0.1, -0.5, 1e21, 1e20, 1e-6, 1e-7, 123e-20, math.Copysign(0, -1)}, `[0.1,-0.5,1e+21,100000000000000000000,0.000001,1e-7,1.23e-18,0]`},
		{"nil", nil, `null`},
		{"nil map", map[string]any(nil), `null`},
		{"empty map", map[string]any{}, `{}`},
		{"struct field order", struct {
			B int `json:"b"`
			A int `json:"a"`
		}{1, 2}, `{"a":2,"b":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonicalize(tt.in)
			if err != nil {
				t.Fatalf("Canonicalize(%#v): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("Canonicalize(%#v) = %s; want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestCanonicalizeErrors(t *testing.T) {
	for _, in := range []any{
		math.NaN(),
		math.Inf(1),
		json.RawMessage(`1e400`),
		json.RawMessage(`{"a":`),
		make(chan int),
	} {
		if got, err := Canonicalize(in); err == nil {
			t.Errorf("Canonicalize(%#v) = %s; want an error", in, got)
		}
	}
}

// Properties, over random JSON values: the output is valid JSON meaning the same value;
// canonicalizing it again changes nothing; the order of members in the input does not matter;
// numbers survive the trip through their ECMAScript form exactly.
func TestCanonicalizeProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(8785, 2020))
	for i := range 2000 {
		v := randomValue(r, 4)
		in := randomOrderJSON(r, v)
		got, err := Canonicalize(json.RawMessage(in))
		if err != nil {
			t.Fatalf("#%d Canonicalize(%s): %v", i, in, err)
		}
		again, err := Canonicalize(json.RawMessage(got))
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("#%d Canonicalize(%s) = %s, %v; want it unchanged", i, got, again, err)
		}
		other, err := Canonicalize(json.RawMessage(randomOrderJSON(r, v)))
		if err != nil || !bytes.Equal(other, got) {
			t.Fatalf("#%d member order changes the result: %s and %s (%v)", i, got, other, err)
		}
		direct, err := Canonicalize(v)
		if err != nil || !bytes.Equal(direct, got) {
			t.Fatalf("#%d Canonicalize(value) = %s, %v; Canonicalize(JSON) = %s", i, direct, err, got)
		}
		var back any
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("#%d Canonicalize output %s is not JSON: %v", i, got, err)
		}
		if !reflect.DeepEqual(back, v) {
			t.Fatalf("#%d Canonicalize output %s means %#v; want %#v", i, got, back, v)
		}
	}
	for range 100000 {
		f := math.Float64frombits(r.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		s := formatNumber(f)
		back, err := strconv.ParseFloat(s, 64)
		if err != nil || back != f {
			t.Fatalf("formatNumber(%#016x) = %s, which parses as %v (%v)", math.Float64bits(f), s, back, err)
		}
	}
}

// randomValue returns a value as encoding/json decodes into any: nil, bool, float64, string,
// []any or map[string]any.
func randomValue(r *rand.Rand, depth int) any {
	kind := r.IntN(7)
	if depth == 0 {
		kind = r.IntN(4)
	}
	switch kind {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		switch r.IntN(3) {
		case 0:
			return float64(r.IntN(2000) - 1000)
		case 1:
			return r.NormFloat64() * math.Pow(10, float64(r.IntN(60)-30))
		}
		for {
			if f := math.Float64frombits(r.Uint64()); !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	case 3:
		return randomString(r)
	case 4, 5:
		m := make(map[string]any)
		for range r.IntN(6) {
			m[randomString(r)] = randomValue(r, depth-1)
		}
		return m
	}
	a := make([]any, r.IntN(5))
	for i := range a {
		a[i] = randomValue(r, depth-1)
	}
	return a
}

var alphabet = []rune("aAbB01 _-/\\\"<>&\n\t\x00\x1f\x7fé€\u2028\ufb33😀😂\U0010ffff")

func randomString(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(6) {
		b.WriteRune(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// randomOrderJSON writes v as JSON with object members in a random order and numbers and
// strings in varied but equal forms.
func randomOrderJSON(r *rand.Rand, v any) string {
	var b strings.Builder
	var write func(v any)
	write = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			b.WriteString("{ ")
			i := 0
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			for _, k := range keys {
				if i > 0 {
					b.WriteString(" ,\n")
				}
				i++
				write(k)
				b.WriteString(" : ")
				write(v[k])
			}
			b.WriteString("}")
		case []any:
			b.WriteString("[")
			for i, e := range v {
				if i > 0 {
					b.WriteString(", ")
				}
				write(e)
			}
			b.WriteString("]")
		case float64:
			formats := []byte{'e', 'E', 'g', 'f'}
			b.WriteString(strconv.FormatFloat(v, formats[r.IntN(len(formats))], -1, 64))
		case string:
			if r.IntN(2) == 0 {
				b.WriteString(asciiJSON(v))
			} else {
				s, _ := json.Marshal(v)
				b.Write(s)
			}
		default:
			s, _ := json.Marshal(v)
			b.Write(s)
		}
	}
	write(v)
	return b.String()
}

func ExampleCanonicalize() {
	out, _ := Canonicalize(map[string]any{"b": 1.50, "a": "<é>", "c": []any{1e21, 1e-7, nil}})
	fmt.Println(string(out))
	// Output: {"a":"<é>","b":1.5,"c":[1e+21,1e-7,null]}
}

// asciiJSON quotes s as JSON with a \u escape (surrogate pairs above U+FFFF) for every character
// that is not printable ASCII.
func asciiJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteRune(c)
		case c > 0xffff:
			hi, lo := utf16.EncodeRune(c)
			fmt.Fprintf(&b, "\\u%04X\\u%04x", hi, lo)
		default:
			fmt.Fprintf(&b, "\\u%04x", c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
