// Package gateway is keygate's proxy listener (SPEC §4): it matches a request to a route,
// authenticates and authorizes its key through the verify cache, applies limits, and forwards it
// with httputil.ReverseProxy to a healthy upstream target, signed with the caller's identity.
package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
	"github.com/prometheus/client_golang/prometheus"
)

// Authenticator is what the gateway needs from verification; *verify.Verifier implements it.
type Authenticator interface {
	// Lookup resolves a presented key through the cache. code is "" for a usable key, else
	// NOT_FOUND (malformed or unknown), REVOKED, EXPIRED or DISABLED; err is a storage failure.
	Lookup(ctx context.Context, key string) (e *verify.Entry, code string, err error)
	// Limit consumes cost from the key's windows and quotas. code is "" (allowed),
	// RATE_LIMITED, QUOTA_EXCEEDED or THROTTLED; d receives every state for the RateLimit fields.
	Limit(ctx context.Context, e *verify.Entry, cost int64, d *ratelimit.Decision) (code string, err error)
}

// Options are the dependencies of a Gateway. Config and Auth are required.
type Options struct {
	Config *Config
	Auth   Authenticator
	// Limiter counts the per-IP rate_limits of public routes. Default: an in-memory limiter
	// owned (and closed) by the Gateway.
	Limiter ratelimit.Limiter
	// Transport carries requests to upstreams and health checks. Default: NewTransport(). A
	// Transport given here carries every request (the direct forwarder is off).
	Transport http.RoundTripper
	// ReverseProxyOnly forwards every request with httputil.ReverseProxy and the Transport,
	// never with the direct HTTP/1.1 forwarder (direct.go).
	ReverseProxyOnly bool
	// Registerer receives the gateway's metrics. Default nil: none.
	Registerer prometheus.Registerer
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// OnRequest is called after every request with what analytics need. The RequestInfo is valid
	// only during the call. Default nil. It must not block.
	OnRequest func(*RequestInfo)
	// PassiveCooldown is how long a target that failed a request is skipped. Default 10s.
	PassiveCooldown time.Duration
	// Now is the clock of signatures and caches. Default time.Now.
	Now func() time.Time
}

// RequestInfo describes one finished request (the usage event of SPEC §6).
type RequestInfo struct {
	Time       time.Time // when it arrived
	KeyID      string    // "" when no key was authenticated
	ConsumerID string
	Route      string // "" when no route matched
	Method     string
	Status     int
	Code       string // the error code answered, "" when the upstream answered
	Latency    time.Duration
	BytesIn    int64 // request body bytes read
	Bytes      int64 // response body bytes written
	ClientIP   netip.Addr
	RequestID  string
	Deprecated bool
	CacheHit   bool
}

// Gateway is the proxy handler. It is safe for concurrent use.
type Gateway struct {
	auth      Authenticator
	limiter   ratelimit.Limiter
	ownLimit  *ratelimit.Memory
	transport http.RoundTripper
	proxy     *httputil.ReverseProxy
	direct    bool // plain-HTTP targets get the direct forwarder
	log       *slog.Logger
	onRequest func(*RequestInfo)
	cooldown  time.Duration
	now       func() time.Time
	metrics   *metrics

	table    atomic.Pointer[table]
	reloadMu sync.Mutex // serializes Reload and Close

	targetsMu sync.Mutex
	targets   map[string]*target

	exchanges sync.Pool
}

// New validates opts.Config, builds the routing table and starts the active health checkers.
func New(opts Options) (*Gateway, error) {
	if opts.Config == nil || opts.Auth == nil {
		return nil, errors.New("gateway: Config and Auth are required")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{
		auth:      opts.Auth,
		limiter:   opts.Limiter,
		transport: opts.Transport,
		log:       opts.Logger,
		onRequest: opts.OnRequest,
		cooldown:  opts.PassiveCooldown,
		now:       opts.Now,
		targets:   map[string]*target{},
		direct:    opts.Transport == nil && !opts.ReverseProxyOnly,
	}
	if g.transport == nil {
		g.transport = NewTransport()
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.cooldown == 0 {
		g.cooldown = 10 * time.Second
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.limiter == nil {
		g.ownLimit = ratelimit.NewMemory()
		g.limiter = g.ownLimit
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	g.metrics = m
	g.proxy = &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		Transport:      g.transport,
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.proxyError,
		BufferPool:     BufferPool{},
		ErrorLog:       slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		// FlushInterval 0: ReverseProxy already flushes at once for streamed answers
		// (no Content-Length, or text/event-stream); others are copied with buffered writes.
	}
	t := g.compile(opts.Config, g.now())
	g.warnUnsigned(opts.Config)
	for _, c := range t.checkers {
		c.start()
	}
	g.table.Store(t)
	return g, nil
}

func (g *Gateway) warnUnsigned(cfg *Config) {
	for _, r := range cfg.Routes {
		if cfg.UpstreamSecret == nil && r.Upstream.Secret == nil {
			g.log.Warn("gateway: no upstream secret configured; identity headers go unsigned", "route", r.Name)
		}
	}
}

// Reload validates cfg and swaps the routing table atomically. Requests in flight finish with
// the table they started with; a config that fails validation changes nothing.
func (g *Gateway) Reload(cfg *Config) error {
	if err := cfg.Validate(); err != nil {
		return err // the caller logs and counts it (keygate_config_reloads_total)
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	t := g.compile(cfg, g.now())
	g.warnUnsigned(cfg)
	old := g.table.Swap(t)
	if old != nil {
		for _, c := range old.checkers {
			c.stop()
		}
	}
	// Targets that the new table no longer checks actively must not stay marked down.
	checked := map[*target]bool{}
	for _, c := range t.checkers {
		for _, tg := range c.targets {
			checked[tg] = true
		}
	}
	g.targetsMu.Lock()
	used := map[*target]bool{}
	for _, r := range t.routes {
		for _, p := range []*pool{r.live, r.test} {
			if p != nil {
				for _, tg := range p.targets {
					used[tg] = true
				}
			}
		}
	}
	for k, tg := range g.targets {
		if !used[tg] {
			delete(g.targets, k)
			if tg.conns != nil {
				tg.conns.close()
			}
		}
		if !checked[tg] {
			tg.activeDown.Store(false)
		}
	}
	g.targetsMu.Unlock()
	for _, c := range t.checkers {
		c.start()
	}
	return nil
}

// Close stops the health checkers and the limiter the gateway owns. In-flight requests are the
// server's to drain (http.Server.Shutdown); Close does not wait for them.
func (g *Gateway) Close() error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if t := g.table.Load(); t != nil {
		for _, c := range t.checkers {
			c.stop()
		}
		t.checkers = nil
	}
	g.targetsMu.Lock()
	for _, tg := range g.targets {
		if tg.conns != nil {
			tg.conns.close()
		}
	}
	g.targetsMu.Unlock()
	if g.ownLimit != nil {
		return g.ownLimit.Close()
	}
	return nil
}

// NewTransport returns the shared, tuned connection pool to upstreams: generous idle
// connections per host (the default 2 makes a busy proxy open and close a connection per
// request), bounded dial and TLS times, no transparent compression (the client's
// Accept-Encoding goes through untouched), and 32 KiB buffers.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // never an environment proxy between keygate and its upstreams
		DialContext:           (&dialer).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

// BufferPool lends httputil.ReverseProxy 32 KiB copy buffers instead of allocating one per
// request; the direct forwarder copies with the same buffers.
type BufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (BufferPool) Get() []byte  { return *(copyBuffers.Get().(*[]byte)) }
func (BufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// countingBody counts the request body bytes read.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}
