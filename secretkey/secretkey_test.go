package secretkey

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}

func TestParse(t *testing.T) {
	k32, k48 := seq(32), seq(48)
	tests := []struct {
		name string
		in   string
		want []byte
		err  error
	}{
		{"hex", hex.EncodeToString(k32), k32, nil},
		{"hex upper", strings.ToUpper(hex.EncodeToString(k32)), k32, nil},
		{"hex with newline", hex.EncodeToString(k48) + "\n", k48, nil},
		{"base64 std padded", base64.StdEncoding.EncodeToString(k32), k32, nil},
		{"base64 std raw", base64.RawStdEncoding.EncodeToString(k32), k32, nil},
		{"base64 url padded", base64.URLEncoding.EncodeToString(k32), k32, nil},
		{"base64 url raw", base64.RawURLEncoding.EncodeToString(k32), k32, nil},
		{"base64 spaces", "  " + base64.StdEncoding.EncodeToString(k48) + " ", k48, nil},
		{"empty", "", nil, ErrEncoding},
		{"blank", "   ", nil, ErrEncoding},
		{"not base64", "this is not a key!!", nil, ErrEncoding},
		{"hex too short", hex.EncodeToString(seq(31)), nil, ErrTooShort},
		{"base64 too short", base64.StdEncoding.EncodeToString(seq(16)), nil, ErrTooShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) error = %v; want %v", tt.in, err, tt.err)
			}
			if err != nil {
				if v := strings.TrimSpace(tt.in); v != "" && strings.Contains(err.Error(), v) {
					t.Errorf("Parse(%q) error %q contains the value", tt.in, err)
				}
				return
			}
			if !bytes.Equal(k.b, tt.want) {
				t.Errorf("Parse(%q) = %x; want %x", tt.in, k.b, tt.want)
			}
		})
	}
}

// RFC 5869 test case 3 (no salt, no info); Derive keeps the first 32 bytes.
func TestDeriveRFC5869(t *testing.T) {
	k := Key{b: bytes.Repeat([]byte{0x0b}, 22)}
	want := "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
	if got := hex.EncodeToString(k.Derive("")); got != want {
		t.Errorf("Derive(\"\") = %s; want %s", got, want)
	}
}

func TestDerive(t *testing.T) {
	k := Key{b: seq(32)}
	audit, hooks := k.Derive("audit"), k.Derive("webhook-secrets")
	if len(audit) != DerivedLen || len(hooks) != DerivedLen {
		t.Fatalf("Derive lengths = %d, %d; want %d", len(audit), len(hooks), DerivedLen)
	}
	if bytes.Equal(audit, hooks) {
		t.Error("Derive(audit) == Derive(webhook-secrets)")
	}
	if !bytes.Equal(audit, k.Derive("audit")) {
		t.Error("Derive(audit) is not deterministic")
	}
	if bytes.Equal(audit, Key{b: seq(33)}.Derive("audit")) {
		t.Error("different keys derive the same audit key")
	}
}

