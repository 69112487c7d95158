package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
)

// cannedTransport answers every request at once, so that the benchmarks measure the proxy's own
// work without a network.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Request: r, ContentLength: 13,
		Header: http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"13"}},
		Body:   io.NopCloser(strings.NewReader("hello, world\n"))}, nil
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// benchAuth returns a fake authenticator with one key (scope products:read, one window far above
// any benchmark's rate) whose limits are counted by a real in-memory limiter.
func benchAuth(b *testing.B) (*fakeAuth, string) {
	auth := newFakeAuth()
	key := auth.addKey(b, keygate.Key{Scopes: []string{"products:read"}, RateLimits: []keygate.Window{{Name: "minute", Limit: 1e12, Period: keygate.Duration(6e10)}}})
	lim := ratelimit.NewMemory()
	b.Cleanup(func() { lim.Close() })
	auth.limit = func(e *verify.Entry, d *ratelimit.Decision) (string, error) {
		lim.Check(b.Context(), e.Limits, 1, d)
		return "", nil
	}
	return auth, key
}

// runHandler calls h for GET path with hdr in a loop, with a writer that discards the answer.
func runHandler(b *testing.B, h http.Handler, path string, hdr http.Header) {
	b.ReportAllocs()
	req := httptest.NewRequest("GET", "http://x"+path, nil)
	req.RemoteAddr = "127.0.0.1:5555"
	req.Header = hdr
	w := &discardWriter{h: http.Header{}}
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkServeHTTP compares a bare httputil.ReverseProxy with keygate on a public route and on
// a keyed route (verify cache hit, limiter with one window, signed identity headers).
func BenchmarkServeHTTP(b *testing.B) {
	target, _ := url.Parse("http://127.0.0.1:1")
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport:  cannedTransport{},
		BufferPool: BufferPool{},
	}
	auth, key := benchAuth(b)
	cfg := &Config{UpstreamSecret: ptr("s"), Routes: []Route{
		publicRoute("public", "/public", target.String()),
		keyedRoute("keyed", "/keyed", target.String()),
	}}
	cfg.Routes[1].Auth.Scopes = map[string][]string{"GET": {"products:read"}}
	g, err := New(Options{Config: cfg, Auth: auth, Transport: cannedTransport{}, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	b.Run("bare", func(b *testing.B) { runHandler(b, bare, "/public", http.Header{}) })
	b.Run("public", func(b *testing.B) { runHandler(b, g, "/public", http.Header{}) })
	b.Run("keyed", func(b *testing.B) { runHandler(b, g, "/keyed", http.Header{"X-Api-Key": {key}}) })
}

// BenchmarkForward measures the whole forward over loopback to a real upstream (one keep-alive
// connection, 13-byte answers): a bare httputil.ReverseProxy with the tuned transport, and the
// keyed route (verify cache hit, limiter with one window, signed identity headers) through the
// direct forwarder and through ReverseProxy. The handler is called directly, so the client's
// side of HTTP is not in the numbers; the upstream's is (run with -cpu 1 and compare rows).
func BenchmarkForward(b *testing.B) {
	body := []byte("hello, world\n")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{"13"}
		w.Write(body)
	}))
	defer up.Close()
	target, _ := url.Parse(up.URL)
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport:  NewTransport(),
		BufferPool: BufferPool{},
	}
	auth, key := benchAuth(b)
	cfg := &Config{UpstreamSecret: ptr("s"), Routes: []Route{keyedRoute("keyed", "/keyed", up.URL)}}
	cfg.Routes[0].Auth.Scopes = map[string][]string{"GET": {"products:read"}}
	gateway := func(rpOnly bool) *Gateway {
		g, err := New(Options{Config: cfg, Auth: auth, Logger: quietLogger(), ReverseProxyOnly: rpOnly})
		if err != nil {
			b.Fatal(err)
		}
		return g
	}
	direct, viaRP := gateway(false), gateway(true)
	defer direct.Close()
	defer viaRP.Close()
	b.Run("bare-reverseproxy", func(b *testing.B) { runHandler(b, bare, "/keyed", http.Header{}) })
	b.Run("keyed-direct", func(b *testing.B) { runHandler(b, direct, "/keyed", http.Header{"X-Api-Key": {key}}) })
	b.Run("keyed-reverseproxy", func(b *testing.B) { runHandler(b, viaRP, "/keyed", http.Header{"X-Api-Key": {key}}) })
}
