package control_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/keys"
)

// testAuditTrail checks that every mutating call appends exactly its entries, with the caller's
// actor and IP, and that the chain verifies.
func testAuditTrail(t *testing.T, e *env) {
	var (
		c       *keygate.Consumer
		k, k2   *keygate.Key
		k2Plain string
		rotated *keygate.Key
		rk      *keygate.RootKey
	)
	type want struct{ action, targetType string }
	steps := []struct {
		name string
		do   func() (target string, err error)
		want []want // the last entry's target is the returned target
	}{
		{"create plan", func() (string, error) {
			_, err := e.svc.CreatePlan(e.ctx, e.actor, silver)
			return "silver", err
		}, []want{{"plan.create", "plan"}}},
		{"update plan", func() (string, error) {
			_, err := e.svc.UpdatePlan(e.ctx, e.actor, "silver", control.PlanPatch{MaxAge: keygate.Some(dur(keygate.Day))})
			return "silver", err
		}, []want{{"plan.update", "plan"}}},
		{"create consumer", func() (string, error) {
			var err error
			c, err = e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "A", Plan: "silver"})
			if err != nil {
				return "", err
			}
			return c.ID, nil
		}, []want{{"consumer.create", "consumer"}}},
		{"update consumer", func() (string, error) {
			_, err := e.svc.UpdateConsumer(e.ctx, e.actor, c.ID, control.ConsumerPatch{Name: keygate.Some("B")})
			return c.ID, err
		}, []want{{"consumer.update", "consumer"}}},
		{"create key", func() (string, error) {
			var err error
			k, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID, Scopes: []string{"a:read"}})
			if err != nil {
				return "", err
			}
			return k.ID, nil
		}, []want{{"key.create", "key"}}},
		{"update key", func() (string, error) {
			_, err := e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Name: keygate.Some("renamed")})
			return k.ID, err
		}, []want{{"key.update", "key"}}},
		{"rotate key", func() (string, error) {
			var err error
			rotated, _, err = e.svc.RotateKey(e.ctx, e.actor, k.ID, nil)
			return k.ID, err
		}, []want{{"key.rotate", "key"}}},
		{"revoke key", func() (string, error) {
			_, err := e.svc.RevokeKey(e.ctx, e.actor, rotated.ID, "done")
			return rotated.ID, err
		}, []want{{"key.revoke", "key"}}},
		{"create second key", func() (string, error) {
			var err error
			k2, k2Plain, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID})
			if err != nil {
				return "", err
			}
			return k2.ID, nil
		}, []want{{"key.create", "key"}}},
		{"revoke leaked", func() (string, error) {
			_, err := e.svc.RevokeLeaked(e.ctx, e.actor, []string{k2Plain})
			return k2.ID, err
		}, []want{{"key.revoke", "key"}}},
		{"create root key", func() (string, error) {
			var err error
			rk, _, err = e.svc.CreateRootKey(e.ctx, e.actor, nil, control.RootKeyCreate{Name: "ci", Permissions: []string{keygate.PermKeysRead}})
			if err != nil {
				return "", err
			}
			return rk.ID, nil
		}, []want{{"root_key.create", "root_key"}}},
		{"revoke root key", func() (string, error) {
			_, err := e.svc.RevokeRootKey(e.ctx, e.actor, rk.ID)
			return rk.ID, err
		}, []want{{"root_key.revoke", "root_key"}}},
		{"delete consumer", func() (string, error) {
			// The rotated-from key is still live in its grace period: it is revoked too.
			return c.ID, e.svc.DeleteConsumer(e.ctx, e.actor, c.ID, false)
		}, []want{{"key.revoke", "key"}, {"consumer.delete", "consumer"}}},
		{"delete plan", func() (string, error) {
			return "silver", e.svc.DeletePlan(e.ctx, e.actor, "silver")
		}, []want{{"plan.delete", "plan"}}},
		{"audit a failure", func() (string, error) {
			return "rk_x", e.svc.AuditFailure(e.ctx, e.actor, "root_key.create", "root_key", "rk_x", map[string]any{"reason": "forbidden"})
		}, []want{{"root_key.create", "root_key"}}},
	}
	for _, st := range steps {
		e.clock.Advance(time.Second)
		before := e.head()
		target, err := st.do()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := e.entriesAfter(before)
		if len(got) != len(st.want) {
			t.Errorf("%s: %d audit entries; want %d", st.name, len(got), len(st.want))
			continue
		}
		for i, a := range got {
			if a.Action != st.want[i].action || a.TargetType != st.want[i].targetType || a.Actor != e.actor.ID || a.IP != e.actor.IP ||
				!a.TS.Equal(e.clock.Now()) || a.Hash == "" {
				t.Errorf("%s: entry %d = %s %s %s by %s from %s at %v; want %s %s by %s from %s at %v", st.name, a.Seq,
					a.Action, a.TargetType, a.TargetID, a.Actor, a.IP, a.TS, st.want[i].action, st.want[i].targetType, e.actor.ID, e.actor.IP, e.clock.Now())
			}
			wantResult := keygate.ResultSuccess
			if st.name == "audit a failure" {
				wantResult = keygate.ResultFailure
			}
			if a.Result != wantResult {
				t.Errorf("%s: result %s; want %s", st.name, a.Result, wantResult)
			}
		}
		if last := got[len(got)-1]; last.TargetID != target {
			t.Errorf("%s: target %s; want %s", st.name, last.TargetID, target)
		}
	}
	// Refused calls write nothing.
	before := e.head()
	_, err := e.svc.RevokeKey(e.ctx, e.actor, rotated.ID, "")
	wantErr(t, "RevokeKey(revoked)", err, keygate.CodeConflict)
	_, err = e.svc.CreatePlan(e.ctx, e.actor, control.PlanCreate{Name: "BAD"})
	wantErr(t, "CreatePlan(BAD)", err, keygate.CodeBadRequest)
	if e.head() != before {
		t.Errorf("refused calls wrote %d entries", e.head()-before)
	}

	v := e.verifyAudit()
	if !v.OK || v.BrokenAt != nil || v.Entries != e.head() {
		t.Errorf("VerifyAudit = %+v; want ok with %d entries", v, e.head())
	}
	h, err := e.svc.AuditHead(e.ctx)
	last := e.entriesAfter(h.Seq - 1)
	if err != nil || len(last) != 1 || last[0].Hash != h.Hash {
		t.Errorf("AuditHead = %+v, %v; want the newest entry's hash", h, err)
	}
	// Listing filters by actor, action and target.
	es, _, err := e.svc.AuditEntries(e.ctx, keygate.AuditFilter{Action: "key.revoke"})
	if err != nil || len(es) != 3 {
		t.Errorf("AuditEntries(action key.revoke) = %d, %v; want 3", len(es), err)
	}
	es, _, err = e.svc.AuditEntries(e.ctx, keygate.AuditFilter{Target: c.ID})
	if err != nil || len(es) != 3 || es[0].Action != "consumer.delete" {
		t.Errorf("AuditEntries(target consumer) = %d, %v; want 3, newest first", len(es), err)
	}
	// A chain checked with another key fails at its first entry.
	other := control.New(control.Options{Store: e.raw, AuditKey: []byte("another-key-another-key-another-k")})
	if v, err := other.VerifyAudit(e.ctx); err != nil || v.OK || v.BrokenAt == nil || *v.BrokenAt != 1 {
		t.Errorf("VerifyAudit with another key = %+v, %v; want broken at 1", v, err)
	}
}

