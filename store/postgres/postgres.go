// Package postgres opens keygate's PostgreSQL database (pgx through database/sql), for clusters of
// several keygate nodes sharing one database (SPEC §10).
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/keygate/keygate/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrateLockID is the session advisory lock held while migrating, so that nodes starting
// together apply the migrations once, one after the other.
const migrateLockID int64 = 0x6b6579676174 // "keygat"

// Default pool limits.
const (
	defaultMaxOpenConns = 20
	connMaxIdleTime     = 5 * time.Minute
	connMaxLifetime     = 30 * time.Minute
)

// Dialect is PostgreSQL's: $n placeholders, SELECT … FOR UPDATE, transaction-scoped advisory
// locks for named locks.
var Dialect = sqlstore.Dialect{
	Name:      "postgres",
	Numbered:  true,
	ForUpdate: true,
	LockSQL:   "SELECT pg_advisory_xact_lock(hashtext(?))",
	Classify:  classify,
}

func classify(err error) sqlstore.ErrKind {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return sqlstore.ErrOther
	}
	switch pe.Code {
	case "23505": // unique_violation
		return sqlstore.ErrUnique
	case "23503": // foreign_key_violation
		return sqlstore.ErrForeignKey
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return sqlstore.ErrRetry
	case "22021", "22P05", "54000": // character_not_in_repertoire (NUL), untranslatable_character, program_limit_exceeded
		return sqlstore.ErrInvalid
	}
	return sqlstore.ErrOther
}

// Open connects to the PostgreSQL database at url (postgres://…), applies the migrations under an
// advisory lock and returns the store. An unreachable database is an *sqlstore.UnreachableError
// with a one-line message that never holds the password.
func Open(ctx context.Context, url string, opts ...sqlstore.Option) (*sqlstore.Store, error) {
	o := sqlstore.Collect(opts)
	db, err := openDB(ctx, url, o)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return sqlstore.New(db, db, Dialect, opts...), nil
}

// Migrate applies the migrations to the database at url (keygate migrate).
func Migrate(ctx context.Context, url string) error {
	db, err := openDB(ctx, url, sqlstore.Collect(nil))
	if err != nil {
		return err
	}
	defer db.Close()
	return migrate(ctx, db)
}

func openDB(ctx context.Context, url string, o sqlstore.Options) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, errors.New(parseError(url, err))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = o.ConnectTimeout
	}
	db := stdlib.OpenDB(*cfg)
	n := o.MaxOpenConns
	if n <= 0 {
		n = defaultMaxOpenConns
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(connMaxIdleTime)
	db.SetConnMaxLifetime(connMaxLifetime)
	pctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, &sqlstore.UnreachableError{
			Msg: fmt.Sprintf("cannot connect to PostgreSQL at %s:%d (database %q, user %q): %s",
				cfg.Host, cfg.Port, cfg.Database, cfg.User, cause(err)),
			Err: err,
		}
	}
	return db, nil
}

// parseError explains why url does not parse, without quoting it: pgx masks passwords only on
// a best-effort basis ("cannot parse `URL`: reason").
func parseError(raw string, err error) string {
	const msg = "invalid PostgreSQL URL"
	detail := oneLine(err)
	if i := strings.LastIndex(detail, "`: "); i >= 0 {
		detail = detail[i+3:]
	}
	if pw := password(raw); detail == "" || strings.Contains(detail, "://") || pw != "" && strings.Contains(detail, pw) {
		return msg
	}
	return msg + ": " + detail
}

// password returns the password part of a URL's user information, found without parsing.
func password(raw string) string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// cause returns the innermost useful text of a connection error on one line.
func cause(err error) string {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && ce.Unwrap() != nil {
		err = ce.Unwrap()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return oneLine(err)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func migrate(ctx context.Context, db *sql.DB) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrateLockID); err != nil {
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must be released even when ctx is done. Closing the
		// connection would release it too, but it goes back to the pool.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, uerr := conn.ExecContext(uctx, `SELECT pg_advisory_unlock($1)`, migrateLockID); uerr != nil {
			_ = conn.Raw(func(any) error { return errors.New("discard") }) // make sure the session ends
			err = errors.Join(err, fmt.Errorf("postgres: migrate: unlock: %w", uerr))
		}
	}()
	return sqlstore.Migrate(ctx, db, goose.DialectPostgres, migrations, "postgres")
}
