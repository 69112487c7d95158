// Package sqlstore implements keygate.Store once, on database/sql, for every SQL database keygate
// supports. What differs between databases (placeholders, row locks, advisory locks, how driver
// errors are recognised) is described by a Dialect; the SQL itself is shared. The packages
// store/sqlite and store/postgres open a database, apply their migrations and return a *Store.
//
// Storage conventions: times are BIGINT unix microseconds in UTC (callers truncate to µs so that
// what they read back equals what they wrote); lists, maps, windows and quotas are JSON TEXT (a nil
// slice or map is stored as null and reads back nil, an empty one reads back empty); key hashes
// are BLOB/BYTEA under a UNIQUE index, so a lookup by hash is one indexed read; lists are newest
// first (created_at DESC, id DESC) with an opaque cursor, base64url of the last row's sort key.
//
// Tables (the migrations of store/sqlite and store/postgres are the only SQL that differs):
//
//	consumers     soft-deleted (deleted_at); purge blanks name and email
//	plans         keyed by name
//	api_keys      state (active|disabled|revoked) is stored, "expired" derived from expires_at;
//	              limiter_id groups the keys of a rotation chain on the same counters
//	root_keys
//	audit_log     seq is the chain order; audit_head is its one-row head (seq, hash), locked by
//	              every append so that appends of all nodes are strictly ordered
//	idempotency   (scope, idem_key) unique
//	usage_daily   (key_id, day) → requests, with indexes on (limiter_id, day), (consumer_id, day)
//
// Update retries a transaction that failed on a serialization failure, a deadlock or a busy
// database (WithRetries, with jittered exponential backoff); every call honours its context.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate"
)

// ErrKind classifies a driver error for the store.
type ErrKind int

// Kinds of driver error a Dialect recognises.
const (
	ErrOther      ErrKind = iota
	ErrUnique             // unique or primary-key violation
	ErrForeignKey         // foreign-key violation
	ErrRetry              // serialization failure, deadlock, database busy: the transaction may be retried
	ErrInvalid            // a value the database cannot store (a NUL byte in text, an oversized index entry)
)

// Dialect is what differs between the SQL databases behind a Store.
type Dialect struct {
	// Name names the database in error messages ("sqlite", "postgres").
	Name string
	// Numbered placeholders ($1, $2, …) instead of ?.
	Numbered bool
	// ForUpdate reports whether SELECT … FOR UPDATE locks rows. Without it the database must
	// serialise write transactions by itself (SQLite's BEGIN IMMEDIATE).
	ForUpdate bool
	// LockSQL takes a transaction-scoped lock named by its one parameter; "" makes Tx.Lock a no-op
	// (write transactions are serialised anyway).
	LockSQL string
	// Classify recognises the driver's errors.
	Classify func(error) ErrKind
}

// Options configures a Store and the database it is opened on.
type Options struct {
	// AuditHasher chains audit entries. Nil refuses every AppendAudit, so that nothing is ever
	// appended unsigned.
	AuditHasher keygate.AuditHasher
	// MaxOpenConns bounds the connection pool (PostgreSQL, SQLite readers). Default 20 (PostgreSQL)
	// or 4 (SQLite readers).
	MaxOpenConns int
	// ConnectTimeout bounds connecting and the first ping at Open. Default 5s.
	ConnectTimeout time.Duration
	// Retries is how many times Update retries a transaction that failed on a serialization
	// failure or a busy database. Default 5.
	Retries int
}

// Option sets an Option of Open.
type Option func(*Options)

// WithAuditHasher sets the function that chains audit entries (SPEC §7).
func WithAuditHasher(h keygate.AuditHasher) Option { return func(o *Options) { o.AuditHasher = h } }

// WithMaxOpenConns bounds the connection pool.
func WithMaxOpenConns(n int) Option { return func(o *Options) { o.MaxOpenConns = n } }

// WithConnectTimeout bounds connecting at Open (default 5s).
func WithConnectTimeout(d time.Duration) Option { return func(o *Options) { o.ConnectTimeout = d } }

// WithRetries sets how many times Update retries a transaction that hit a serialization failure.
func WithRetries(n int) Option { return func(o *Options) { o.Retries = n } }

