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

// BenchmarkServeHTTP compares a bare httputil.ReverseProxy with keygate on a public route and on
// a keyed route (verify cache hit, limiter with one window, signed identity headers).
func BenchmarkServeHTTP(b *testing.B) {
	target, _ := url.Parse("http://127.0.0.1:1")
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport:  cannedTransport{},
		BufferPool: bufferPool{},
	}
	auth := newFakeAuth()
	key := auth.addKey(b, keygate.Key{Scopes: []string{"products:read"}, RateLimits: []keygate.Window{{Name: "minute", Limit: 1e12, Period: keygate.Duration(6e10)}}})
	lim := ratelimit.NewMemory()
	defer lim.Close()
	auth.limit = func(e *verify.Entry, d *ratelimit.Decision) (string, error) {
		lim.Check(b.Context(), e.Limits, 1, d)
		return "", nil
	}
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
	run := func(b *testing.B, h http.Handler, path string, hdr http.Header) {
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
	b.Run("bare", func(b *testing.B) { run(b, bare, "/public", http.Header{}) })
	b.Run("public", func(b *testing.B) { run(b, g, "/public", http.Header{}) })
	b.Run("keyed", func(b *testing.B) { run(b, g, "/keyed", http.Header{"X-Api-Key": {key}}) })
}
