// Package sqlite opens keygate's embedded SQLite database (modernc.org/sqlite: pure Go, no cgo).
//
// The database runs in WAL mode with one writer connection, whose transactions begin IMMEDIATE
// (so write transactions are serialised and never fail half-way on a lock upgrade), and a pool of
// query-only reader connections, so reads never wait for writes.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keygate/keygate/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect is SQLite's: ? placeholders, no row locks (write transactions are serialised by
// BEGIN IMMEDIATE on the single writer connection), named locks are no-ops.
var Dialect = sqlstore.Dialect{
	Name:     "sqlite",
	Classify: classify,
}

func classify(err error) sqlstore.ErrKind {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return sqlstore.ErrOther
	}
	switch code := se.Code(); {
	case code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return sqlstore.ErrUnique
	case code == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return sqlstore.ErrForeignKey
	case code&0xff == sqlite3.SQLITE_BUSY || code&0xff == sqlite3.SQLITE_LOCKED:
		return sqlstore.ErrRetry
	}
	return sqlstore.ErrOther
}

// Page cache of each connection (SQLite's default is 2 MiB). The unique index on key hashes is
// written at random places, so with a small cache bulk creation slows to a crawl past a few
// hundred thousand keys. These are upper bounds; the cache grows only as pages are read.
const (
	writerCacheKiB = 64 << 10
	readerCacheKiB = 16 << 10
)

// busyTimeoutMS is how long a connection waits for another process's lock before SQLITE_BUSY.
const busyTimeoutMS = 5000

// dsn returns the modernc DSN of path with keygate's pragmas.
func dsn(path string, writer bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if writer {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", writerCacheKiB))
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
		q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", readerCacheKiB))
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + q.Encode()
}

// Open opens (creating if needed) the SQLite database at path and applies the migrations.
// ":memory:" opens a private in-memory database on a single connection (tests only: reads then
// share the writer connection).
func Open(ctx context.Context, path string, opts ...sqlstore.Option) (*sqlstore.Store, error) {
	o := sqlstore.Collect(opts)
	memory := path == ":memory:" || strings.Contains(path, "mode=memory")
	w, err := openDB(ctx, path, true, o)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, err
	}
	if memory {
		return sqlstore.New(w, w, Dialect, opts...), nil
	}
	r, err := openDB(ctx, path, false, o)
	if err != nil {
		w.Close()
		return nil, err
	}
	n := o.MaxOpenConns
	if n <= 0 {
		n = max(4, runtime.GOMAXPROCS(0))
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	return sqlstore.New(w, r, Dialect, opts...), nil
}

func openDB(ctx context.Context, path string, writer bool, o sqlstore.Options) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path, writer))
	if err != nil {
		return nil, unreachable(path, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, unreachable(path, err)
	}
	return db, nil
}

func unreachable(path string, err error) error {
	return &sqlstore.UnreachableError{
		Msg: fmt.Sprintf("cannot open SQLite database %q: %v", path, oneLine(err)),
		Err: err,
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Migrate applies the migrations to the database at path (keygate migrate).
func Migrate(ctx context.Context, path string) error {
	db, err := openDB(ctx, path, true, sqlstore.Collect(nil))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	return migrate(ctx, db)
}

func migrate(ctx context.Context, db *sql.DB) error {
	return sqlstore.Migrate(ctx, db, goose.DialectSQLite3, migrations, "sqlite")
}