// Collect applies opts over the defaults.
func Collect(opts []Option) Options {
	o := Options{ConnectTimeout: 5 * time.Second, Retries: 5}
	for _, opt := range opts {
		opt(&o)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	return o
}

// UnreachableError reports that the database could not be opened or reached. Its message is one
// line and never holds a password.
type UnreachableError struct {
	Msg string
	Err error
}

func (e *UnreachableError) Error() string { return e.Msg }
func (e *UnreachableError) Unwrap() error { return e.Err }

// Store is a keygate.Store on a database/sql database.
type Store struct {
	reader
	db      *sql.DB // writes
	rdb     *sql.DB // reads outside transactions; may be db
	wstmts  *stmtDB // prepared statements of db
	opts    Options
	closers []func() error
}

var _ keygate.Store = (*Store)(nil)

// New returns a Store writing through db and reading through rdb (which may be db). The schema
// must already be migrated. Close closes both.
func New(db, rdb *sql.DB, d Dialect, opts ...Option) *Store {
	o := Collect(opts)
	if o.AuditHasher == nil {
		o.AuditHasher = func(string, *keygate.AuditEntry) (string, error) {
			return "", errors.New("no audit hasher configured")
		}
	}
	if rdb == nil {
		rdb = db
	}
	sq := &sqlText{d: &d}
	s := &Store{db: db, rdb: rdb, opts: o, wstmts: newStmtDB(db)}
	rstmts := s.wstmts
	if rdb != db {
		rstmts = newStmtDB(rdb)
		s.closers = append(s.closers, func() error { rstmts.close(); return nil }, rdb.Close)
	}
	s.reader = reader{q: rstmts, sq: sq}
	s.closers = append(s.closers, func() error { s.wstmts.close(); return nil }, db.Close)
	return s
}

// Dialect returns the store's dialect.
func (s *Store) Dialect() Dialect { return *s.sq.d }

// DB returns the database the store writes to, for packages that keep their own tables in it.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("%s: ping: %w", s.sq.d.Name, err)
	}
	return nil
}

// Update runs fn in one transaction, retrying it on serialization failures and a busy database.
func (s *Store) Update(ctx context.Context, fn func(keygate.Tx) error) error {
	return s.inTx(ctx, func(t *sql.Tx) error {
		return fn(&tx{reader: reader{q: stmtTx{t: t, db: s.wstmts}, sq: s.sq}, t: t, hasher: s.opts.AuditHasher})
	})
}

func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	backoff := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := s.runTx(ctx, fn)
		if err == nil || attempt >= s.opts.Retries || s.sq.d.Classify(err) != ErrRetry || ctx.Err() != nil {
			return err
		}
		// Full jitter, so that nodes that collided do not collide again in step.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		backoff *= 2
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func (s *Store) runTx(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	// After the transaction, with its connection back in the pool, prepare what it ran unprepared.
	defer s.wstmts.prepareMissing(ctx)
	t, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", s.sq.d.Name, err)
	}
	defer func() {
		if err != nil {
			_ = t.Rollback()
		}
	}()
	if err = fn(t); err != nil {
		return err
	}
	if err = t.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", s.sq.d.Name, err)
	}
	return nil
}

// AddUsage adds deltas to the durable daily counters in one transaction. Deltas of the same key
// and day are summed first, and rows are written in a fixed order so that concurrent batches
// of several nodes cannot deadlock.
func (s *Store) AddUsage(ctx context.Context, deltas []keygate.UsageDelta) error {
	type rowKey struct {
		key string
		day int64
	}
	sum := make(map[rowKey]*keygate.UsageDelta, len(deltas))
	order := make([]rowKey, 0, len(deltas))
	for i := range deltas {
		d := &deltas[i]
		if d.Requests == 0 {
			continue
		}
		k := rowKey{d.KeyID, dayMicros(d.Day)}
		if acc, ok := sum[k]; ok {
			acc.Requests += d.Requests
			continue
		}
		c := *d
		sum[k] = &c
		order = append(order, k)
	}
	if len(order) == 0 {
		return nil
	}
	sortRowKeys(order, func(a, b rowKey) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmpInt(a.day, b.day)
	})
	// Rows go in multi-row statements: at ten thousand keys a second, one statement per row
	// was a quarter of a busy server's CPU. Chunk shapes repeat (full chunks and one remainder),
	// so the prepared-statement cache stays small.
	return s.inTx(ctx, func(t *sql.Tx) error {
		for start := 0; start < len(order); start += usageChunk {
			chunk := order[start:min(start+usageChunk, len(order))]
			args := make([]any, 0, 5*len(chunk))
			for _, k := range chunk {
				d := sum[k]
				args = append(args, d.KeyID, k.day, d.ConsumerID, d.LimiterID, d.Requests)
			}
			if _, err := t.ExecContext(ctx, s.sq.get(usageInsert(len(chunk))), args...); err != nil {
				return fmt.Errorf("%s: add usage: %w", s.sq.d.Name, err)
			}
		}
		return nil
	})
}

