package storetest

import (
	"context"
	"database/sql"
	"testing"

	"github.com/keygate/keygate/store/sqlstore"
)

// rawReader is a store whose rows the suite can read directly, to check what is erased from
// storage (a purged consumer's name and email), which the Reader interface cannot show.
type rawReader interface {
	DB() *sql.DB
	Dialect() sqlstore.Dialect
}

func rawNameEmail(t *testing.T, s rawReader, id string) (name, email string) {
	t.Helper()
	q := `SELECT name, email FROM consumers WHERE id = ?`
	if s.Dialect().Numbered {
		q = `SELECT name, email FROM consumers WHERE id = $1`
	}
	if err := s.DB().QueryRowContext(context.Background(), q, id).Scan(&name, &email); err != nil {
		t.Fatalf("read consumer %s: %v", id, err)
	}
	return name, email
}
