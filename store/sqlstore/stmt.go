package sqlstore

import (
	"context"
	"database/sql"
	"sync"
)

// stmtDB runs queries through statements prepared once per query text (and, by database/sql,
// once per connection). SQLite otherwise compiles every query anew, which costs more than
// running it: a third of a KeyByHash was spent in SQLite's parser.
type stmtDB struct {
	db    *sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func newStmtDB(db *sql.DB) *stmtDB { return &stmtDB{db: db, stmts: map[string]*sql.Stmt{}} }

func (s *stmtDB) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	s.mu.Lock()
	st, ok := s.stmts[q]
	s.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.stmts[q]; ok {
		st.Close()
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
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (s *stmtDB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(ctx, q)
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

// stmtTx runs a transaction's queries through the statements of the database it belongs to when
// they are already prepared. It never prepares on the database itself: the transaction may hold
// the pool's only connection (SQLite's single writer), and preparing would wait for it forever.
type stmtTx struct {
	t  *sql.Tx
	db *stmtDB
}

func (s stmtTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := s.db.cached(q); st != nil {
		return s.t.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return s.t.ExecContext(ctx, q, args...)
}

func (s stmtTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := s.db.cached(q); st != nil {
		return s.t.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return s.t.QueryContext(ctx, q, args...)
}

func (s stmtTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := s.db.cached(q); st != nil {
		return s.t.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return s.t.QueryRowContext(ctx, q, args...)
}
