package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/store/postgres/pgtest"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines to write while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// node is keygate serve running in-process.
type node struct {
	addrs  Addrs
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan error
	dir    string
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// generateRootKey runs `keygate root-key generate` and returns the key it prints.
func generateRootKey(t *testing.T) string {
	t.Helper()
	var out strings.Builder
	if err := run(context.Background(), []string{"root-key", "generate"}, env(nil), &out, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out.String())
}

// adminOnly is the environment of a node on a SQLite database in dir that serves only the admin
// API, on a random port, with the root key rk.
func adminOnly(dir, rk string) map[string]string {
	return map[string]string{"KEYGATE_DATABASE_URL": "sqlite:" + filepath.Join(dir, "k.db"), "KEYGATE_ROOT_KEY": rk,
		"KEYGATE_PROXY_ADDR": "", "KEYGATE_ADMIN_ADDR": "127.0.0.1:0", "KEYGATE_PORTAL_ADDR": ""}
}

// start runs keygate serve with the given environment (random ports unless set).
func start(t *testing.T, vars map[string]string) *node {
	t.Helper()
	dir := t.TempDir()
	base := map[string]string{
		"KEYGATE_DATABASE_URL": "sqlite:" + filepath.Join(dir, "keygate.db"),
		"KEYGATE_PROXY_ADDR":   "127.0.0.1:0",
		"KEYGATE_ADMIN_ADDR":   "127.0.0.1:0",
		"KEYGATE_PORTAL_ADDR":  "",
	}
	for k, v := range vars {
		base[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1), dir: dir}
	ready := make(chan Addrs, 1)
	go func() { n.done <- run(ctx, []string{"serve"}, env(base), io.Discard, n.stderr, ready) }()
	select {
	case n.addrs = <-ready:
	case err := <-n.done:
		cancel()
		t.Fatalf("serve exited early: %v\n%s", err, n.stderr)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("serve did not start\n%s", n.stderr)
	}
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *node) stop(t *testing.T) error {
	t.Helper()
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok {
			close(n.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	return nil
}

func (n *node) rootKey(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "keygate-root-key.txt"))
	if err != nil {
		t.Fatalf("root key file: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func TestZeroConfigLifecycle(t *testing.T) {
	n := start(t, nil)
	// The generated root key is in a 0600 file; stderr names the file, never the key.
	fi, err := os.Stat(filepath.Join(n.dir, "keygate-root-key.txt"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	fi, err = os.Stat(filepath.Join(n.dir, "keygate-secret.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	rk := n.rootKey(t)
	if strings.Contains(n.stderr.String(), rk) {
		t.Fatal("stderr shows the root key")
	}
	if !strings.Contains(n.stderr.String(), "keygate-root-key.txt") {
		t.Fatalf("stderr does not say where the root key is:\n%s", n.stderr)
	}

	ctx := context.Background()
	c := admin.NewClient("http://"+n.addrs.Admin, rk)
	con, err := c.CreateConsumer(ctx, control.ConsumerCreate{Name: "Acme", Email: "dev@acme.test"})
	if err != nil {
		t.Fatal(err)
	}
	var plaintexts []string
	k, err := c.CreateKey(ctx, control.KeyCreate{ConsumerID: con.ID, Scopes: []string{"products:read"}})
	if err != nil {
		t.Fatal(err)
	}
	plaintexts = append(plaintexts, k.Plaintext)
	rot, err := c.RotateKey(ctx, k.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	plaintexts = append(plaintexts, rot.Plaintext)
	verify := func(key string) string {
		t.Helper()
		body := fmt.Sprintf(`{"key":%q,"scopes":["products:read"]}`, key)
		req, _ := http.NewRequest("POST", "http://"+n.addrs.Admin+"/v1/keys/verify", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+rk)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// Both keys work during the grace period.
	for _, p := range plaintexts {
		if got := verify(p); !strings.Contains(got, `"code":"VALID"`) {
			t.Fatalf("verify during grace = %s", got)
		}
	}
	if _, err := c.RevokeKey(ctx, rot.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if got := verify(rot.Plaintext); !strings.Contains(got, `"code":"REVOKED"`) {
		t.Fatalf("verify after revoke = %s", got)
	}
	av, err := c.VerifyAudit(ctx)
	if err != nil || !av.OK || av.Entries < 4 {
		t.Fatalf("audit verify = %+v, %v", av, err)
	}

	// A clean stop flushes usage and exits without error.
	if err := n.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// No plaintext anywhere: database files and logs.
	files, _ := filepath.Glob(filepath.Join(n.dir, "keygate.db*"))
	for _, p := range append(plaintexts, rk) {
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if bytes.Contains(b, []byte(p)) {
				t.Errorf("%s holds a plaintext key", filepath.Base(f))
			}
		}
		if strings.Contains(n.stderr.String(), p) {
			t.Error("the log holds a plaintext key")
		}
	}
}

func TestBadSettingsExitTwo(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("routes:\n  - name: x\n    bogus: 1\n"), 0o600)
	emptySecret := filepath.Join(dir, "secret.yaml")
	os.WriteFile(emptySecret, []byte("upstream_secret: ${KEYGATE_TEST_UNSET_VAR}\n"), 0o600)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	db := "sqlite:" + filepath.Join(dir, "k.db")
	tests := []struct {
		name string
		env  map[string]string
		want string // in the one line
	}{
		{"unknown field", map[string]string{"KEYGATE_CONFIG": badYAML}, "line 3"},
		{"missing file", map[string]string{"KEYGATE_CONFIG": filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"empty upstream secret", map[string]string{"KEYGATE_CONFIG": emptySecret}, "upstream_secret"},
		{"bad database url", map[string]string{"KEYGATE_DATABASE_URL": "mysql://x"}, "KEYGATE_DATABASE_URL"},
		{"unreachable postgres", map[string]string{"KEYGATE_DATABASE_URL": "postgres://nobody@127.0.0.1:1/x?connect_timeout=1", "KEYGATE_SECRET_KEY": strings.Repeat("ab", 32)}, "database"},
		{"postgres without secret key", map[string]string{"KEYGATE_DATABASE_URL": "postgres://nobody@127.0.0.1:1/x"}, "KEYGATE_SECRET_KEY"},
		{"bad redis url", map[string]string{"KEYGATE_DATABASE_URL": db, "KEYGATE_REDIS_URL": "http://x"}, "KEYGATE_REDIS_URL"},
		{"bad root key", map[string]string{"KEYGATE_DATABASE_URL": db, "KEYGATE_ROOT_KEY": "kg_root_nope"}, "KEYGATE_ROOT_KEY"},
		{"bad secret key", map[string]string{"KEYGATE_DATABASE_URL": db, "KEYGATE_SECRET_KEY": "short"}, "KEYGATE_SECRET_KEY"},
		{"bad prefix", map[string]string{"KEYGATE_DATABASE_URL": db, "KEYGATE_KEY_PREFIX": "Bad_"}, "KEYGATE_KEY_PREFIX"},
		{"bad log format", map[string]string{"KEYGATE_DATABASE_URL": db, "KEYGATE_LOG_FORMAT": "xml"}, "KEYGATE_LOG_FORMAT"},
		{"address taken", map[string]string{"KEYGATE_DATABASE_URL": db, "KEYGATE_ADMIN_ADDR": taken.Addr().String(), "KEYGATE_PROXY_ADDR": "127.0.0.1:0", "KEYGATE_PORTAL_ADDR": ""}, "admin_addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			err := run(context.Background(), []string{"serve"}, env(tt.env), io.Discard, &stderr, nil)
			code := exitCode(err, &stderr)
			out := stderr.String()
			lines := strings.Split(strings.TrimSpace(out), "\n")
			last := lines[len(lines)-1]
			if code != 2 || !strings.Contains(last, tt.want) || strings.Contains(out, "goroutine") {
				t.Fatalf("exit %d, output:\n%s\nwant exit 2 and one line naming %q", code, out, tt.want)
			}
		})
	}
}

func TestRevokedRootKeyRefusesStart(t *testing.T) {
	dir := t.TempDir()
	rk := generateRootKey(t)
	vars := adminOnly(dir, rk)
	n := start(t, vars)
	c := admin.NewClient("http://"+n.addrs.Admin, rk)
	ctx := context.Background()
	// The bootstrap is idempotent: a second root key with that value is not created.
	list, err := c.RootKeys(ctx, keygate.ListParams{})
	if err != nil || len(list.Data) != 1 {
		t.Fatalf("root keys = %+v, %v", list, err)
	}
	other, err := c.CreateRootKey(ctx, control.RootKeyCreate{Name: "ops", Permissions: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	c2 := admin.NewClient("http://"+n.addrs.Admin, other.Plaintext)
	if _, err := c2.RevokeRootKey(ctx, list.Data[0].ID); err != nil {
		t.Fatal(err)
	}
	n.stop(t)
	var stderr syncBuffer
	err = run(context.Background(), []string{"serve"}, env(vars), io.Discard, &stderr, nil)
	if code := exitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), "revoked") {
		t.Fatalf("start with a revoked KEYGATE_ROOT_KEY: exit %d, %s", code, stderr.String())
	}
	if strings.Contains(stderr.String(), rk) {
		t.Fatal("the refusal shows the root key")
	}
}

// TestConcurrentBootstrapCreatesOneRootKey starts several nodes on one empty PostgreSQL
// database at once: the advisory lock lets exactly one create the root key.
func TestConcurrentBootstrapCreatesOneRootKey(t *testing.T) {
	url := pgtest.URL(t)
	secret := strings.Repeat("cd", 32)
	const nodes = 3
	var wg sync.WaitGroup
	started := make([]*node, nodes)
	for i := 0; i < nodes; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			started[i] = startNoFatal(t, map[string]string{"KEYGATE_DATABASE_URL": url, "KEYGATE_SECRET_KEY": secret,
				"KEYGATE_DATA_DIR":   t.TempDir(),
				"KEYGATE_PROXY_ADDR": "", "KEYGATE_ADMIN_ADDR": "127.0.0.1:0", "KEYGATE_PORTAL_ADDR": ""})
		}(i)
	}
	wg.Wait()
	created := 0
	for i, n := range started {
		if n == nil {
			t.Fatalf("node %d did not start", i)
		}
		if strings.Contains(n.stderr.String(), "generated the first root key") {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d nodes generated a root key; want exactly 1", created)
	}
}

// startNoFatal is start for use from goroutines: it reports failure by returning nil.
func startNoFatal(t *testing.T, vars map[string]string) (n *node) {
	ctx, cancel := context.WithCancel(context.Background())
	n = &node{stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan Addrs, 1)
	go func() { n.done <- run(ctx, []string{"serve"}, env(vars), io.Discard, n.stderr, ready) }()
	select {
	case n.addrs = <-ready:
		t.Cleanup(func() { n.stop(t) })
		return n
	case err := <-n.done:
		t.Errorf("serve exited: %v\n%s", err, n.stderr)
	case <-time.After(30 * time.Second):
		t.Errorf("serve did not start\n%s", n.stderr)
	}
	cancel()
	return nil
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildBinary builds ./cmd/keygate once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keygate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "keygate")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// TestBinarySIGTERM builds the real binary, serves a request, sends SIGTERM and expects exit 0.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		io.WriteString(w, "done")
	}))
	defer slow.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keygate.yaml")
	os.WriteFile(cfg, []byte("routes:\n  - name: slow\n    match: {path_prefix: /slow}\n    upstream: {targets: ["+slow.URL+"]}\n    auth: {required: false}\n"), 0o600)
	bin := buildBinary(t)
	addr, proxy := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "serve", "--config", cfg, "--admin-addr", addr, "--proxy-addr", proxy, "--portal-addr", "",
		"--database-url", "sqlite:"+filepath.Join(dir, "k.db"))
	var stderr syncBuffer
	cmd.Stderr = &stderr
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitHTTP(t, "http://"+addr+"/healthz", &stderr)

	// A request in flight when SIGTERM arrives is finished, then the process exits 0.
	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + proxy + "/slow")
		if err != nil {
			inflight <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		inflight <- result{code: resp.StatusCode, body: string(b)}
	}()
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("no exit after SIGTERM")
	}
	if r := <-inflight; r.err != nil || r.code != 200 || r.body != "done" {
		t.Fatalf("in-flight request during drain = %+v; want 200 done", r)
	}
}

