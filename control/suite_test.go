package control_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/audit"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/postgres/pgtest"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
)

// auditKey keys the audit chain of every store under test.
var auditKey = []byte("control-test-audit-key-0123456789abcdef")

// base is the fake clock's starting time.
var base = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

// backend is a database the suite runs against.
type backend struct {
	name string
	// fresh returns the address of a new, empty database that is dropped when t ends.
	fresh func(t *testing.T) string
	// open opens the database at addr.
	open func(ctx context.Context, addr string, opts ...sqlstore.Option) (*sqlstore.Store, error)
}

func TestSQLite(t *testing.T) {
	runSuite(t, backend{
		name:  "sqlite",
		fresh: func(t *testing.T) string { return filepath.Join(t.TempDir(), "k.db") },
		open:  sqlite.Open,
	})
}

func TestPostgres(t *testing.T) {
	pgtest.URL(t) // skips (or fails under CI=true) once when the server is unreachable
	runSuite(t, backend{
		name:  "postgres",
		fresh: func(t *testing.T) string { return pgtest.URL(t) },
		open:  postgres.Open,
	})
}

// runSuite runs every control-plane test on its own fresh database of b, in parallel.
func runSuite(t *testing.T, b backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"EffectiveSettings", testEffectiveSettings},
		{"ScopeCeilingAndReferences", testScopeCeilingAndReferences},
		{"KeyStates", testKeyStates},
		{"KeyListing", testKeyListing},
		{"ExpiryNormalised", testExpiryNormalised},
		{"Rotation", testRotation},
		{"RotationConflicts", testRotationConflicts},
		{"RevokeRace", testRevokeRace},
		{"Publishable", testPublishable},
		{"Validation", testValidation},
		{"DeleteConsumer", testDeleteConsumer},
		{"PurgeAfterDelete", testPurgeAfterDelete},
		{"DeleteConsumerRace", testDeleteConsumerRace},
		{"ConsumerPatchRace", testConsumerPatchRace},
		{"Plans", testPlans},
		{"ConfigPlans", testConfigPlans},
		{"ConfigPlansConcurrent", testConfigPlansConcurrent},
		{"PlanRace", testPlanRace},
		{"PlanDeleteRace", testPlanDeleteRace},
		{"RootKeys", testRootKeys},
		{"RootKeyAcrossNodes", testRootKeyAcrossNodes},
		{"RootKeyRevokeDuringRead", testRootKeyRevokeDuringRead},
		{"EnsureRootKey", testEnsureRootKey},
		{"BootstrapRootKey", testBootstrapRootKey},
		{"BootstrapConcurrent", testBootstrapConcurrent},
		{"RevokeLeaked", testRevokeLeaked},
		{"AuditTrail", testAuditTrail},
		{"AuditTamper", testAuditTamper},
		{"AuditWriteFails", testAuditWriteFails},
		{"SinkAndUsage", testSinkAndUsage},
		{"PlaintextNeverStored", testPlaintextNeverStored},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newEnv(t, b))
		})
	}
}

// env is one test's world: a fresh store, a fake clock, a recorder of invalidations and events,
// and a Service over them.
type env struct {
	t     *testing.T
	ctx   context.Context
	b     backend
	addr  string
	raw   *sqlstore.Store
	spy   *spyStore
	clock *fakeClock
	rec   *recorder
	svc   *control.Service
	actor control.Actor
}

func newEnv(t *testing.T, b backend) *env {
	t.Helper()
	ctx := context.Background()
	addr := b.fresh(t)
	e := &env{t: t, ctx: ctx, b: b, addr: addr, clock: &fakeClock{t: base}, rec: &recorder{},
		actor: control.Actor{ID: "root_key:rk_tester", IP: "203.0.113.7"}}
	e.raw = e.open()
	e.spy = &spyStore{Store: e.raw}
	e.svc = e.newService(e.spy)
	return e
}

// open opens another store (another node) on the env's database.
func (e *env) open() *sqlstore.Store {
	e.t.Helper()
	s, err := e.b.open(e.ctx, e.addr, sqlstore.WithAuditHasher(audit.Hasher(auditKey)))
	if err != nil {
		e.t.Fatalf("open %s: %v", e.b.name, err)
	}
	e.t.Cleanup(func() { s.Close() })
	return s
}

func (e *env) newService(s keygate.Store) *control.Service {
	return control.New(control.Options{Store: s, Now: e.clock.Now, AuditKey: auditKey,
		Invalidator: e.rec, Events: e.rec, Logger: slog.New(slog.DiscardHandler)})
}

// q rewrites a query written with ? placeholders for the env's dialect.
func (e *env) q(query string) string {
	if !e.raw.Dialect().Numbered {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (e *env) exec(query string, args ...any) {
	e.t.Helper()
	if _, err := e.raw.DB().ExecContext(e.ctx, e.q(query), args...); err != nil {
		e.t.Fatalf("exec %s: %v", query, err)
	}
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.raw.DB().QueryRowContext(e.ctx, e.q(query), args...).Scan(&n); err != nil {
		e.t.Fatalf("query %s: %v", query, err)
	}
	return n
}

func (e *env) plan(in control.PlanCreate) *keygate.Plan {
	e.t.Helper()
	p, err := e.svc.CreatePlan(e.ctx, e.actor, in)
	if err != nil {
		e.t.Fatalf("CreatePlan(%s): %v", in.Name, err)
	}
	return p
}

func (e *env) consumer(plan string) *keygate.Consumer {
	e.t.Helper()
	c, err := e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "Acme", Email: "dev@acme.example", Plan: plan})
	if err != nil {
		e.t.Fatalf("CreateConsumer(plan %q): %v", plan, err)
	}
	return c
}

