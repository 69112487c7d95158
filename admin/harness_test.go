package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/audit"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
	"github.com/keygate/keygate/verify"
)

// env is a running admin API over a real control plane and SQLite database.
type env struct {
	t      *testing.T
	srv    *httptest.Server
	ctl    *control.Service
	store  keygate.Store
	dbPath string
	token  string // admin root key
	logs   *syncBuffer
}

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

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "keygate.db")
	auditKey := bytes.Repeat([]byte{7}, 32)
	st, err := sqlite.Open(ctx, dbPath, sqlstore.WithAuditHasher(audit.Hasher(auditKey)))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	lim := ratelimit.NewMemory()
	v := verify.New(verify.Options{Store: st, Limiter: lim})
	ctl := control.New(control.Options{Store: st, AuditKey: auditKey, Invalidator: v, Logger: logger})
	token, err := ctl.BootstrapRootKey(ctx)
	if err != nil || token == "" {
		t.Fatalf("BootstrapRootKey = %q, %v", token, err)
	}
	h := New(Options{Control: ctl, Verifier: v, Logger: logger,
		Ready:   st.Ping,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "# metrics\n") })})
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		lim.Close()
		st.Close()
	})
	return &env{t: t, srv: srv, ctl: ctl, store: st, dbPath: dbPath, token: token, logs: logs}
}

// answer is a response with its body read.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a *answer) json() map[string]any {
	var m map[string]any
	json.Unmarshal(a.body, &m)
	return m
}

func (a *answer) str(name string) string {
	s, _ := a.json()[name].(string)
	return s
}

// req is one request of a test.
type req struct {
	method, path, token string
	body                any // string: sent as is; otherwise JSON-encoded
	header              map[string]string
}

func (e *env) do(r req) *answer {
	e.t.Helper()
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	hr, err := http.NewRequest(r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	tok := r.token
	if tok == "" {
		tok = e.token
	}
	if tok != "-" {
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	resp, err := e.srv.Client().Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := &answer{status: resp.StatusCode, header: resp.Header, body: b}
	e.checkAnswer(r, a)
	return a
}

// nonUTCTime finds an RFC 3339 time with a numeric offset.
var nonUTCTime = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d"`)

var (
	docOnce sync.Once
	docJSON map[string]any
)

// checkAnswer checks every answer of a documented route against the OpenAPI document: its status
// is documented, with this media type, and the body is valid by the schema.
func (e *env) checkAnswer(r req, a *answer) {
	e.t.Helper()
	docOnce.Do(func() {
		b, _ := json.Marshal(openAPIDocument(newServer(nil, Options{}).routes))
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		dec.Decode(&docJSON)
	})
	s := newServer(nil, Options{})
	rt := matchRoute(s.routes, r.method, r.path)
	if rt == nil {
		return
	}
	op := docJSON["paths"].(map[string]any)[rt.Pattern].(map[string]any)[strings.ToLower(r.method)].(map[string]any)
	resp, ok := op["responses"].(map[string]any)[strconv.Itoa(a.status)].(map[string]any)
	if !ok {
		e.t.Errorf("%s %s answered %d, which the document does not list (%s)", r.method, r.path, a.status, a.body)
		return
	}
	ct, _, _ := strings.Cut(a.header.Get("Content-Type"), ";")
	var media map[string]any
	for k, v := range resp["content"].(map[string]any) {
		if kk, _, _ := strings.Cut(k, ";"); kk == ct {
			media = v.(map[string]any)
		}
	}
	if media == nil {
		e.t.Errorf("%s %s %d: Content-Type %q is not documented", r.method, r.path, a.status, ct)
		return
	}
	if !strings.HasSuffix(ct, "json") {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		e.t.Errorf("%s %s %d: body is not JSON: %v", r.method, r.path, a.status, err)
		return
	}
	if m := nonUTCTime.Find(a.body); m != nil {
		e.t.Errorf("%s %s %d: time %s is not in UTC", r.method, r.path, a.status, m)
	}
	if err := newValidator(docJSON).validate(media["schema"], v, "answer"); err != nil {
		e.t.Errorf("%s %s %d: answer invalid by the document: %v\n%s", r.method, r.path, a.status, err, a.body)
	}
}

// must does r and fails the test unless the status is want.
func (e *env) must(want int, r req) *answer {
	e.t.Helper()
	a := e.do(r)
	if a.status != want {
		e.t.Fatalf("%s %s = %d %s; want %d", r.method, r.path, a.status, a.body, want)
	}
	return a
}

// rootKey creates a root key with perms and returns its plaintext.
func (e *env) rootKey(perms ...string) string {
	e.t.Helper()
	a := e.must(201, req{method: "POST", path: "/v1/root-keys", body: map[string]any{"name": "t", "permissions": perms}})
	return a.str("key")
}

func (e *env) consumer() string {
	e.t.Helper()
	return e.must(201, req{method: "POST", path: "/v1/consumers", body: map[string]any{"name": "Acme", "email": "dev@acme.test"}}).str("id")
}

// key creates a key for consumer and returns its id and plaintext.
func (e *env) key(consumer string, extra map[string]any) (string, string) {
	e.t.Helper()
	body := map[string]any{"consumer_id": consumer, "name": "k", "scopes": []string{"products:read"}}
	for k, v := range extra {
		body[k] = v
	}
	a := e.must(201, req{method: "POST", path: "/v1/keys", body: body})
	return a.str("id"), a.str("key")
}

// isProblem reports whether a is an RFC 9457 problem with status and code consistent.
func isProblem(t *testing.T, a *answer) map[string]any {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q; want application/problem+json (status %d, body %s)", ct, a.status, a.body)
	}
	m := a.json()
	for _, f := range []string{"type", "title", "status", "detail", "code"} {
		if _, ok := m[f]; !ok {
			t.Fatalf("problem %s lacks %q", a.body, f)
		}
	}
	if int(m["status"].(float64)) != a.status {
		t.Fatalf("problem status %v != HTTP status %d", m["status"], a.status)
	}
	return m
}

func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
