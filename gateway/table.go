package gateway

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/ratelimit"
)

// table is one compiled, immutable configuration. Reload builds a new one and swaps it in; a
// request keeps the table it started with.
type table struct {
	routes  []*route // by specificity: host before no host, then longest prefix
	trusted []netip.Prefix

	checkers []*checker
}

// route is a compiled Route.
type route struct {
	name        string
	host        string
	prefix      string // without trailing slash ("" for "/")
	methods     []string
	stripPrefix bool
	timeout     time.Duration
	maxBody     int64 // -1: unlimited
	public      bool
	scopes      map[string][]string
	anyScopes   []string // for methods not in scopes ("*")
	plans       []string
	queryKey    bool
	secret      []byte // nil: unsigned
	hmacs       *sync.Pool

	live, test *pool

	ipLimits []ratelimit.Limit // per-IP windows (Key filled per request)

	cors *corsPolicy

	// deprecation fields, preformatted; nil when not deprecated
	deprecation, sunset, link []string

	cache *responseCache

	metrics routeMetrics
}

// pool is the targets of one route and env, chosen round-robin.
type pool struct {
	targets []*target
	next    atomic.Uint32
}

// target is one upstream base URL with its health.
type target struct {
	url *url.URL
	// downUntil (unix ns) is set by passive health: a target that failed is skipped until then.
	downUntil atomic.Int64
	// activeDown is set by the active checker while the target fails its checks.
	activeDown atomic.Bool
	// conns are the direct forwarder's keep-alive connections; nil for targets it does not serve
	// (not plain HTTP, or the forwarder is off: Options.Transport or ReverseProxyOnly).
	conns *upstreamConns
}

func (t *target) healthy(now int64) bool {
	return !t.activeDown.Load() && t.downUntil.Load() <= now
}

// pick returns the next healthy target in round-robin order; when none is healthy it returns the
// next one anyway (an error from it is better information than a refusal without trying).
func (p *pool) pick() *target {
	n := uint32(len(p.targets))
	if n == 1 {
		return p.targets[0]
	}
	start := p.next.Add(1)
	now := time.Now().UnixNano()
	for i := uint32(0); i < n; i++ {
		t := p.targets[(start+i)%n]
		if t.healthy(now) {
			return t
		}
	}
	return p.targets[start%n]
}

// match finds the route for host and the cleaned path p. With method "" (a CORS preflight) the
// methods are ignored.
func (t *table) match(host, p, method string) *route {
	for _, r := range t.routes {
		if r.host != "" && !strings.EqualFold(r.host, host) {
			continue
		}
		if !hasPathPrefix(p, r.prefix) {
			continue
		}
		if method != "" && len(r.methods) > 0 && !contains(r.methods, method) {
			continue
		}
		return r
	}
	return nil
}

