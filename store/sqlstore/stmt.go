package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

var errNoStmt = errors.New("no prepared statement")

// stmtDB runs queries through statements prepared once per query text (and, by database/sql,
// once per connection). SQLite otherwise compiles every query anew, which costs more than
// running it: a third of a KeyByHash was spent in SQLite's parser.
//
// Inside a transaction a statement is only used if it is already prepared: preparing takes a
// connection of the pool, and the writer pool of SQLite has one, held by the transaction. A
// query missing there runs unprepared and is prepared after the transaction (prepareMissing).
type stmtDB struct {
	db      *sql.DB
	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	missing map[string]bool
}

func newStmtDB(db *sql.DB) *stmtDB {
	return &stmtDB{db: db, stmts: map[string]*sql.Stmt{}, missing: map[string]bool{}}
}

// maxStmts bounds the statements kept; queries beyond it run unprepared.
const maxStmts = 512

// prepared returns the statement of q if there is one, and otherwise notes q for prepareMissing.
func (s *stmtDB) prepared(q string) *sql.Stmt {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stmts[q]
	if !ok && s.stmts != nil && len(s.stmts)+len(s.missing) < maxStmts {
		s.missing[q] = true
	}
	return st
}

// prepareMissing prepares the queries that transactions ran unprepared.
func (s *stmtDB) prepareMissing(ctx context.Context) {
	s.mu.Lock()
	var qs []string
	for q := range s.missing {
		qs = append(qs, q)
	}
	clear(s.missing)
	s.mu.Unlock()
	for _, q := range qs {
		_, _ = s.stmt(ctx, q) // on failure the query keeps running unprepared
	}
}

func (s *stmtDB) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	s.mu.Lock()
	st, ok := s.stmts[q]
	full := len(s.stmts) >= maxStmts || s.stmts == nil
	s.mu.Unlock()
	if ok {
		return st, nil
	}
	if full {
		return nil, errNoStmt
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.stmts[q]; ok || s.stmts == nil {
		st.Close()
		if !ok {
			return nil, errNoStmt
		}
		return prev, nil
	}
	s.stmts[q] = st
	return st, nil
}

func (s *stmtDB) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
}

func (s *stmtDB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, q)
	if errors.Is(err, errNoStmt) {
		return s.db.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (s *stmtDB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(ctx, q)
	if errors.Is(err, errNoStmt) {
		return s.db.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (s *stmtDB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := s.stmt(ctx, q)
	if err != nil {
		// The same query unprepared reports the same error through the Row.
		return s.db.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// cached returns the statement already prepared for q, without preparing one.
func (s *stmtDB) cached(q string) *sql.Stmt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stmts[q]
}

// stmtTx runs a transaction's queries through the prepared statements of its database where
// they exist, and unprepared otherwise.
type stmtTx struct {
	t  *sql.Tx
	db *stmtDB
}

func (s stmtTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := s.db.prepared(q); st != nil {
		return s.t.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return s.t.ExecContext(ctx, q, args...)
}

func (s stmtTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := s.db.prepared(q); st != nil {
		return s.t.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return s.t.QueryContext(ctx, q, args...)
}

func (s stmtTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := s.db.prepared(q); st != nil {
		return s.t.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return s.t.QueryRowContext(ctx, q, args...)
}
