package gateway

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const specExample = `
upstream_secret: s3cret
trusted_proxies: [10.0.0.0/8]
routes:
  - name: products
    match: {path_prefix: /v1/products, methods: [GET, POST], host: ""}
    upstream:
      targets: [http://127.0.0.1:9001, http://127.0.0.1:9002]
      test_targets: [http://127.0.0.1:9101]
      strip_prefix: false
      timeout: 10s
      secret: other
      health_check: {path: /healthz, interval: 5s}
    auth:
      required: true
      scopes: {GET: [products:read], POST: [products:write]}
      plans: []
      allow_query_key: false
    rate_limits: []
    cors: {allow_origins: [], allow_methods: [], allow_headers: [], max_age: 10m}
    deprecated: {since: "2026-06-01T00:00:00Z", sunset: "2027-06-01T00:00:00Z", link: "https://example.com/migrate"}
    cache: {ttl: 0s}
    max_body: 1MiB
  - name: public
    match: {path_prefix: /status}
    upstream: {targets: ["http://127.0.0.1:9003/base"]}
    auth: {required: false}
    rate_limits: [{name: second, limit: 10, period: 1s}]
`

func decode(t *testing.T, s string) *Config {
	t.Helper()
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(s))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return &c
}

func TestConfigDecodesSpecExample(t *testing.T) {
	c := decode(t, specExample)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	r := c.Routes[0]
	if r.Upstream.Timeout.D().String() != "10s" || *r.Upstream.Secret != "other" || r.MaxBody != 1<<20 ||
		r.Upstream.HealthCheck.Interval.D().Seconds() != 5 || r.CORS.MaxAge.D().Minutes() != 10 {
		t.Errorf("decoded route = %+v", r)
	}
	if c.Routes[1].RateLimits[0].Period.D().Seconds() != 1 {
		t.Errorf("rate_limits = %+v", c.Routes[1].RateLimits)
	}
}

func TestConfigUnknownFieldHasLine(t *testing.T) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte("routes:\n  - name: a\n    matchh: {}\n")))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("Decode = %v; want an error naming line 3", err)
	}
}

func TestValidate(t *testing.T) {
	base := func() *Config { return decode(t, specExample) }
	tests := []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"empty upstream secret", func(c *Config) { c.UpstreamSecret = ptr("") }, "upstream_secret: configured but empty"},
		{"empty route secret", func(c *Config) { c.Routes[0].Upstream.Secret = ptr("") }, "routes[0].upstream.secret: configured but empty"},
		{"bad target", func(c *Config) { c.Routes[0].Upstream.Targets[1] = "ftp://x" }, "routes[0].upstream.targets[1]:"},
		{"no targets", func(c *Config) { c.Routes[1].Upstream.Targets = nil }, "routes[1].upstream.targets: at least one"},
		{"bad test target", func(c *Config) { c.Routes[0].Upstream.TestTargets[0] = "127.0.0.1:9" }, "routes[0].upstream.test_targets[0]:"},
		{"dup name", func(c *Config) { c.Routes[1].Name = "products" }, "routes[1].name: \"products\" is already"},
		{"bad name", func(c *Config) { c.Routes[1].Name = "Bad Name" }, "routes[1].name:"},
		{"unclean prefix", func(c *Config) { c.Routes[0].Match.PathPrefix = "/v1/../x" }, "routes[0].match.path_prefix:"},
		{"relative prefix", func(c *Config) { c.Routes[0].Match.PathPrefix = "v1" }, "routes[0].match.path_prefix:"},
		{"encoded prefix", func(c *Config) { c.Routes[0].Match.PathPrefix = "/v1%2Fx" }, "routes[0].match.path_prefix:"},
		{"bad method", func(c *Config) { c.Routes[0].Match.Methods = []string{"get"} }, "routes[0].match.methods[0]:"},
		{"bad scope", func(c *Config) { c.Routes[0].Auth.Scopes["GET"] = []string{"nocolon"} }, "routes[0].auth.scopes.GET[0]:"},
		{"bad scope method", func(c *Config) { c.Routes[0].Auth.Scopes["get"] = nil }, "routes[0].auth.scopes:"},
		{"bad plan", func(c *Config) { c.Routes[0].Auth.Plans = []string{"Gold!"} }, "routes[0].auth.plans[0]:"},
		{"public with scopes", func(c *Config) { c.Routes[1].Auth.Scopes = map[string][]string{"GET": {"a:b"}} }, "routes[1].auth:"},
		{"ip limits on keyed route", func(c *Config) { c.Routes[0].RateLimits = c.Routes[1].RateLimits }, "routes[0].rate_limits:"},
		{"bad window", func(c *Config) { c.Routes[1].RateLimits[0].Limit = 0 }, "routes[1].rate_limits[0].limit"},
		{"bad trusted proxy", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/33"} }, "trusted_proxies[0]:"},
		{"bad origin", func(c *Config) { c.Routes[0].CORS.AllowOrigins = []string{"app.example.com"} }, "routes[0].cors.allow_origins[0]:"},
		{"star with credentials", func(c *Config) {
			c.Routes[0].CORS.AllowOrigins = []string{"*"}
			c.Routes[0].CORS.AllowCredentials = true
		}, "routes[0].cors.allow_origins[0]:"},
		{"bad since", func(c *Config) { c.Routes[0].Deprecated.Since = "June" }, "routes[0].deprecated.since:"},
		{"bad link", func(c *Config) { c.Routes[0].Deprecated.Link = "/relative" }, "routes[0].deprecated.link:"},
		{"bad health path", func(c *Config) { c.Routes[0].Upstream.HealthCheck.Path = "healthz" }, "routes[0].upstream.health_check.path:"},
		{"overlapping routes", func(c *Config) {
			c.Routes = append(c.Routes, c.Routes[0])
			c.Routes[2].Name = "again"
			c.Routes[2].Match.Methods = []string{"POST"}
		}, "routes[2].match: same host and path_prefix as routes[0]"},
		{"bad max_body", func(c *Config) { c.Routes[0].MaxBody = -5 }, "routes[0].max_body:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	c := decode(t, specExample)
	c.UpstreamSecret = ptr("")
	c.Routes[1].Upstream.Targets = []string{"nope"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "upstream_secret") || !strings.Contains(err.Error(), "routes[1].upstream.targets[0]") {
		t.Errorf("Validate() = %v; want both problems", err)
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"1048576", 1 << 20, false}, {"1MiB", 1 << 20, false}, {"10MB", 10e6, false}, {"512KiB", 512 << 10, false},
		{"2GB", 2e9, false}, {"-1", -1, false}, {"-2", 0, true}, {"1TB", 0, true}, {"", 0, true}, {"MB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}