// hasPathPrefix reports whether p is prefix or lies beneath it (segment boundary).
func hasPathPrefix(p, prefix string) bool {
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	return len(p) == len(prefix) || p[len(prefix)] == '/' || prefix == ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// compile builds a table from a validated config.
func (g *Gateway) compile(cfg *Config, loaded time.Time) *table {
	t := &table{trusted: parseTrusted(cfg.TrustedProxies)}
	var global []byte
	if cfg.UpstreamSecret != nil {
		global = []byte(*cfg.UpstreamSecret)
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		r := &route{
			name:        rc.Name,
			host:        strings.ToLower(rc.Match.Host),
			prefix:      strings.TrimSuffix(rc.Match.PathPrefix, "/"),
			methods:     rc.Match.Methods,
			stripPrefix: rc.Upstream.StripPrefix,
			timeout:     rc.Upstream.Timeout.D(),
			maxBody:     int64(rc.MaxBody),
			public:      rc.Auth.Required != nil && !*rc.Auth.Required,
			plans:       rc.Auth.Plans,
			queryKey:    rc.Auth.AllowQueryKey,
			secret:      global,
		}
		if r.timeout == 0 {
			r.timeout = DefaultTimeout
		}
		if r.maxBody == 0 {
			r.maxBody = DefaultMaxBody
		}
		if rc.Upstream.Secret != nil {
			r.secret = []byte(*rc.Upstream.Secret)
		}
		if r.secret != nil {
			r.hmacs = newHMACPool(r.secret)
		}
		if len(rc.Auth.Scopes) > 0 {
			r.scopes = make(map[string][]string, len(rc.Auth.Scopes))
			for m, s := range rc.Auth.Scopes {
				if m == "*" {
					r.anyScopes = s
				} else {
					r.scopes[m] = s
				}
			}
		}
		r.live = g.newPool(rc.Upstream.Targets)
		if len(rc.Upstream.TestTargets) > 0 {
			r.test = g.newPool(rc.Upstream.TestTargets)
		}
		if hc := rc.Upstream.HealthCheck; hc != nil {
			t.checkers = append(t.checkers, newChecker(g, hc, r.live, r.test))
		}
		for _, w := range rc.RateLimits {
			r.ipLimits = append(r.ipLimits, ratelimit.Limit{Name: w.Name, Kind: ratelimit.Window, Limit: w.Limit, Period: w.Period.D()})
		}
		if rc.CORS != nil {
			r.cors = newCORSPolicy(rc.CORS, rc.Match.Methods)
		}
		if d := rc.Deprecated; d != nil {
			since := loaded
			if d.Since != "" {
				since, _ = time.Parse(time.RFC3339, d.Since)
			}
			r.deprecation = []string{"@" + strconv.FormatInt(since.Unix(), 10)}
			if d.Sunset != "" {
				s, _ := time.Parse(time.RFC3339, d.Sunset)
				r.sunset = []string{s.UTC().Format(http.TimeFormat)}
			}
			if d.Link != "" {
				r.link = []string{"<" + d.Link + `>; rel="deprecation"; type="text/html"`}
			}
		}
		if rc.Cache.TTL > 0 {
			size := int64(rc.Cache.MaxSize)
			if size == 0 {
				size = DefaultCacheSize
			}
			r.cache = newResponseCache(rc.Cache.TTL.D(), size)
		}
		r.metrics = g.metrics.forRoute(r.name)
		t.routes = append(t.routes, r)
	}
	sort.SliceStable(t.routes, func(i, j int) bool {
		a, b := t.routes[i], t.routes[j]
		if (a.host != "") != (b.host != "") {
			return a.host != ""
		}
		if len(a.prefix) != len(b.prefix) {
			return len(a.prefix) > len(b.prefix)
		}
		// Same prefix: routes restricted to methods before catch-alls.
		return len(a.methods) > 0 && len(b.methods) == 0
	})
	return t
}

// newPool builds a pool, keeping the health state of targets that the previous table had, so
// that a reload does not send traffic back to a target known to be failing.
func (g *Gateway) newPool(urls []string) *pool {
	p := &pool{}
	for _, s := range urls {
		u, _ := parseTarget(s)
		p.targets = append(p.targets, g.targetFor(u))
	}
	return p
}

func (g *Gateway) targetFor(u *url.URL) *target {
	g.targetsMu.Lock()
	defer g.targetsMu.Unlock()
	key := u.String()
	if t, ok := g.targets[key]; ok {
		return t
	}
	t := &target{url: u}
	if g.direct {
		t.conns = newUpstreamConns(u)
	}
	g.targets[key] = t
	return t
}

// checker actively checks the targets of one route.
type checker struct {
	g        *Gateway
	path     string
	interval time.Duration
	timeout  time.Duration
	targets  []*target
	cancel   context.CancelFunc
	done     chan struct{}
}

func newChecker(g *Gateway, hc *HealthCheck, pools ...*pool) *checker {
	c := &checker{g: g, path: hc.Path, interval: hc.Interval.D(), timeout: hc.Timeout.D()}
	if c.interval == 0 {
		c.interval = DefaultHealthCheckInterval
	}
	if c.timeout == 0 {
		c.timeout = min(DefaultHealthCheckTimeout, c.interval)
	}
	for _, p := range pools {
		if p != nil {
			c.targets = append(c.targets, p.targets...)
		}
	}
	return c
}

func (c *checker) start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go c.run(ctx)
}

// stop stops the checker and waits for it.
func (c *checker) stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

func (c *checker) run(ctx context.Context) {
	defer close(c.done)
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		c.checkAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *checker) checkAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, t := range c.targets {
		wg.Go(func() {
			ok := c.check(ctx, t)
			if ctx.Err() != nil {
				return
			}
			if was := t.activeDown.Swap(!ok); was == ok {
				c.g.log.Warn("gateway: upstream health changed", "target", t.url.Redacted(), "healthy", ok)
			}
		})
	}
	wg.Wait()
}

func (c *checker) check(ctx context.Context, t *target) bool {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := *t.url
	u.Path += c.path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "keygate-health-check")
	resp, err := c.g.transport.RoundTrip(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}
