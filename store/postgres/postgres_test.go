package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/postgres/pgtest"
	"github.com/keygate/keygate/store/sqlstore"
	"github.com/keygate/keygate/store/storetest"
)

func open(t testing.TB) *sqlstore.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), pgtest.URL(t), sqlstore.WithAuditHasher(storetest.Hasher), sqlstore.WithMaxOpenConns(10))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keygate.Store { return open(t) })
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := postgres.Open(ctx, url)
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	if err := postgres.Migrate(ctx, url); err != nil {
		t.Errorf("Migrate after Open: %v", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	const url = "postgres://keygate:s3cretpw@127.0.0.1:1/keygate?sslmode=disable&connect_timeout=2"
	_, err := postgres.Open(context.Background(), url)
	if err == nil {
		t.Fatal("Open of a closed port = nil; want an error")
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cretpw") || strings.Contains(msg, "\n") || !strings.Contains(msg, "127.0.0.1:1") {
		t.Errorf("Open of a closed port = %q; want one line naming the address, without the password", msg)
	}
	_, err = postgres.Open(context.Background(), "postgres://u:s3cretpw@host:notaport/db")
	if err == nil || strings.Contains(err.Error(), "s3cretpw") {
		t.Errorf("Open of a bad URL = %v; want an error without the password", err)
	}
}

func BenchmarkCreateKeys(b *testing.B) {
	storetest.BenchCreateKeys(b, open(b), 1000)
}

func BenchmarkKeyByHash(b *testing.B) {
	storetest.BenchKeyByHash(b, func(tb testing.TB) keygate.Store { return open(tb) })
}

func TestUnstorableTextIsBadRequest(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	at := time.Now().UTC()
	err := s.Update(ctx, func(tx keygate.Tx) error {
		return tx.CreateConsumer(ctx, &keygate.Consumer{ID: "con_nul", Name: "a\x00b", CreatedAt: at, UpdatedAt: at})
	})
	if code := keygate.ErrorCode(err); code != keygate.CodeBadRequest {
		t.Errorf("CreateConsumer with a NUL byte = %v (code %s); want BAD_REQUEST", err, code)
	}
}
