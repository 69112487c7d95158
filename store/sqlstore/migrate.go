package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

// SchemaTable records the applied migrations (goose's version table) in both databases.
const SchemaTable = "keygate_schema_version"

// Migrate applies the SQL migrations under "migrations" in fsys that db has not seen yet, with
// goose's dialect; name prefixes the errors ("sqlite", "postgres").
func Migrate(ctx context.Context, db *sql.DB, dialect goose.Dialect, fsys fs.FS, name string) error {
	sub, err := fs.Sub(fsys, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(dialect, db, sub,
		goose.WithTableName(SchemaTable), goose.WithLogger(goose.NopLogger()), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("%s: migrations: %w", name, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("%s: migrate: %w", name, err)
	}
	return nil
}
