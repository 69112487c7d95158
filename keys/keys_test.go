package keys

import (
	"hash/crc32"
	"math/big"
	"strings"
	"testing"
)

func TestGenerateFormat(t *testing.T) {
	tests := []struct {
		prefix, kind, env, head string
	}{
		{"kg", "sk", "live", "kg_sk_live_"},
		{"kg", "pk", "test", "kg_pk_test_"},
		{"acme9", "sk", "test", "acme9_sk_test_"},
	}
	for _, tt := range tests {
		s, err := Generate(tt.prefix, tt.kind, tt.env)
		if err != nil {
			t.Fatalf("Generate(%q, %q, %q) error %v", tt.prefix, tt.kind, tt.env, err)
		}
		if !strings.HasPrefix(s, tt.head) || len(s) != len(tt.head)+bodyLen {
			t.Fatalf("Generate = %q; want %s + %d body characters", s, tt.head, bodyLen)
		}
		p, err := Parse(s, tt.prefix)
		if err != nil {
			t.Fatalf("Parse(Generate()) = %v", err)
		}
		if p.Kind != tt.kind || p.Env != tt.env || p.Head != tt.head {
			t.Errorf("Parse(%q) = %+v", s, p)
		}
		if got := Start(s, p); got != s[:len(tt.head)+4] {
			t.Errorf("Start = %q", got)
		}
	}
	r, err := GenerateRoot("kg")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := Parse(r, "kg"); err != nil || !p.Root() || p.Env != "" {
		t.Fatalf("Parse(root) = %+v, %v", p, err)
	}
}

// TestChecksumIndependently recomputes the SPEC §2 body by hand: base62 (0-9A-Za-z) big-endian,
// the CRC32 (IEEE) of everything before it, left-padded to 6.
func TestChecksumIndependently(t *testing.T) {
	for i := 0; i < 200; i++ {
		s, _ := Generate("kg", "sk", "live")
		head := s[:len(s)-checksumLen]
		n := new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE([]byte(head))))
		want := n.Text(62) // math/big uses 0-9a-zA-Z: map to 0-9A-Za-z
		want = strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z':
				return r - 'a' + 'A'
			case r >= 'A' && r <= 'Z':
				return r - 'A' + 'a'
			}
			return r
		}, want)
		want = strings.Repeat("0", checksumLen-len(want)) + want
		if got := s[len(s)-checksumLen:]; got != want {
			t.Fatalf("checksum of %q = %q; want %q", s, got, want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := Generate("kg", "sk", "live")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct{ name, s string }{
		{"empty", ""},
		{"prefix only", "kg_"},
		{"other prefix", "xx" + good[2:]},
		{"bad kind", strings.Replace(good, "_sk_", "_xk_", 1)},
		{"bad env", strings.Replace(good, "_live_", "_prod_", 1)},
		{"flipped random char", flip(good, len("kg_sk_live_")+5)},
		{"flipped checksum", flip(good, len(good)-1)},
		{"truncated", good[:len(good)-1]},
		{"extra char", good + "0"},
		{"non-base62", good[:len(good)-10] + "-" + good[len(good)-9:]},
		{"nul byte", good[:20] + "\x00" + good[21:]},
		{"unicode", good[:20] + "é" + good[22:]},
		{"env changed keeps checksum of old", strings.Replace(good, "_live_", "_test_", 1)},
	}
	for _, tt := range tests {
		if _, err := Parse(tt.s, "kg"); err == nil {
			t.Errorf("Parse(%s %q) accepted", tt.name, tt.s)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{{"kg", true}, {"a", true}, {"acme2026", true}, {"", false}, {"KG", false}, {"k_g", false}, {"abcdefghijklmnopq", false}}
	for _, tt := range tests {
		if got := ValidPrefix(tt.s); got != tt.want {
			t.Errorf("ValidPrefix(%q) = %v; want %v", tt.s, got, tt.want)
		}
	}
}

func TestHashAndIDs(t *testing.T) {
	a, _ := Generate("kg", "sk", "live")
	if Hash(a) == Hash(a+"x") {
		t.Fatal("different keys hash alike")
	}
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID("key")
		if len(id) != 4+22 || seen[id] {
			t.Fatalf("NewID = %q (dup %v)", id, seen[id])
		}
		seen[id] = true
	}
}

func BenchmarkParse(b *testing.B) {
	s, _ := Generate("kg", "sk", "live")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Parse(s, "kg"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHash(b *testing.B) {
	s, _ := Generate("kg", "sk", "live")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		Hash(s)
	}
}

func FuzzParse(f *testing.F) {
	g, _ := Generate("kg", "sk", "live")
	f.Add(g)
	f.Add("kg_root_")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s, "kg")
		if err == nil && !strings.HasPrefix(s, p.Head) {
			t.Fatalf("Parse(%q) head %q", s, p.Head)
		}
	})
}
