package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate"
)

// Config is the gateway's part of the config file (SPEC §4). The top-level loader embeds these
// fields inline; it expands ${VAR}, rejects unknown fields and calls Validate once before anything
// starts (and again on every SIGHUP, before Reload).
type Config struct {
	// UpstreamSecret signs the identity headers of every route without its own secret. nil: no
	// secret, identity headers go unsigned (New logs a warning). Non-nil and empty (an unset
	// ${VAR}) is a configuration error.
	UpstreamSecret *string `yaml:"upstream_secret"`
	// TrustedProxies are CIDRs (or single addresses) whose X-Forwarded-For is believed when
	// finding the client's address. Default none: the connection's address is the client.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Routes are matched by host, then the longest path prefix, then method.
	Routes []Route `yaml:"routes"`
}

// Route is one entry of routes:.
type Route struct {
	// Name identifies the route in metrics, logs, cache and limiter keys: 1-64 of [a-z0-9_-], unique.
	Name     string   `yaml:"name"`
	Match    Match    `yaml:"match"`
	Upstream Upstream `yaml:"upstream"`
	Auth     Auth     `yaml:"auth"`
	// RateLimits are per-client-IP windows for public routes (auth.required: false). Default none.
	RateLimits []keygate.Window `yaml:"rate_limits"`
	// CORS answers preflights and decorates answers. nil: preflights get 204 without any
	// Access-Control-Allow-* field (the browser refuses), answers are left alone.
	CORS *CORS `yaml:"cors"`
	// Deprecated adds Deprecation, Sunset and Link fields to every answer. nil: not deprecated.
	Deprecated *Deprecated `yaml:"deprecated"`
	// Cache caches 200 answers to GET. Default off (ttl 0).
	Cache Cache `yaml:"cache"`
	// MaxBody is the largest request body accepted ("10MiB", "512KB", or bytes); larger is 413.
	// Default 10MiB; "0" keeps the default, "-1" is unlimited.
	MaxBody ByteSize `yaml:"max_body"`
}

// Match selects requests for a route.
type Match struct {
	// PathPrefix matches the cleaned path at a segment boundary: /v1/products matches
	// /v1/products and /v1/products/42, not /v1/productsX. Required; must be clean.
	PathPrefix string `yaml:"path_prefix"`
	// Methods the route accepts. Default (empty): all.
	Methods []string `yaml:"methods"`
	// Host matches the Host header without port, case-insensitively. Default "": any host. A route
	// with a host wins over one without.
	Host string `yaml:"host"`
}

// Upstream is where a route's requests go.
type Upstream struct {
	// Targets are base URLs (http or https, optionally with a base path) used round-robin, skipping
	// failing ones. Required.
	Targets []string `yaml:"targets"`
	// TestTargets receive the requests of env=test keys. Default none: test keys get 403
	// ENV_NOT_ALLOWED.
	TestTargets []string `yaml:"test_targets"`
	// StripPrefix removes match.path_prefix from the forwarded path. Default false.
	StripPrefix bool `yaml:"strip_prefix"`
	// Timeout bounds the wait for the upstream's response header (504 after). Default 30s.
	// Streaming bodies and WebSockets are not cut by it.
	Timeout keygate.Duration `yaml:"timeout"`
	// Secret signs this route's identity headers instead of upstream_secret. nil: the global one.
	Secret *string `yaml:"secret"`
	// HealthCheck enables active checks of every target. nil: passive checks only.
	HealthCheck *HealthCheck `yaml:"health_check"`
}

// HealthCheck is an active health check: GET path on every target each interval; a target
// answering anything but 2xx/3xx (or not at all within the timeout) is skipped until it passes.
type HealthCheck struct {
	Path string `yaml:"path"`
	// Interval between checks. Default 10s.
	Interval keygate.Duration `yaml:"interval"`
	// Timeout of one check. Default 2s (at most the interval).
	Timeout keygate.Duration `yaml:"timeout"`
}

