package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/keygate/keygate/audit"
	"github.com/keygate/keygate/secretkey"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
)

// database is one fresh, throwaway database: a SQLite file in a temporary directory or a
// PostgreSQL database with a random name. drop removes it.
type database struct {
	kind string // sqlite or postgres
	url  string // KEYGATE_DATABASE_URL
	drop func() error
}

// newDatabase creates an empty database. PostgreSQL databases are created on the server at
// pgURL (a URL of an existing database, used only to CREATE and DROP ours).
func newDatabase(ctx context.Context, kind, dir, pgURL string) (*database, error) {
	name := "keygate_bench_" + randomHex(6)
	switch kind {
	case "sqlite":
		path := filepath.Join(dir, name+".db")
		return &database{kind: kind, url: "sqlite:" + path, drop: func() error {
			var errs []error
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		}}, nil
	case "postgres":
		u, err := url.Parse(pgURL)
		if err != nil {
			return nil, fmt.Errorf("-pg: %w", err)
		}
		admin, err := sql.Open("pgx", pgURL)
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(cctx, "CREATE DATABASE "+name); err != nil {
			admin.Close()
			return nil, fmt.Errorf("create database %s on %s: %w", name, u.Redacted(), err)
		}
		u.Path = "/" + name
		return &database{kind: kind, url: u.String(), drop: func() error {
			defer admin.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				return fmt.Errorf("drop database %s: %w", name, err)
			}
			return nil
		}}, nil
	}
	return nil, fmt.Errorf("unknown database %q (want sqlite or postgres)", kind)
}

// open opens the database the way keygate serve does: migrations applied, the audit chain keyed
// by the same secret key. sqlitePragmas (comma-separated, e.g. "cache_size(-262144)") are added
// to SQLite's own.
func (d *database) open(ctx context.Context, sk secretkey.Key, sqlitePragmas string) (*sqlstore.Store, error) {
	opt := sqlstore.WithAuditHasher(audit.Hasher(sk.Derive("audit")))
	if path, ok := strings.CutPrefix(d.url, "sqlite:"); ok {
		if sqlitePragmas != "" {
			q := url.Values{}
			for _, p := range strings.Split(sqlitePragmas, ",") {
				q.Add("_pragma", strings.TrimSpace(p))
			}
			path += "?" + q.Encode()
		}
		return sqlite.Open(ctx, path, opt)
	}
	return postgres.Open(ctx, d.url, opt)
}

// server is a running keygate serve process with only the admin listener.
type server struct {
	cmd   *exec.Cmd
	addr  string
	log   string
	done  chan error
	start time.Time
}

// startServer runs bin serve on db, pinned to cpu ("" = not pinned), and waits until /healthz
// answers.
func startServer(ctx context.Context, bin, dir, cpu string, db *database, secretHex, rootKey string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "serve-"+randomHex(4)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	name, args := bin, []string{"serve"}
	if cpu != "" {
		name, args = "taskset", append([]string{"-c", cpu, bin}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Nothing of the caller's KEYGATE_* environment leaks in (a Redis URL or a config file would
	// change what is measured).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"KEYGATE_DATABASE_URL="+db.url,
		"KEYGATE_SECRET_KEY="+secretHex,
		"KEYGATE_ROOT_KEY="+rootKey,
		"KEYGATE_ADMIN_ADDR="+addr,
		"KEYGATE_PROXY_ADDR=",
		"KEYGATE_PORTAL_ADDR=",
		"KEYGATE_DATA_DIR="+dir,
		"KEYGATE_LOG_FORMAT=text",
	)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &server{cmd: cmd, addr: addr, log: logPath, done: make(chan error, 1), start: time.Now()}
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("keygate serve exited at start (%v):\n%s", err, tail(logPath, 20))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("keygate serve not healthy after 60s:\n%s", tail(logPath, 20))
		}
	}
}

// stop sends SIGTERM (a clean stop flushes usage) and kills the process after 30s.
func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			return fmt.Errorf("keygate serve: %v:\n%s", err, tail(s.log, 20))
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("keygate serve did not stop within 30s of SIGTERM; killed")
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
