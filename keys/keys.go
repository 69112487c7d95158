// Package keys generates, parses and hashes keygate keys (SPEC §2).
//
// A consumer key is {prefix}_{kind}_{env}_{body} and a root key {prefix}_root_{body}, where body is
// 43 base62 characters of 32 random bytes followed by 6 base62 characters of the CRC32 (IEEE) of
// everything before them. The checksum lets anyone's secret scanner recognise a leaked key offline,
// and lets keygate refuse a mistyped or forged string without touching storage.
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
	"strings"
	"unsafe"
)

// DefaultPrefix is the prefix of keys when KEYGATE_KEY_PREFIX is unset.
const DefaultPrefix = "kg"

const (
	alphabet    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randomLen   = 43 // base62 characters of 32 random bytes
	checksumLen = 6  // base62 characters of a CRC32
	bodyLen     = randomLen + checksumLen
	startBody   = 4 // body characters shown in Start
	maxPrefix   = 16
)

// Kinds of key as they appear in the string.
const (
	TagSecret      = "sk"
	TagPublishable = "pk"
	TagRoot        = "root"
)

// Parsed describes a well-formed key string. Its fields are slices of the parsed string.
type Parsed struct {
	Kind string // "sk", "pk" or "root"
	Env  string // "live" or "test"; "" for root keys
	// Head is everything before the body, trailing underscore included ("kg_sk_live_").
	Head string
}

// Root reports whether the key is a root key.
func (p Parsed) Root() bool { return p.Kind == TagRoot }

// ValidPrefix reports whether s can be a key prefix: 1 to 16 characters of [a-z0-9].
func ValidPrefix(s string) bool {
	if len(s) == 0 || len(s) > maxPrefix {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Generate returns a new consumer key of kind ("sk" or "pk") and env ("live" or "test").
func Generate(prefix, kind, env string) (string, error) {
	if !ValidPrefix(prefix) {
		return "", fmt.Errorf("invalid key prefix %q", prefix)
	}
	if kind != TagSecret && kind != TagPublishable {
		return "", fmt.Errorf("invalid key kind %q", kind)
	}
	if env != "live" && env != "test" {
		return "", fmt.Errorf("invalid key env %q", env)
	}
	return generate(prefix + "_" + kind + "_" + env + "_")
}

// GenerateRoot returns a new root key.
func GenerateRoot(prefix string) (string, error) {
	if !ValidPrefix(prefix) {
		return "", fmt.Errorf("invalid key prefix %q", prefix)
	}
	return generate(prefix + "_" + TagRoot + "_")
}

func generate(head string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	var sb strings.Builder
	sb.Grow(len(head) + bodyLen)
	sb.WriteString(head)
	sb.WriteString(encodeBig(new(big.Int).SetBytes(b[:]), randomLen))
	s := sb.String()
	return s + checksum(s), nil
}

// encodeBig writes n in base62, big-endian, left-padded with '0' to width.
func encodeBig(n *big.Int, width int) string {
	out := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = alphabet[mod.Int64()]
	}
	return string(out)
}

func checksum(s string) string {
	var out [checksumLen]byte
	encodeUint(crc32.ChecksumIEEE([]byte(s)), out[:])
	return string(out[:])
}

func encodeUint(v uint32, out []byte) {
	n := uint64(v)
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = alphabet[n%62]
		n /= 62
	}
}

var decodeTable = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

// ErrMalformed is returned for a string that is not a well-formed key of the given prefix.
var ErrMalformed = errors.New("malformed key")

// Parse checks the shape and checksum of s as a key with prefix, without allocating.
func Parse(s, prefix string) (Parsed, error) {
	// Shortest: p_root_ + body; longest: p_live... bounded by prefix length.
	if len(s) < len(prefix)+1+len(TagRoot)+1+bodyLen || len(s) > len(prefix)+1+2+1+4+1+bodyLen {
		return Parsed{}, ErrMalformed
	}
	if !strings.HasPrefix(s, prefix) || s[len(prefix)] != '_' {
		return Parsed{}, ErrMalformed
	}
	headLen := len(s) - bodyLen
	if s[headLen-1] != '_' {
		return Parsed{}, ErrMalformed
	}
	mid := s[len(prefix)+1 : headLen-1] // "sk_live", "root"
	var p Parsed
	switch mid {
	case "root":
		p.Kind = TagRoot
	case "sk_live", "sk_test", "pk_live", "pk_test":
		p.Kind, p.Env = mid[:2], mid[3:]
	default:
		return Parsed{}, ErrMalformed
	}
	p.Head = s[:headLen]
	body := s[headLen:]
	for i := 0; i < len(body); i++ {
		if decodeTable[body[i]] < 0 {
			return Parsed{}, ErrMalformed
		}
	}
	var sum uint64
	for i := randomLen; i < bodyLen; i++ {
		sum = sum*62 + uint64(decodeTable[body[i]])
	}
	if sum != uint64(crc32.ChecksumIEEE(readOnlyBytes(s[:headLen+randomLen]))) {
		return Parsed{}, ErrMalformed
	}
	return p, nil
}

// LooksLike reports whether s claims to be a key of prefix (starts with "{prefix}_"). Strings that
// look like keys but fail Parse are refused without a lookup (SPEC §2 pre-filter).
func LooksLike(s, prefix string) bool {
	return len(s) > len(prefix) && strings.HasPrefix(s, prefix) && s[len(prefix)] == '_'
}

// Start returns the part of a key shown to humans: the head and the first 4 body characters.
// s must be a key that Parse accepts (or an imported key, of which the first 12 characters
// or fewer are shown).
func Start(s string, p Parsed) string {
	if p.Head == "" {
		if len(s) > 12 {
			return s[:8]
		}
		return s[:len(s)/2]
	}
	return s[:len(p.Head)+startBody]
}

// Hash returns the SHA-256 of the whole key string: the only form in which keys are stored.
func Hash(s string) [32]byte {
	return sha256.Sum256(readOnlyBytes(s))
}

// readOnlyBytes returns the bytes of s without copying, for functions that only read their
// argument (hashes, checksums). Copying would allocate on every verification: both functions
// make their argument escape.
func readOnlyBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// NewID returns a random object id such as "key_3hK9…": prefix, underscore and 22 base62
// characters of 16 random bytes.
func NewID(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("keys: crypto/rand failed: " + err.Error()) // rand.Read never fails on supported platforms
	}
	return prefix + "_" + encodeBig(new(big.Int).SetBytes(b[:]), 22)
}