func (e *env) key(in control.KeyCreate) (*keygate.Key, string) {
	e.t.Helper()
	k, plaintext, err := e.svc.CreateKey(e.ctx, e.actor, in)
	if err != nil {
		e.t.Fatalf("CreateKey(%+v): %v", in, err)
	}
	return k, plaintext
}

func (e *env) get(id string) *keygate.Key {
	e.t.Helper()
	k, err := e.svc.Key(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Key(%s): %v", id, err)
	}
	return k
}

// head returns the newest audit seq.
func (e *env) head() int64 {
	e.t.Helper()
	h, err := e.svc.AuditHead(e.ctx)
	if err != nil {
		e.t.Fatalf("AuditHead: %v", err)
	}
	return h.Seq
}

// entriesAfter returns the audit entries with seq > after, oldest first.
func (e *env) entriesAfter(after int64) []*keygate.AuditEntry {
	e.t.Helper()
	var out []*keygate.AuditEntry
	err := e.raw.ScanAudit(e.ctx, func(a *keygate.AuditEntry) error {
		if a.Seq > after {
			out = append(out, a)
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("ScanAudit: %v", err)
	}
	return out
}

func (e *env) verifyAudit() *control.AuditVerification {
	e.t.Helper()
	v, err := e.svc.VerifyAudit(e.ctx)
	if err != nil {
		e.t.Fatalf("VerifyAudit: %v", err)
	}
	return v
}

// wantErr fails unless err has code and its message contains every one of words.
func wantErr(t *testing.T, what string, err error, code string, words ...string) {
	t.Helper()
	if got := keygate.ErrorCode(err); got != code {
		t.Errorf("%s: error %v (code %q); want code %s", what, err, got, code)
		return
	}
	for _, w := range words {
		if !strings.Contains(keygate.ErrorMessage(err), w) {
			t.Errorf("%s: error %q does not name %q", what, keygate.ErrorMessage(err), w)
		}
	}
}

func dur(d time.Duration) *keygate.Duration { v := keygate.Duration(d); return &v }

func ptr[T any](v T) *T { return &v }

// fakeClock is the injected clock: tests move it instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recorder records invalidations and events.
type recorder struct {
	mu        sync.Mutex
	keys      []keyChange
	consumers []string
	plans     []string
	roots     []keyChange
	events    []event
}

type keyChange struct {
	id   string
	hash string
}

type event struct {
	typ  string
	data map[string]any
}

func (r *recorder) KeyChanged(id string, hash []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = append(r.keys, keyChange{id, string(hash)})
}

func (r *recorder) ConsumerChanged(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.consumers = append(r.consumers, id)
}

func (r *recorder) PlanChanged(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.plans = append(r.plans, name)
}

func (r *recorder) RootKeyChanged(id string, hash []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roots = append(r.roots, keyChange{id, string(hash)})
}

func (r *recorder) Emit(_ context.Context, typ string, data map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{typ, data})
}

// snapshot returns how many of each have been recorded, to look only at what a call adds.
func (r *recorder) snapshot() recorderMark {
	r.mu.Lock()
	defer r.mu.Unlock()
	return recorderMark{len(r.keys), len(r.consumers), len(r.plans), len(r.roots), len(r.events)}
}

type recorderMark struct{ keys, consumers, plans, roots, events int }

func (r *recorder) keysSince(m recorderMark) []keyChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]keyChange(nil), r.keys[m.keys:]...)
}

func (r *recorder) plansSince(m recorderMark) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.plans[m.plans:]...)
}

func (r *recorder) eventsSince(m recorderMark) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events[m.events:]...)
}

var _ control.Invalidator = (*recorder)(nil)
var _ keygate.Events = (*recorder)(nil)

// spyStore counts root-key reads and can make every audit append fail.
type spyStore struct {
	keygate.Store
	rootReads atomic.Int64
	failAudit atomic.Bool
	// afterRootRead, when set, runs after a root-key read and before its result is returned.
	afterRootRead atomic.Pointer[func()]
}

func (s *spyStore) RootKeyByHash(ctx context.Context, hash []byte) (*keygate.RootKey, error) {
	s.rootReads.Add(1)
	rk, err := s.Store.RootKeyByHash(ctx, hash)
	if fn := s.afterRootRead.Load(); fn != nil {
		(*fn)()
	}
	return rk, err
}

func (s *spyStore) Update(ctx context.Context, fn func(keygate.Tx) error) error {
	return s.Store.Update(ctx, func(tx keygate.Tx) error {
		if s.failAudit.Load() {
			tx = failingAuditTx{tx}
		}
		return fn(tx)
	})
}

// failingAuditTx is a transaction whose audit log cannot be written.
type failingAuditTx struct{ keygate.Tx }

func (failingAuditTx) AppendAudit(context.Context, *keygate.AuditEntry) error {
	return errors.New("audit_log: disk full")
}