// Auth says who may call a route.
type Auth struct {
	// Required: a key is needed. Default true; false makes a public route.
	Required *bool `yaml:"required"`
	// Scopes the key needs, per method ("GET", "POST", …, or "*" for methods not listed). A
	// method with no entry needs no scope.
	Scopes map[string][]string `yaml:"scopes"`
	// Plans, when non-empty, admit only keys on these plans (else 403 PLAN_NOT_ALLOWED).
	Plans []string `yaml:"plans"`
	// AllowQueryKey also accepts ?api_key=. Default false. The parameter is removed before
	// forwarding on every route either way.
	AllowQueryKey bool `yaml:"allow_query_key"`
}

// CORS configures cross-origin answers of a route.
type CORS struct {
	// AllowOrigins are origins ("https://app.example.com") or "*".
	AllowOrigins []string `yaml:"allow_origins"`
	// AllowMethods answered to preflights. Default: the route's methods, else GET, HEAD, POST.
	AllowMethods []string `yaml:"allow_methods"`
	// AllowHeaders answered to preflights. Default: Authorization, X-API-Key, Content-Type.
	AllowHeaders []string `yaml:"allow_headers"`
	// ExposeHeaders lets scripts read these answer fields. Default: the RateLimit fields,
	// Retry-After, X-Request-Id and the deprecation fields.
	ExposeHeaders []string `yaml:"expose_headers"`
	// AllowCredentials sends Access-Control-Allow-Credentials: true (not with "*"). Default false.
	AllowCredentials bool `yaml:"allow_credentials"`
	// MaxAge lets browsers cache a preflight answer. Default 0: not sent.
	MaxAge keygate.Duration `yaml:"max_age"`
}

// Deprecated marks a route deprecated (RFC 9745, RFC 8594).
type Deprecated struct {
	// Since is an RFC 3339 time. Default: the time the config was loaded.
	Since string `yaml:"since"`
	// Sunset is an RFC 3339 time; optional.
	Sunset string `yaml:"sunset"`
	// Link is an absolute URL documenting the deprecation; optional.
	Link string `yaml:"link"`
}

// Cache configures the per-route response cache.
type Cache struct {
	// TTL > 0 caches 200 answers to GET per route, path, query and plan. Default 0: off.
	TTL keygate.Duration `yaml:"ttl"`
	// MaxSize bounds the route's cache (least recently used entries go first). Default 16MiB.
	// One answer larger than an eighth of it is not cached.
	MaxSize ByteSize `yaml:"max_size"`
}

// Defaults (documented on the fields above).
const (
	// MaxHeaderBytes is what the proxy listener's http.Server.MaxHeaderBytes should be: header
	// blocks beyond it are refused by the server with 431 before the gateway runs (a 1 MB "key"
	// never reaches verification).
	MaxHeaderBytes = 64 << 10

	DefaultTimeout             = 30 * time.Second
	DefaultMaxBody             = 10 << 20
	DefaultCacheSize           = 16 << 20
	DefaultHealthCheckInterval = 10 * time.Second
	DefaultHealthCheckTimeout  = 2 * time.Second
)

// ByteSize is a number of bytes written as an integer or with a unit: B, KB, MB, GB (powers of
// 1000) or KiB, MiB, GiB (powers of 1024).
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = ByteSize(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return strconv.AppendInt(nil, int64(b), 10), nil }

