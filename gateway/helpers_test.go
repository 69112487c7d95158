package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
)

// fakeAuth is an Authenticator over a map of plaintext keys.
type fakeAuth struct {
	mu      sync.Mutex
	entries map[string]*verify.Entry
	codes   map[string]string
	lookups int
	err     error
	limit   func(e *verify.Entry, d *ratelimit.Decision) (string, error)
}

var _ Authenticator = (*fakeAuth)(nil)

func newFakeAuth() *fakeAuth {
	return &fakeAuth{entries: map[string]*verify.Entry{}, codes: map[string]string{}}
}

func (f *fakeAuth) Lookup(_ context.Context, key string) (*verify.Entry, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.err != nil {
		return nil, "", f.err
	}
	if c, ok := f.codes[key]; ok {
		return f.entries[key], c, nil
	}
	if e, ok := f.entries[key]; ok {
		return e, "", nil
	}
	return nil, keygate.CodeNotFound, nil
}

func (f *fakeAuth) Limit(_ context.Context, e *verify.Entry, _ int64, d *ratelimit.Decision) (string, error) {
	d.Allowed, d.Denied, d.RetryAfter, d.States = true, -1, 0, d.States[:0]
	if f.limit != nil {
		return f.limit(e, d)
	}
	return "", nil
}

// addKey creates a key with the given settings and returns its plaintext.
func (f *fakeAuth) addKey(t testing.TB, k keygate.Key) string {
	t.Helper()
	kind := keys.TagSecret
	if k.Kind == keygate.KindPublishable {
		kind = keys.TagPublishable
	}
	if k.Env == "" {
		k.Env = keygate.EnvLive
	}
	plain, err := keys.Generate("kg", kind, k.Env)
	if err != nil {
		t.Fatal(err)
	}
	if k.ID == "" {
		k.ID = "key_" + plain[len(plain)-8:]
	}
	if k.ConsumerID == "" {
		k.ConsumerID = "con_1"
	}
	if k.State == "" {
		k.State = keygate.StateActive
	}
	f.mu.Lock()
	f.entries[plain] = verify.NewEntry(&k, &keygate.Consumer{ID: k.ConsumerID}, nil)
	f.mu.Unlock()
	return plain
}

// upstream is a test backend that records what it received.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	hits int
}

func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	u := &upstream{}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.URL.Path) }
	}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(context.Background()))
		u.hits++
		u.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return nil
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

func ptr[T any](v T) *T { return &v }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestGateway builds a gateway and a front server for it.
func newTestGateway(t testing.TB, cfg *Config, auth Authenticator, mod ...func(*Options)) (*Gateway, *httptest.Server) {
	t.Helper()
	o := Options{Config: cfg, Auth: auth, Logger: quietLogger(), PassiveCooldown: time.Minute, ReverseProxyOnly: reverseProxyOnly}
	for _, m := range mod {
		m(&o)
	}
	g, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	srv := httptest.NewUnstartedServer(g)
	srv.Config.MaxHeaderBytes = 64 << 10
	srv.Start()
	t.Cleanup(srv.Close)
	return g, srv
}

func do(t testing.TB, method, url string, hdr map[string]string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}
