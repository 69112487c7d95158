// Package pgtest gives tests a throwaway PostgreSQL database.
//
// The server is the one at KEYGATE_TEST_POSTGRES_URL, default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable. When it cannot be reached the test
// is skipped, except under CI=true, where it fails: CI must run the PostgreSQL tests.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// DefaultURL is the server used when KEYGATE_TEST_POSTGRES_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL returns the URL of the test server (KEYGATE_TEST_POSTGRES_URL or DefaultURL).
func ServerURL() string {
	if u := os.Getenv("KEYGATE_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// URL creates an empty database with a random name on the test server, drops it when the test
// ends, and returns its URL.
func URL(t testing.TB) string {
	t.Helper()
	base := ServerURL()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: KEYGATE_TEST_POSTGRES_URL is not a URL: %v", err)
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		msg := "PostgreSQL test server " + u.Redacted() + " unreachable: " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %s", msg)
		}
		t.Skipf("pgtest: %s (set KEYGATE_TEST_POSTGRES_URL, or CI=true to fail instead of skip)", msg)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "keygate_test_" + hex.EncodeToString(b[:])
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		db.Close()
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}