// TestAuditSinkGetsCommittedEntries checks the audit.sinks wiring: every committed entry is
// copied as a JSON line with its hash, and no secret is in it.
func TestAuditSinkGetsCommittedEntries(t *testing.T) {
	dir := t.TempDir()
	sink := filepath.Join(dir, "audit.jsonl")
	cfg := filepath.Join(dir, "keygate.yaml")
	os.WriteFile(cfg, []byte("audit:\n  sinks: [\"file:"+sink+"\"]\n"), 0o600)
	n := start(t, map[string]string{"KEYGATE_CONFIG": cfg})
	rk := n.rootKey(t)
	c := admin.NewClient("http://"+n.addrs.Admin, rk)
	ctx := context.Background()
	con, err := c.CreateConsumer(ctx, control.ConsumerCreate{Name: "sink test"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.CreateKey(ctx, control.KeyCreate{ConsumerID: con.ID})
	if err != nil {
		t.Fatal(err)
	}
	n.stop(t)
	b, err := os.ReadFile(sink)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	// root_key.create (bootstrap), consumer.create, key.create
	if len(lines) != 3 || !strings.Contains(lines[1], `"action":"consumer.create"`) || !strings.Contains(lines[2], `"hash":"`) {
		t.Fatalf("sink lines = %q", lines)
	}
	if strings.Contains(string(b), k.Plaintext) || strings.Contains(string(b), rk) {
		t.Fatal("a plaintext key reached the audit sink")
	}
}

// TestRestartKeepsQuota: quota usage survives a restart (the memory limiter is refilled from the
// durable daily counters), and an unreachable Redis does not stop the start.
func TestRestartKeepsQuota(t *testing.T) {
	dir := t.TempDir()
	root := generateRootKey(t)
	vars := adminOnly(dir, root)
	n := start(t, vars)
	ctx := context.Background()
	c := admin.NewClient("http://"+n.addrs.Admin, root)
	con, err := c.CreateConsumer(ctx, control.ConsumerCreate{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.CreateKey(ctx, control.KeyCreate{ConsumerID: con.ID, Quota: &keygate.Quota{Limit: 5, Period: keygate.PeriodMonth}})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 3; i++ {
		if a := verifyOn(t, hc, n.addrs.Admin, root, k.Plaintext); a.Code != keygate.CodeValid {
			t.Fatalf("verify %d = %s", i, a.Code)
		}
	}
	if err := n.stop(t); err != nil { // a clean stop flushes the counters
		t.Fatal(err)
	}

	// Restart, this time with a Redis that is not there: not fatal, and the local fallback
	// starts from the database's record.
	vars["KEYGATE_REDIS_URL"] = "redis://127.0.0.1:1"
	n = start(t, vars)
	got := verifyOn(t, hc, n.addrs.Admin, root, k.Plaintext)
	if got.Code != keygate.CodeValid || got.Quota == nil || got.Quota.Remaining != 1 {
		t.Fatalf("after restart: %+v; want VALID with 1 remaining (3 used before the restart)", got)
	}
	if a := verifyOn(t, hc, n.addrs.Admin, root, k.Plaintext); a.Code != keygate.CodeValid {
		t.Fatalf("5th = %s", a.Code)
	}
	if a := verifyOn(t, hc, n.addrs.Admin, root, k.Plaintext); a.Code != keygate.CodeQuotaExceeded {
		t.Fatalf("6th = %s; want QUOTA_EXCEEDED", a.Code)
	}
	// The key object shows the durable usage (written at least once a second).
	c2 := admin.NewClient("http://"+n.addrs.Admin, root)
	deadline := time.Now().Add(3 * time.Second)
	for {
		key, err := c2.Key(ctx, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if key.Quota != nil && key.Quota.Used != nil && *key.Quota.Used == 5 && key.LastUsedAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key quota = %+v, last_used_at %v; want used 5 and a last use", key.Quota, key.LastUsedAt)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