// testAuditTamper edits and deletes stored entries directly in the database.
func testAuditTamper(t *testing.T, e *env) {
	c := e.consumer("")
	for i := range 6 {
		e.clock.Advance(time.Second)
		if _, err := e.svc.UpdateConsumer(e.ctx, e.actor, c.ID, control.ConsumerPatch{Name: keygate.Some(fmt.Sprint("n", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if v := e.verifyAudit(); !v.OK || v.Entries != 7 {
		t.Fatalf("VerifyAudit before tampering = %+v", v)
	}
	tests := []struct {
		column string
		seq    int64
		value  any
	}{
		{"action", 3, "consumer.read"},
		{"details", 4, `{"fields":["email"]}`},
		{"details", 1, `{"plan":"platinum"}`},
		{"actor", 7, "root_key:rk_someone_else"},
		{"ip", 2, "192.0.2.99"},
		{"ts", 5, base.Add(-time.Hour).UnixMicro()},
		{"target_id", 6, "con_other"},
	}
	for _, tc := range tests {
		var orig any
		if err := e.raw.DB().QueryRowContext(e.ctx, e.q(`SELECT `+tc.column+` FROM audit_log WHERE seq = ?`), tc.seq).Scan(&orig); err != nil {
			t.Fatal(err)
		}
		e.exec(`UPDATE audit_log SET `+tc.column+` = ? WHERE seq = ?`, tc.value, tc.seq)
		v := e.verifyAudit()
		if v.OK || v.BrokenAt == nil || *v.BrokenAt != tc.seq || v.Entries != 7 {
			t.Errorf("after editing %s of entry %d: VerifyAudit = ok %v broken_at %v entries %d; want broken at %d",
				tc.column, tc.seq, v.OK, deref(v.BrokenAt), v.Entries, tc.seq)
		}
		e.exec(`UPDATE audit_log SET `+tc.column+` = ? WHERE seq = ?`, orig, tc.seq)
		if v := e.verifyAudit(); !v.OK {
			t.Fatalf("after restoring %s of entry %d: VerifyAudit = %+v", tc.column, tc.seq, v)
		}
	}
	// A re-hashed entry does not help without the audit key: the next one breaks... unless it
	// is the last, whose own hash is then wrong.
	e.exec(`UPDATE audit_log SET hash = ? WHERE seq = ?`, strings.Repeat("0", 64), 4)
	if v := e.verifyAudit(); v.OK || deref(v.BrokenAt) != 4 {
		t.Errorf("after replacing the hash of entry 4: broken_at %v; want 4", deref(v.BrokenAt))
	}
	e.exec(`DELETE FROM audit_log WHERE seq = ?`, 4)
	if v := e.verifyAudit(); v.OK || deref(v.BrokenAt) != 5 || v.Entries != 6 {
		t.Errorf("after deleting entry 4: VerifyAudit = ok %v broken_at %v entries %d; want broken at 5, 6 entries", v.OK, deref(v.BrokenAt), v.Entries)
	}
	e.exec(`DELETE FROM audit_log WHERE seq = ?`, 1)
	if v := e.verifyAudit(); v.OK || deref(v.BrokenAt) != 2 {
		t.Errorf("after deleting entry 1: broken_at %v; want 2", deref(v.BrokenAt))
	}
}

// deref returns *p, or -1 for nil.
func deref(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// testAuditWriteFails checks that a change whose audit entry cannot be written is not applied.
func testAuditWriteFails(t *testing.T, e *env) {
	c := e.consumer("")
	k, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
	before := e.head()
	m := e.rec.snapshot()
	e.spy.failAudit.Store(true)

	_, err := e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "ghost"})
	wantErr(t, "CreateConsumer with the audit log down", err, keygate.CodeUnavailable)
	if strings.Contains(keygate.ErrorMessage(err), "disk full") {
		t.Errorf("the cause leaks to the caller: %v", err)
	}
	_, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID})
	wantErr(t, "CreateKey with the audit log down", err, keygate.CodeUnavailable)
	_, err = e.svc.RevokeKey(e.ctx, e.actor, k.ID, "")
	wantErr(t, "RevokeKey with the audit log down", err, keygate.CodeUnavailable)
	_, _, err = e.svc.RotateKey(e.ctx, e.actor, k.ID, nil)
	wantErr(t, "RotateKey with the audit log down", err, keygate.CodeUnavailable)
	err = e.svc.DeleteConsumer(e.ctx, e.actor, c.ID, true)
	wantErr(t, "DeleteConsumer with the audit log down", err, keygate.CodeUnavailable)
	_, err = e.svc.CreatePlan(e.ctx, e.actor, control.PlanCreate{Name: "ghost"})
	wantErr(t, "CreatePlan with the audit log down", err, keygate.CodeUnavailable)
	p, err := e.svc.BootstrapRootKey(e.ctx)
	wantErr(t, "BootstrapRootKey with the audit log down", err, keygate.CodeUnavailable)
	if p != "" {
		t.Errorf("BootstrapRootKey returned a key it did not store")
	}

	e.spy.failAudit.Store(false)
	if n := e.count(`SELECT COUNT(*) FROM consumers WHERE name = ?`, "ghost"); n != 0 {
		t.Errorf("the consumer was stored (%d rows)", n)
	}
	cs, _, err := e.svc.Consumers(e.ctx, keygate.ListParams{})
	if err != nil || len(cs) != 1 {
		t.Errorf("Consumers = %d, %v; want only the first", len(cs), err)
	}
	if n := e.count(`SELECT COUNT(*) FROM api_keys`); n != 1 {
		t.Errorf("%d keys stored; want 1", n)
	}
	if got := e.get(k.ID); got.Status != keygate.StateActive || got.RotatedTo != nil || got.ExpiresAt != nil {
		t.Errorf("key after failed revoke/rotate: %+v", got)
	}
	if _, err := e.svc.Consumer(e.ctx, c.ID); err != nil {
		t.Errorf("consumer after failed delete: %v", err)
	}
	if _, err := e.svc.Plan(e.ctx, "ghost"); keygate.ErrorCode(err) != keygate.CodeNotFound {
		t.Errorf("plan after failed create: %v", err)
	}
	if n := e.count(`SELECT COUNT(*) FROM root_keys`); n != 0 {
		t.Errorf("%d root keys stored", n)
	}
	if e.head() != before {
		t.Errorf("audit head moved")
	}
	if got := e.rec.snapshot(); got != m {
		t.Errorf("failed changes were announced: %+v → %+v", m, got)
	}
	if v := e.verifyAudit(); !v.OK {
		t.Errorf("VerifyAudit = %+v", v)
	}
}

// testPlaintextNeverStored creates and rotates keys and root keys, then looks for any plaintext
// in every column of every table, in the database files, in audit entries and in events.
func testPlaintextNeverStored(t *testing.T, e *env) {
	var plaintexts []string
	add := func(p string, err error) {
		t.Helper()
		if err != nil || p == "" {
			t.Fatalf("no plaintext: %v", err)
		}
		plaintexts = append(plaintexts, p)
	}
	add(e.svc.BootstrapRootKey(e.ctx))
	token, _ := keys.GenerateRoot("kg")
	add(token, e.svc.EnsureRootKey(e.ctx, token))
	_, rp, err := e.svc.CreateRootKey(e.ctx, e.actor, nil, control.RootKeyCreate{Name: "r", Permissions: []string{keygate.PermAdmin}})
	add(rp, err)
	c := e.consumer("")
	for _, in := range []control.KeyCreate{
		{ConsumerID: c.ID},
		{ConsumerID: c.ID, Env: keygate.EnvTest, Name: "named"},
		{ConsumerID: c.ID, Kind: keygate.KindPublishable, Scopes: []string{"a:read"}, ReferrerAllow: []string{"https://x.example"}},
	} {
		k, p := e.key(in)
		add(p, nil)
		nk, np, err := e.svc.RotateKey(e.ctx, e.actor, k.ID, nil)
		add(np, err)
		_, np2, err := e.svc.RotateKey(e.ctx, e.actor, nk.ID, ptr(time.Duration(0)))
		add(np2, err)
	}
	leaked := plaintexts[len(plaintexts)-1]
	if _, err := e.svc.RevokeLeaked(e.ctx, e.actor, []string{leaked}); err != nil {
		t.Fatal(err)
	}
	// What must not appear: each plaintext and its secret body (without the head).
	var needles [][]byte
	for _, p := range plaintexts {
		needles = append(needles, []byte(p), []byte(p[strings.LastIndexByte(p, '_')+1:]))
	}
	check := func(where string, b []byte) {
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s holds a plaintext key (%.12s…)", where, n)
			}
		}
	}

	var tables []string
	q := `SELECT name FROM sqlite_master WHERE type = 'table'`
	if e.raw.Dialect().Numbered {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`
	}
	rows, err := e.raw.DB().QueryContext(e.ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if !contains(tables, "api_keys") || !contains(tables, "root_keys") || !contains(tables, "audit_log") {
		t.Fatalf("tables found: %v", tables)
	}
	cells := 0
	for _, table := range tables {
		cells += scanTable(t, e.raw.DB(), table, check)
	}
	if cells == 0 {
		t.Fatal("no cells scanned")
	}
	// The hash column holds the SHA-256 of each key, so the scan above looked at real rows.
	if n := e.count(`SELECT COUNT(*) FROM api_keys`); n != 9 {
		t.Errorf("%d keys stored; want 9", n)
	}
	for _, p := range plaintexts[3:] {
		if _, err := e.raw.KeyByHash(e.ctx, hashOf(p)); err != nil {
			t.Errorf("key not found by its hash: %v", err)
		}
	}

	// The SQLite files themselves (database, WAL, shared memory).
	if e.b.name == "sqlite" {
		files, _ := filepath.Glob(e.addr + "*")
		if len(files) == 0 {
			t.Fatal("no database files")
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			check(filepath.Base(f), b)
		}
	}
	for _, a := range e.entriesAfter(0) {
		b, _ := json.Marshal(a)
		check(fmt.Sprintf("audit entry %d", a.Seq), b)
	}
	e.rec.mu.Lock()
	b, _ := json.Marshal(fmt.Sprint(e.rec.events, e.rec.keys))
	e.rec.mu.Unlock()
	check("events", b)
	// Answers other than the creating call do not hold it either.
	ks, _, err := e.svc.Keys(e.ctx, keygate.KeyFilter{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(ks)
	check("Keys answer", b)
}

// scanTable reads every column of every row of table as text or bytes and passes each cell to
// check; it returns the number of non-empty cells.
func scanTable(t *testing.T, db *sql.DB, table string, check func(string, []byte)) int {
	t.Helper()
	rows, err := db.Query(`SELECT * FROM ` + table)
	if err != nil {
		t.Fatalf("scan %s: %v", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("scan %s: %v", table, err)
		}
		for i, v := range vals {
			var b []byte
			switch v := v.(type) {
			case nil:
				continue
			case []byte:
				b = v
			case string:
				b = []byte(v)
			default:
				b = []byte(fmt.Sprint(v))
			}
			n++
			check(table+"."+cols[i], b)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// testSinkAndUsage checks the optional hooks: AuditSink sees exactly the committed entries, and
// Usage supplies the quota usage of key objects by limiter.
func testSinkAndUsage(t *testing.T, e *env) {
	var mu sync.Mutex
	var sunk []*keygate.AuditEntry
	var asked []string
	svc := control.New(control.Options{Store: e.spy, Now: e.clock.Now, AuditKey: auditKey,
		Logger: slog.New(slog.DiscardHandler),
		AuditSink: func(a *keygate.AuditEntry) {
			mu.Lock()
			defer mu.Unlock()
			sunk = append(sunk, a)
		},
		Usage: func(_ context.Context, limiterID string, q *keygate.Quota, now time.Time) (int64, error) {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, limiterID)
			if q.Limit != 50 || !now.Equal(e.clock.Now()) {
				t.Errorf("Usage(%s, %+v, %v)", limiterID, q, now)
			}
			return 17, nil
		}})
	c, err := svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "s"})
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID, Quota: &keygate.Quota{Limit: 50, Period: keygate.PeriodMonth}})
	if err != nil {
		t.Fatal(err)
	}
	if k.Quota == nil || k.Quota.Used == nil || *k.Quota.Used != 17 {
		t.Errorf("quota = %+v; want used 17 from Usage", k.Quota)
	}
	nk, _, err := svc.RotateKey(e.ctx, e.actor, k.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = svc.RevokeKey(e.ctx, e.actor, "key_missing", "")                         // refused: nothing sunk
	_, _ = svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "\x00"}) // refused
	e.spy.failAudit.Store(true)
	_, _ = svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "x"}) // not applied
	e.spy.failAudit.Store(false)

	mu.Lock()
	defer mu.Unlock()
	stored := e.entriesAfter(0)
	if len(sunk) != len(stored) || len(sunk) != 3 {
		t.Fatalf("sink got %d entries, the log has %d; want 3 and 3", len(sunk), len(stored))
	}
	for i := range sunk {
		if sunk[i].Seq != stored[i].Seq || sunk[i].Hash != stored[i].Hash || sunk[i].Action != stored[i].Action {
			t.Errorf("sunk entry %d = %d %s; stored %d %s", i, sunk[i].Seq, sunk[i].Action, stored[i].Seq, stored[i].Action)
		}
	}
	if len(asked) != 2 || asked[0] != k.ID || asked[1] != k.ID || nk.LimiterID != k.ID {
		t.Errorf("Usage asked for limiters %v; want the first key's id twice (creation and rotation)", asked)
	}
}