// ParseByteSize parses "10MiB", "512KB", "1048576" or "-1".
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "-1" {
		return -1, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("invalid size %q: want bytes or a number with KB, MB, GB, KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// Validate checks the whole gateway configuration and names every problem with its field path
// (routes[2].upstream.targets[0]: …). It changes nothing.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.UpstreamSecret != nil && *c.UpstreamSecret == "" {
		add("upstream_secret", "configured but empty (an unset ${VAR}?); remove it to send identity headers unsigned")
	}
	for i, s := range c.TrustedProxies {
		if _, err := keygate.ParsePrefix(s); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not an IP address or CIDR", s)
		}
	}
	names := map[string]int{}
	type matchKey struct{ host, prefix string }
	seen := map[matchKey][]int{}
	for i := range c.Routes {
		r := &c.Routes[i]
		f := fmt.Sprintf("routes[%d]", i)
		switch {
		case !keygate.ValidSlug(r.Name, 64):
			add(f+".name", "%q must be 1-64 characters of [a-z0-9_-]", r.Name)
		default:
			if j, dup := names[r.Name]; dup {
				add(f+".name", "%q is already the name of routes[%d]", r.Name, j)
			}
			names[r.Name] = i
		}
		validateMatch(f+".match", &r.Match, add)
		public := r.Auth.Required != nil && !*r.Auth.Required
		validateUpstream(f+".upstream", &r.Upstream, public, add)
		validateAuth(f+".auth", &r.Auth, public, add)
		if len(r.RateLimits) > 0 {
			if !public {
				add(f+".rate_limits", "per-IP limits apply only to public routes (auth.required: false); keyed routes use the key's limits")
			}
			if err := keygate.ValidateWindows(f+".rate_limits", r.RateLimits); err != nil {
				errs = append(errs, errors.New(keygate.ErrorMessage(err)))
			}
		}
		if r.CORS != nil {
			validateCORS(f+".cors", r.CORS, add)
		}
		if r.Deprecated != nil {
			validateDeprecated(f+".deprecated", r.Deprecated, add)
		}
		if r.Cache.TTL < 0 {
			add(f+".cache.ttl", "must not be negative")
		}
		if r.Cache.MaxSize < 0 {
			add(f+".cache.max_size", "must not be negative")
		}
		if r.MaxBody < -1 {
			add(f+".max_body", "must be a size, 0 (default) or -1 (unlimited)")
		}
		// Two routes with the same host and prefix must not both accept a method: which one
		// answers would depend on their order in the file.
		k := matchKey{strings.ToLower(r.Match.Host), r.Match.PathPrefix}
		for _, j := range seen[k] {
			if m := overlap(c.Routes[j].Match.Methods, r.Match.Methods); m != "" {
				add(f+".match", "same host and path_prefix as routes[%d] (%s), both accepting %s", j, c.Routes[j].Name, m)
			}
		}
		seen[k] = append(seen[k], i)
	}
	return errors.Join(errs...)
}

func validateMatch(f string, m *Match, add func(string, string, ...any)) {
	p := m.PathPrefix
	switch {
	case p == "" || p[0] != '/':
		add(f+".path_prefix", "%q must start with /", p)
	case strings.ContainsAny(p, "%?#") || hasCtl(p):
		add(f+".path_prefix", "%q must be a plain path (no %%, ?, # or control characters)", p)
	case cleanPrefix(p) != p:
		add(f+".path_prefix", "%q is not clean; write %q", p, cleanPrefix(p))
	}
	for j, meth := range m.Methods {
		if !validMethod(meth) {
			add(fmt.Sprintf("%s.methods[%d]", f, j), "%q is not an upper-case HTTP method", meth)
		}
	}
	if m.Host != "" {
		if strings.ContainsAny(m.Host, "/:@ ") || hasCtl(m.Host) {
			add(f+".host", "%q must be a host name without scheme, port or path", m.Host)
		}
	}
}

