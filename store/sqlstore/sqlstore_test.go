package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
)

var errTransient = errors.New("transient")

// openWithDialect opens a migrated SQLite database under a dialect that treats errTransient as
// a serialization failure.
func openWithDialect(t *testing.T, opts ...sqlstore.Option) *sqlstore.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "k.db")
	ctx := context.Background()
	if err := sqlite.Migrate(ctx, path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	d := sqlite.Dialect
	d.Classify = func(err error) sqlstore.ErrKind {
		if errors.Is(err, errTransient) {
			return sqlstore.ErrRetry
		}
		return sqlstore.ErrOther
	}
	s := sqlstore.New(db, nil, d, opts...)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestUpdateRetries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		retries  int
		failures int
		wantErr  bool
		wantRuns int
	}{
		{"succeeds after two failures", 5, 2, false, 3},
		{"gives up after the retries", 2, 10, true, 3},
		{"no retries", 0, 1, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openWithDialect(t, sqlstore.WithRetries(tc.retries))
			ctx := context.Background()
			runs := 0
			err := s.Update(ctx, func(tx keygate.Tx) error {
				runs++
				at := time.Now().UTC()
				if err := tx.CreatePlan(ctx, &keygate.Plan{Name: "p", CreatedAt: at, UpdatedAt: at}); err != nil {
					return err
				}
				if runs <= tc.failures {
					return errTransient
				}
				return nil
			})
			if (err != nil) != tc.wantErr || runs != tc.wantRuns {
				t.Errorf("Update = %v after %d runs; want error %v after %d runs", err, runs, tc.wantErr, tc.wantRuns)
			}
			_, err = s.Plan(ctx, "p")
			if got := err == nil; got == tc.wantErr {
				t.Errorf("Plan after Update: %v", err)
			}
		})
	}
}

func TestUpdateRetryHonoursContext(t *testing.T) {
	s := openWithDialect(t, sqlstore.WithRetries(1000))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Update(ctx, func(keygate.Tx) error { return errTransient })
	if !errors.Is(err, errTransient) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Update = %v; want the transient error or the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Update kept retrying for %v past its context", d)
	}
}
