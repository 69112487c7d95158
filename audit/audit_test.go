package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// The hash written out by hand from SPEC §7, so the construction cannot drift unnoticed.
func TestHasherConstruction(t *testing.T) {
	e := &keygate.AuditEntry{
		Seq:        7,
		TS:         time.Date(2026, 11, 29, 18, 1, 2, 345678000, time.FixedZone("CET", 3600)),
		Actor:      "root:rk_1",
		Action:     "key.create",
		TargetType: "key",
		TargetID:   "key_<1>",
		IP:         "192.0.2.1",
		Result:     keygate.ResultSuccess,
		Details:    map[string]any{"z": 1.0, "name": "mobile & web", "a": []any{true, nil}},
		Hash:       "ignored",
	}
	canonical := `{"action":"key.create","actor":"root:rk_1","details":{"a":[true,null],"name":"mobile & web","z":1},` +
		`"ip":"192.0.2.1","result":"success","seq":7,"target_id":"key_<1>","target_type":"key","ts":"2026-11-29T17:01:02.345678Z"}`
	got, err := Canonical(e)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != canonical {
		t.Fatalf("Canonical = %s; want %s", got, canonical)
	}
	mac := hmac.New(sha256.New, testKey)
	mac.Write([]byte("prevhash\n" + canonical))
	want := hex.EncodeToString(mac.Sum(nil))
	hash, err := Hasher(testKey)("prevhash", e)
	if err != nil || hash != want {
		t.Errorf("Hasher = %s, %v; want %s", hash, err, want)
	}
}

func TestCanonicalNilDetails(t *testing.T) {
	got, err := Canonical(&keygate.AuditEntry{Seq: 1, TS: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"action":"","actor":"","details":null,"ip":"","result":"","seq":1,"target_id":"","target_type":"","ts":"1970-01-01T00:00:00Z"}`
	if string(got) != want {
		t.Errorf("Canonical = %s; want %s", got, want)
	}
}

// chain builds a valid log of n entries, as a store's AppendAudit would.
func chain(t *testing.T, n int) []*keygate.AuditEntry {
	t.Helper()
	hash := Hasher(testKey)
	start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var log []*keygate.AuditEntry
	prev := ""
	for i := 1; i <= n; i++ {
		e := &keygate.AuditEntry{
			Seq:        int64(i),
			TS:         start.Add(time.Duration(i) * 1234567 * time.Microsecond),
			Actor:      "root:rk_1",
			Action:     "key.create",
			TargetType: "key",
			TargetID:   fmt.Sprintf("key_%d", i),
			IP:         "192.0.2.1",
			Result:     keygate.ResultSuccess,
			Details:    map[string]any{"n": float64(i)},
		}
		h, err := hash(prev, e)
		if err != nil {
			t.Fatal(err)
		}
		e.Hash, prev = h, h
		log = append(log, e)
	}
	return log
}

// fakeStore serves a log the way keygate.Store.ScanAudit does.
type fakeStore struct {
	log []*keygate.AuditEntry
	err error
}

func (s *fakeStore) ScanAudit(ctx context.Context, fn func(*keygate.AuditEntry) error) error {
	for _, e := range s.log {
		c := *e // the store hands out fresh copies
		if err := fn(&c); err != nil {
			return err
		}
	}
	return s.err
}

func ptr(i int64) *int64 { return &i }

func TestVerify(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		tamper    func(log []*keygate.AuditEntry) []*keygate.AuditEntry
		key       []byte
		wantOK    bool
		entries   int64
		wantBreak *int64
	}{
		{"empty log", 0, nil, testKey, true, 0, nil},
		{"intact", 5, nil, testKey, true, 5, nil},
		{"edited action", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			l[2].Action = "key.revoke"
			return l
		}, testKey, false, 5, ptr(3)},
		{"edited details", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			l[4].Details["n"] = 6.0
			return l
		}, testKey, false, 5, ptr(5)},
		{"edited ts", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			l[0].TS = l[0].TS.Add(time.Microsecond)
			return l
		}, testKey, false, 5, ptr(1)},
		{"edited hash", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			last := "0"
			if l[1].Hash[63:] == "0" {
				last = "1"
			}
			l[1].Hash = l[1].Hash[:63] + last
			return l
		}, testKey, false, 5, ptr(2)},
		{"deleted entry", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			return append(l[:2:2], l[3:]...)
		}, testKey, false, 4, ptr(4)},
		{"deleted first entry", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			return l[1:]
		}, testKey, false, 4, ptr(2)},
		{"deleted last entry", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			return l[:4] // undetectable from the log alone: anchor the head elsewhere (SPEC §7)
		}, testKey, true, 4, nil},
		{"renumbered", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			l[3].Seq = 5
			return l
		}, testKey, false, 5, ptr(5)},
		{"swapped entries", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			l[1], l[2] = l[2], l[1]
			return l
		}, testKey, false, 5, ptr(3)},
		{"entry rehashed without the key", 5, func(l []*keygate.AuditEntry) []*keygate.AuditEntry {
			l[2].Action = "key.revoke"
			l[2].Hash, _ = Hasher([]byte("guess"))(l[1].Hash, l[2])
			return l
		}, testKey, false, 5, ptr(3)},
		{"wrong key", 5, nil, []byte("another key, another key, anothe"), false, 5, ptr(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := chain(t, tt.n)
			if tt.tamper != nil {
				log = tt.tamper(log)
			}
			s := &fakeStore{log: log}
			ok, entries, brokenAt, err := Verify(context.Background(), s.ScanAudit, tt.key)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if ok != tt.wantOK || entries != tt.entries || !equalPtr(brokenAt, tt.wantBreak) {
				t.Errorf("Verify = %v, %d, %s; want %v, %d, %s",
					ok, entries, fmtPtr(brokenAt), tt.wantOK, tt.entries, fmtPtr(tt.wantBreak))
			}
		})
	}
}

// keygate.Store's ScanAudit method value is a ScanFunc.
var _ = func(s keygate.Store) (bool, int64, *int64, error) {
	return Verify(context.Background(), s.ScanAudit, nil)
}

func TestVerifyScanError(t *testing.T) {
	boom := errors.New("database gone")
	s := &fakeStore{log: chain(t, 2), err: boom}
	ok, _, brokenAt, err := Verify(context.Background(), s.ScanAudit, testKey)
	if !errors.Is(err, boom) || ok || brokenAt != nil {
		t.Errorf("Verify = %v, _, %s, %v; want false, _, nil, %v", ok, fmtPtr(brokenAt), err, boom)
	}
}

// The chain survives what storage does to an entry: ts truncated to microseconds and read back
// in UTC, details through a JSON round trip.
func TestHasherStableThroughStorage(t *testing.T) {
	hash := Hasher(testKey)
	ts := time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.FixedZone("X", -7*3600)).Truncate(time.Microsecond)
	e := &keygate.AuditEntry{Seq: 1, TS: ts, Action: "plan.update",
		Details: map[string]any{"limit": int64(1000), "ratio": 0.25, "tags": []string{"a"}}}
	h1, err := hash("", e)
	if err != nil {
		t.Fatal(err)
	}
	stored := *e
	stored.TS = time.UnixMicro(ts.UnixMicro()).UTC()
	stored.Details = map[string]any{"limit": 1000.0, "ratio": 0.25, "tags": []any{"a"}}
	h2, err := hash("", &stored)
	if err != nil || h1 != h2 {
		t.Errorf("hash after storage = %s, %v; want %s", h2, err, h1)
	}
}

func equalPtr(a, b *int64) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

func fmtPtr(p *int64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}