// cleanPrefix is path.Clean that keeps one trailing slash.
func cleanPrefix(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func validateUpstream(f string, u *Upstream, public bool, add func(string, string, ...any)) {
	if len(u.Targets) == 0 {
		add(f+".targets", "at least one target is required")
	}
	for j, t := range u.Targets {
		if _, err := parseTarget(t); err != nil {
			add(fmt.Sprintf("%s.targets[%d]", f, j), "%v", err)
		}
	}
	for j, t := range u.TestTargets {
		if _, err := parseTarget(t); err != nil {
			add(fmt.Sprintf("%s.test_targets[%d]", f, j), "%v", err)
		}
	}
	if public && len(u.TestTargets) > 0 {
		add(f+".test_targets", "a public route reads no key, so it has no test traffic to route")
	}
	if u.Timeout < 0 {
		add(f+".timeout", "must not be negative")
	}
	if u.Secret != nil && *u.Secret == "" {
		add(f+".secret", "configured but empty (an unset ${VAR}?); remove it to use upstream_secret")
	}
	if h := u.HealthCheck; h != nil {
		if h.Path == "" || h.Path[0] != '/' || hasCtl(h.Path) {
			add(f+".health_check.path", "%q must start with /", h.Path)
		}
		if h.Interval < 0 || (h.Interval > 0 && h.Interval.D() < 100*time.Millisecond) {
			add(f+".health_check.interval", "must be at least 100ms (default 10s)")
		}
		if h.Timeout < 0 {
			add(f+".health_check.timeout", "must not be negative")
		}
	}
}

func parseTarget(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL with a host", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q must not have user info, query or fragment", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func validateAuth(f string, a *Auth, public bool, add func(string, string, ...any)) {
	if public && (len(a.Scopes) > 0 || len(a.Plans) > 0 || a.AllowQueryKey) {
		add(f, "a public route (required: false) cannot have scopes, plans or allow_query_key")
	}
	for m, scopes := range a.Scopes {
		if m != "*" && !validMethod(m) {
			add(f+".scopes", "%q is not an upper-case HTTP method or *", m)
		}
		for j, s := range scopes {
			if !keygate.ValidScope(s, false) {
				add(fmt.Sprintf("%s.scopes.%s[%d]", f, m, j), "%q is not a scope of the form resource:action", s)
			}
		}
	}
	for j, p := range a.Plans {
		if !keygate.ValidPlanName(p) {
			add(fmt.Sprintf("%s.plans[%d]", f, j), "%q is not a plan name", p)
		}
	}
}

func validateCORS(f string, c *CORS, add func(string, string, ...any)) {
	for j, o := range c.AllowOrigins {
		if o == "*" {
			if c.AllowCredentials {
				add(fmt.Sprintf("%s.allow_origins[%d]", f, j), "\"*\" cannot be combined with allow_credentials")
			}
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			add(fmt.Sprintf("%s.allow_origins[%d]", f, j), "%q is not an origin like https://app.example.com or *", o)
		}
	}
	for j, m := range c.AllowMethods {
		if !validMethod(m) {
			add(fmt.Sprintf("%s.allow_methods[%d]", f, j), "%q is not an upper-case HTTP method", m)
		}
	}
	for j, h := range c.AllowHeaders {
		if !validToken(h) {
			add(fmt.Sprintf("%s.allow_headers[%d]", f, j), "%q is not a header name", h)
		}
	}
	for j, h := range c.ExposeHeaders {
		if !validToken(h) {
			add(fmt.Sprintf("%s.expose_headers[%d]", f, j), "%q is not a header name", h)
		}
	}
	if c.MaxAge < 0 {
		add(f+".max_age", "must not be negative")
	}
}

func validateDeprecated(f string, d *Deprecated, add func(string, string, ...any)) {
	var since, sunset time.Time
	var err error
	if d.Since != "" {
		if since, err = time.Parse(time.RFC3339, d.Since); err != nil {
			add(f+".since", "%q is not an RFC 3339 time like 2026-06-01T00:00:00Z", d.Since)
		}
	}
	if d.Sunset != "" {
		if sunset, err = time.Parse(time.RFC3339, d.Sunset); err != nil {
			add(f+".sunset", "%q is not an RFC 3339 time like 2027-06-01T00:00:00Z", d.Sunset)
		}
	}
	if !since.IsZero() && !sunset.IsZero() && sunset.Before(since) {
		add(f+".sunset", "is before since")
	}
	if d.Link != "" {
		u, err := url.Parse(d.Link)
		if err != nil || !u.IsAbs() || u.Host == "" || strings.ContainsAny(d.Link, "<>\" ") {
			add(f+".link", "%q is not an absolute URL", d.Link)
		}
	}
}

func overlap(a, b []string) string {
	if len(a) == 0 && len(b) == 0 {
		return "every method"
	}
	if len(a) == 0 {
		return b[0]
	}
	if len(b) == 0 {
		return a[0]
	}
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return x
			}
		}
	}
	return ""
}

func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validToken reports whether s is an RFC 9110 token (a header name).
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// parseTrusted parses validated trusted_proxies.
func parseTrusted(list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := keygate.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}