func TestSealOpen(t *testing.T) {
	k, other := Generate(), Generate()
	const purpose = "webhook-secrets"
	sealed, err := k.Seal([]byte("whsec_abc"), purpose)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sealed, "v1:") {
		t.Fatalf("Seal = %q; want a v1: prefix", sealed)
	}
	again, _ := k.Seal([]byte("whsec_abc"), purpose)
	if again == sealed {
		t.Error("Seal is deterministic; want a random nonce")
	}
	empty, _ := k.Seal(nil, purpose)

	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, "v1:"))
	raw[len(raw)-1] ^= 1
	flipped := "v1:" + base64.StdEncoding.EncodeToString(raw)

	tests := []struct {
		name    string
		key     Key
		sealed  string
		purpose string
		want    string
		err     error
	}{
		{"round trip", k, sealed, purpose, "whsec_abc", nil},
		{"empty plaintext", k, empty, purpose, "", nil},
		{"other purpose", k, sealed, "audit", "", ErrSealed},
		{"other key", other, sealed, purpose, "", ErrSealed},
		{"flipped bit", k, flipped, purpose, "", ErrSealed},
		{"no version", k, strings.TrimPrefix(sealed, "v1:"), purpose, "", ErrSealed},
		{"unknown version", k, "v2:" + strings.TrimPrefix(sealed, "v1:"), purpose, "", ErrSealed},
		{"bad base64", k, "v1:!!!", purpose, "", ErrSealed},
		{"too short", k, "v1:AAAA", purpose, "", ErrSealed},
		{"empty", k, "", purpose, "", ErrSealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.key.Open(tt.sealed, tt.purpose)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Open(%q, %q) error = %v; want %v", tt.sealed, tt.purpose, err, tt.err)
			}
			if string(got) != tt.want {
				t.Errorf("Open(%q, %q) = %q; want %q", tt.sealed, tt.purpose, got, tt.want)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	k := Key{b: bytes.Repeat([]byte{0xab}, 32)}
	leaks := func(s string) bool {
		return strings.Contains(strings.ToLower(s), "abab") || strings.Contains(s, "171") ||
			strings.Contains(s, base64.RawStdEncoding.EncodeToString(k.b[:6]))
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("start", "key", k, "ptr", &k)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("start", "key", k)
	js, err := json.Marshal(map[string]any{"key": k, "ptr": &k})
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"slog":   logged.String(),
		"json":   string(js),
		"String": k.String(),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%b", "%c", "%U"} {
		outputs[verb] = fmt.Sprintf(verb, k)
		outputs["&"+verb] = fmt.Sprintf(verb, &k)
		outputs["struct "+verb] = fmt.Sprintf(verb, struct{ K Key }{k})
	}
	for name, out := range outputs {
		if leaks(out) || !strings.Contains(out, "[redacted]") {
			t.Errorf("%s of a Key = %q; want [redacted] and no key bytes", name, out)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := LoadOrCreate(dir)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate(new dir) = _, %v, %v; want created", created, err)
	}
	path := filepath.Join(dir, FileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %04o; want 0600", perm)
	}
	content, _ := os.ReadFile(path)
	if got := strings.TrimSpace(string(content)); got != hex.EncodeToString(k1.b) {
		t.Errorf("key file = %q; want the key in hex", got)
	}
	k2, created, err := LoadOrCreate(dir)
	if err != nil || created {
		t.Fatalf("LoadOrCreate(existing) = _, %v, %v; want loaded", created, err)
	}
	if !bytes.Equal(k1.b, k2.b) {
		t.Error("LoadOrCreate returned a different key the second time")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestLoadOrCreateRefuses(t *testing.T) {
	good := hex.EncodeToString(seq(32)) + "\n"
	tests := []struct {
		name    string
		content string
		perm    os.FileMode
		wantErr string
	}{
		{"group readable", good, 0o640, "0640"},
		{"world readable", good, 0o644, "0644"},
		{"executable", good, 0o700, "0700"},
		{"read only is fine", good, 0o400, ""},
		{"not a key", "hello\n", 0o600, "neither hex nor base64"},
		{"short key", hex.EncodeToString(seq(8)), 0o600, "shorter than 32"},
		{"empty (after waiting for a writer)", "", 0o600, "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.perm); err != nil {
				t.Fatal(err)
			}
			_, created, err := LoadOrCreate(dir)
			if created {
				t.Error("LoadOrCreate created a key over an existing file")
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadOrCreate = %v; want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadOrCreate error = %v; want one containing %q", err, tt.wantErr)
			}
			if v := strings.TrimSpace(tt.content); v != "" && strings.Contains(err.Error(), v) {
				t.Errorf("LoadOrCreate error %q contains the file content", err)
			}
		})
	}
}

func TestLoadOrCreateConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 16
	keys := make([]Key, n)
	errs := make([]error, n)
	creators := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], creators[i], errs[i] = LoadOrCreate(dir) })
	}
	wg.Wait()
	won := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("LoadOrCreate #%d: %v", i, errs[i])
		}
		if creators[i] {
			won++
		}
		if !bytes.Equal(keys[i].b, keys[0].b) {
			t.Fatalf("LoadOrCreate #%d returned a different key", i)
		}
	}
	if won != 1 {
		t.Errorf("%d callers report creating the key; want 1", won)
	}
}

func TestZeroKeyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Derive on the zero Key did not panic")
		}
	}()
	var k Key
	if !k.IsZero() {
		t.Error("zero Key: IsZero = false")
	}
	k.Derive("audit")
}