// usageChunk rows per INSERT keep statements well under both databases' parameter limits.
const usageChunk = 200

var usageInserts sync.Map // rows → statement text

func usageInsert(rows int) string {
	if q, ok := usageInserts.Load(rows); ok {
		return q.(string)
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO usage_daily (key_id, day, consumer_id, limiter_id, requests) VALUES `)
	for i := 0; i < rows; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?)")
	}
	b.WriteString(` ON CONFLICT (key_id, day) DO UPDATE SET requests = usage_daily.requests + excluded.requests`)
	usageInserts.Store(rows, b.String())
	return b.String()
}

// TouchKeys records last_used_at for keys in one transaction; a time never moves backwards.
func (s *Store) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	ids := make([]string, 0, len(lastUsed))
	for id := range lastUsed {
		ids = append(ids, id)
	}
	sortRowKeys(ids, strings.Compare)
	q := s.sq.get(`UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`)
	return s.inTx(ctx, func(t *sql.Tx) error {
		stmt, err := t.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("%s: touch keys: %w", s.sq.d.Name, err)
		}
		defer stmt.Close()
		for _, id := range ids {
			at := micros(lastUsed[id])
			if _, err := stmt.ExecContext(ctx, at, id, at); err != nil {
				return fmt.Errorf("%s: touch keys: %w", s.sq.d.Name, err)
			}
		}
		return nil
	})
}

// PurgeIdempotency deletes idempotency records created before t.
func (s *Store) PurgeIdempotency(ctx context.Context, before time.Time) error {
	_, err := s.db.ExecContext(ctx, s.sq.get(`DELETE FROM idempotency WHERE created_at < ?`), micros(before))
	if err != nil {
		return fmt.Errorf("%s: purge idempotency: %w", s.sq.d.Name, err)
	}
	return nil
}

// scanAuditPage is how many entries ScanAudit reads per query.
const scanAuditPage = 500

// ScanAudit calls fn for every audit entry in ascending seq order. It reads a page at a time
// and holds no connection while fn runs, so fn may use the store.
func (s *Store) ScanAudit(ctx context.Context, fn func(*keygate.AuditEntry) error) error {
	q := s.sq.get(`SELECT ` + auditColumns + ` FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`)
	var after int64
	for {
		page, err := s.auditQuery(ctx, q, after, scanAuditPage)
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < scanAuditPage {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}

// sqlText rewrites the shared SQL (written with ? placeholders) for the dialect, once per text.
type sqlText struct {
	d     *Dialect
	cache sync.Map // string → string
}

func (s *sqlText) get(q string) string {
	if !s.d.Numbered {
		return q
	}
	if v, ok := s.cache.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteByte(q[i])
	}
	s.cache.Store(q, b.String())
	return b.String()
}

// mapErr turns a driver error into the store's codes: a missing row is NotFound, a unique or
// foreign-key violation Conflict; other errors are wrapped with what was being done.
func (s *sqlText) mapErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return keygate.Errorf(keygate.CodeNotFound, "%s not found", what)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	switch s.d.Classify(err) {
	case ErrUnique:
		return keygate.Errorf(keygate.CodeConflict, "%s already exists", what)
	case ErrForeignKey:
		return keygate.Errorf(keygate.CodeConflict, "%s refers to an object that does not exist", what)
	case ErrInvalid:
		return keygate.Errorf(keygate.CodeBadRequest, "%s: a value cannot be stored (invalid character or too long)", what)
	}
	return fmt.Errorf("%s: %s: %w", s.d.Name, what, err)
}
