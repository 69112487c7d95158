// Package audit keeps keygate's hash-chained audit log (SPEC §7): the chain hash of each entry,
// verification of a whole log, and sinks that copy entries as JSON lines to a SIEM.
//
// Each entry's hash is
//
//	hex(HMAC-SHA256(auditKey, prevHash + "\n" + canonical))
//
// where prevHash is the previous entry's hash ("" for the first entry), auditKey is
// secretkey.Key.Derive("audit"), and canonical is the entry without its "hash" member in the JSON
// Canonicalization Scheme (RFC 8785), with the JSON names of keygate.AuditEntry: seq, ts, actor,
// action, target_type, target_id, ip, result, details. Whoever can write the database but does not
// hold the secret key cannot forge the chain.
//
// ts is written as time.Time's JSON form after UTC(): RFC 3339 with up to nine fractional digits,
// trailing zeros dropped. The hash covers the timestamp exactly, so callers (the stores'
// AppendAudit) must truncate ts to what storage keeps — microseconds — before hashing, or the
// entry read back will not verify. Likewise details must survive a JSON round trip unchanged:
// a nil map hashes as null and an empty one as {}.
//
// No entry may contain a secret: not a key, a root key, a webhook secret, nor a request body or
// header that could hold one. That is the callers' job; this package copies entries as they are.
package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/keygate/keygate"
)

// canonicalEntry is keygate.AuditEntry without Hash: the hashed form of an entry.
type canonicalEntry struct {
	Seq        int64          `json:"seq"`
	TS         time.Time      `json:"ts"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	TargetType string         `json:"target_type"`
	TargetID   string         `json:"target_id"`
	IP         string         `json:"ip"`
	Result     string         `json:"result"`
	Details    map[string]any `json:"details"`
}

// Canonical returns the RFC 8785 form of e without its hash: the bytes the chain hash covers.
func Canonical(e *keygate.AuditEntry) ([]byte, error) {
	return Canonicalize(canonicalEntry{
		Seq:        e.Seq,
		TS:         e.TS.UTC(),
		Actor:      e.Actor,
		Action:     e.Action,
		TargetType: e.TargetType,
		TargetID:   e.TargetID,
		IP:         e.IP,
		Result:     e.Result,
		Details:    e.Details,
	})
}

// Hasher returns the chain hash function keyed with auditKey, for the stores' AppendAudit. The
// key must be secretkey.Key.Derive("audit"); an empty key would make the chain forgeable by
// anyone. The function ignores e.Hash and is safe for concurrent use.
func Hasher(auditKey []byte) keygate.AuditHasher {
	key := bytes.Clone(auditKey) // a caller reusing its slice cannot change the key
	return func(prevHash string, e *keygate.AuditEntry) (string, error) {
		canonical, err := Canonical(e)
		if err != nil {
			return "", fmt.Errorf("audit entry %d: %w", e.Seq, err)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(prevHash))
		mac.Write([]byte{'\n'})
		mac.Write(canonical)
		return hex.EncodeToString(mac.Sum(nil)), nil
	}
}

// ScanFunc calls fn for every audit entry in ascending seq order; keygate.Store.ScanAudit is one.
type ScanFunc func(ctx context.Context, fn func(*keygate.AuditEntry) error) error

// Verify walks the log through scan and checks the chain: entry seq 1 comes first, each next
// entry's seq is the previous one's plus one, and each hash equals the hash recomputed from the
// entry and the previous entry's stored hash. So an edited entry breaks the chain at its own seq,
// a deleted one at the seq that follows it, and a wrong key at seq 1.
//
// entries counts every entry scanned, including those after a break. brokenAt is the first seq
// that fails (for a bad first entry, its seq), nil when ok. err is only an error of scan or of
// canonicalization; a broken chain is not an error. The answer maps directly onto SPEC §7's
// {"ok","entries","broken_at"}.
func Verify(ctx context.Context, scan ScanFunc, auditKey []byte) (ok bool, entries int64, brokenAt *int64, err error) {
	hash := Hasher(auditKey)
	var prevSeq int64
	var prevHash string
	err = scan(ctx, func(e *keygate.AuditEntry) error {
		entries++
		if brokenAt != nil {
			return nil
		}
		want, err := hash(prevHash, e)
		if err != nil {
			return err
		}
		if e.Seq != prevSeq+1 || !hmac.Equal([]byte(want), []byte(e.Hash)) {
			seq := e.Seq
			brokenAt = &seq
		}
		prevSeq, prevHash = e.Seq, e.Hash
		return nil
	})
	if err != nil {
		return false, entries, nil, fmt.Errorf("audit verify: %w", err)
	}
	return brokenAt == nil, entries, brokenAt, nil
}

// errClosed is returned by a sink's Write after Close.
var errClosed = errors.New("audit sink is closed")
