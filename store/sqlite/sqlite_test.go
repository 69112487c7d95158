package sqlite_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
	"github.com/keygate/keygate/store/storetest"
)

func open(t testing.TB, opts ...sqlstore.Option) *sqlstore.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keygate.db")
	s, err := sqlite.Open(context.Background(), path, append([]sqlstore.Option{sqlstore.WithAuditHasher(storetest.Hasher)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keygate.Store { return open(t) })
}

func TestOpenTwiceMigratesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keygate.db")
	ctx := context.Background()
	if err := sqlite.Migrate(ctx, path); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	for range 2 {
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatalf("Open after Migrate: %v", err)
		}
		s.Close()
	}
}

func TestOpenUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "keygate.db")
	_, err := sqlite.Open(context.Background(), path)
	if err == nil {
		t.Fatal("Open in a missing directory = nil; want an error")
	}
	var ue *sqlstore.UnreachableError
	if !errorsAs(err, &ue) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), path) {
		t.Errorf("Open in a missing directory = %q (%T); want a one-line *UnreachableError naming the path", err, err)
	}
}

func TestNoHasherRefusesAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keygate.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	err = s.Update(ctx, func(tx keygate.Tx) error {
		return tx.AppendAudit(ctx, &keygate.AuditEntry{TS: time.Now(), Action: "key.create"})
	})
	if err == nil {
		t.Fatal("AppendAudit without a hasher = nil; want an error")
	}
	if seq, _, err := s.AuditHead(ctx); err != nil || seq != 0 {
		t.Errorf("AuditHead = %d, %v; want 0", seq, err)
	}
}

func TestReadsDoNotWaitForWrites(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(ctx, func(tx keygate.Tx) error {
			at := time.Now().UTC()
			if err := tx.CreatePlan(ctx, &keygate.Plan{Name: "p", CreatedAt: at, UpdatedAt: at}); err != nil {
				return err
			}
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.Plan(rctx, "p")
	if keygate.ErrorCode(err) != keygate.CodeNotFound {
		t.Errorf("Plan during an open write = %v; want NOT_FOUND without waiting", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Plan(ctx, "p"); err != nil {
		t.Errorf("Plan after commit: %v", err)
	}
}

func BenchmarkCreateKeys(b *testing.B) {
	storetest.BenchCreateKeys(b, open(b), 1000)
}

func BenchmarkKeyByHash(b *testing.B) {
	storetest.BenchKeyByHash(b, func(tb testing.TB) keygate.Store { return open(tb) })
}
