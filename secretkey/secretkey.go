// Package secretkey holds keygate's secret key (SPEC §1): the one secret from which the audit
// chain key and the key that encrypts stored webhook secrets are derived.
//
// The key comes from KEYGATE_SECRET_KEY (Parse) or, when that is unset, from the file
// keygate-secret.key beside the SQLite database (LoadOrCreate). A Key never prints, formats,
// marshals or logs its bytes: every such path yields "[redacted]".
package secretkey

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// MinLen is the least number of bytes a secret key decodes to.
const MinLen = 32

// DerivedLen is the length of every key returned by Derive (an AES-256 or HMAC-SHA256 key).
const DerivedLen = 32

const redacted = "[redacted]"

// Key is the secret key. The zero Key holds no secret; its methods panic.
type Key struct {
	b []byte
}

// Errors of Parse. They never contain the value parsed.
var (
	ErrEncoding = errors.New("secret key is neither hex nor base64")
	ErrTooShort = fmt.Errorf("secret key is shorter than %d bytes", MinLen)
)

// Parse decodes a KEYGATE_SECRET_KEY value: hex, or base64 in the standard or URL alphabet,
// padded or not, decoding to at least MinLen bytes. Surrounding white space is ignored.
// A string that is valid hex is read as hex.
func Parse(s string) (Key, error) {
	s = strings.TrimSpace(s)
	b, err := decode(s)
	if err != nil {
		return Key{}, err
	}
	if len(b) < MinLen {
		return Key{}, ErrTooShort
	}
	return Key{b: b}, nil
}

func decode(s string) ([]byte, error) {
	if s == "" {
		return nil, ErrEncoding
	}
	if b, err := hex.DecodeString(s); err == nil {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	// Deliberately not wrapping the decoders' errors: they quote offending input bytes.
	return nil, ErrEncoding
}

// Generate returns a new random key of MinLen bytes.
func Generate() Key {
	b := make([]byte, MinLen)
	rand.Read(b) // never returns an error (crypto/rand, Go 1.24+)
	return Key{b: b}
}

// Derive returns the DerivedLen-byte key for purpose: HKDF-SHA256 (RFC 5869) with the secret key
// as input keying material, no salt, and purpose as info. Purposes in use: "audit" (the audit
// chain's HMAC key, SPEC §7) and "webhook-secrets" (the key that seals stored webhook secrets).
// Changing this construction breaks every existing audit chain and sealed value.
func (k Key) Derive(purpose string) []byte {
	k.mustBeSet()
	out, err := hkdf.Key(sha256.New, k.b, nil, purpose, DerivedLen)
	if err != nil {
		// Only an output longer than 255 hash blocks fails.
		panic("secretkey: " + err.Error())
	}
	return out
}

// sealVersion prefixes every sealed string: the format is "v1:" + standard padded base64 of
// nonce (12 bytes) || AES-256-GCM ciphertext and tag, under Derive(purpose), with no
// additional data.
const sealVersion = "v1:"

// ErrSealed is returned by Open for a value that is malformed, was sealed for another purpose or
// under another key, or was altered.
var ErrSealed = errors.New("sealed value is malformed, altered, or sealed under another key or purpose")

// Seal encrypts plaintext with AES-256-GCM under Derive(purpose) and a random nonce. Sealing the
// same plaintext twice gives different strings.
func (k Key) Seal(plaintext []byte, purpose string) (string, error) {
	aead, err := k.aead(purpose)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	rand.Read(nonce)
	out := aead.Seal(nonce, nonce, plaintext, nil)
	return sealVersion + base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts a string made by Seal with the same key and purpose. Any failure is ErrSealed.
func (k Key) Open(sealed string, purpose string) ([]byte, error) {
	aead, err := k.aead(purpose)
	if err != nil {
		return nil, err
	}
	rest, ok := strings.CutPrefix(sealed, sealVersion)
	if !ok {
		return nil, ErrSealed
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrSealed
	}
	nonce, ciphertext := raw[:aead.NonceSize()], raw[aead.NonceSize():]
	plaintext, err := aead.Open(nil, nonce, ciphertext, nil)
	if err != nil {
		return nil, ErrSealed
	}
	return plaintext, nil
}

func (k Key) aead(purpose string) (cipher.AEAD, error) {
	block, err := aes.NewCipher(k.Derive(purpose))
	if err != nil {
		return nil, fmt.Errorf("secretkey: %w", err)
	}
	return cipher.NewGCM(block)
}

func (k Key) mustBeSet() {
	if len(k.b) == 0 {
		panic("secretkey: use of the zero Key")
	}
}

// IsZero reports whether k holds no secret.
func (k Key) IsZero() bool { return len(k.b) == 0 }

// hexText is the content of the key file.
func (k Key) hexText() string { return hex.EncodeToString(k.b) + "\n" }

// String returns "[redacted]".
func (k Key) String() string { return redacted }

// GoString returns "[redacted]", so %#v hides the key too.
func (k Key) GoString() string { return redacted }

// Format writes "[redacted]" for every verb, so no fmt verb (%x, %d, %+v, …) reveals the key.
func (k Key) Format(f fmt.State, verb rune) { f.Write([]byte(redacted)) }

// MarshalText returns "[redacted]", so encoding/json and friends never write the key.
func (k Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue returns "[redacted]", so log/slog never writes the key.
func (k Key) LogValue() slog.Value { return slog.StringValue(redacted) }

var (
	_ fmt.Stringer   = Key{}
	_ fmt.GoStringer = Key{}
	_ fmt.Formatter  = Key{}
	_ slog.LogValuer = Key{}
)
