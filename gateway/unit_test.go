package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/ratelimit"
)

func TestCleanRequestPath(t *testing.T) {
	tests := []struct {
		target string
		want   string
		bad    bool
	}{
		{"/v1/products", "/v1/products", false},
		{"/v1/products/", "/v1/products/", false},
		{"/v1//products///42", "/v1/products/42", false},
		{"/v1/products/../admin", "/v1/admin", false},
		{"/v1/products/./42", "/v1/products/42", false},
		{"/v1/products/%2e%2e/admin", "/v1/admin", false},
		{"/../../etc/passwd", "/etc/passwd", false},
		{"/v1/products/a%20b", "/v1/products/a b", false},
		{"/v1/products%2Fadmin", "", true},
		{"/v1/products%2fadmin", "", true},
		{"/v1/products%252Fadmin", "", true},
		{"/v1/products%5Cadmin", "", true},
		{"/v1/products/%00", "", true},
		{"/v1/products/%ff", "", true},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "http://x"+tt.target, nil)
		got, bad := cleanRequestPath(r)
		if (bad != "") != tt.bad || got != tt.want {
			t.Errorf("cleanRequestPath(%q) = %q, %q; want %q, bad %v", tt.target, got, bad, tt.want, tt.bad)
		}
	}
}

func TestMatch(t *testing.T) {
	cfg := &Config{Routes: []Route{
		{Name: "products", Match: Match{PathPrefix: "/v1/products", Methods: []string{"GET"}}, Upstream: Upstream{Targets: []string{"http://a"}}},
		{Name: "products-write", Match: Match{PathPrefix: "/v1/products", Methods: []string{"POST"}}, Upstream: Upstream{Targets: []string{"http://a"}}},
		{Name: "v1", Match: Match{PathPrefix: "/v1"}, Upstream: Upstream{Targets: []string{"http://a"}}},
		{Name: "special", Match: Match{PathPrefix: "/v1/products/special"}, Upstream: Upstream{Targets: []string{"http://a"}}},
		{Name: "hosted", Match: Match{PathPrefix: "/v1", Host: "api.example.com"}, Upstream: Upstream{Targets: []string{"http://a"}}},
		{Name: "root", Match: Match{PathPrefix: "/", Host: "www.example.com"}, Upstream: Upstream{Targets: []string{"http://a"}}},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{targets: map[string]*target{}}
	g.metrics, _ = newMetrics(nil)
	tb := g.compile(cfg, time.Now())
	tests := []struct{ host, path, method, want string }{
		{"x", "/v1/products", "GET", "products"},
		{"x", "/v1/products/42", "GET", "products"},
		{"x", "/v1/products/42", "POST", "products-write"},
		{"x", "/v1/products/42", "DELETE", "v1"},
		{"x", "/v1/productsX", "GET", "v1"},
		{"x", "/v1/products/special/1", "GET", "special"},
		{"x", "/v2", "GET", ""},
		{"API.example.com", "/v1/products", "GET", "hosted"},
		{"www.example.com", "/anything", "GET", "root"},
		{"x", "/anything", "GET", ""},
		{"x", "/v1/products", "", "products"}, // preflight: methods ignored
	}
	for _, tt := range tests {
		r := tb.match(tt.host, tt.path, tt.method)
		got := ""
		if r != nil {
			got = r.name
		}
		if got != tt.want {
			t.Errorf("match(%q, %q, %q) = %q; want %q", tt.host, tt.path, tt.method, got, tt.want)
		}
	}
}

func TestRateLimitFields(t *testing.T) {
	tests := []struct {
		name          string
		states        []ratelimit.State
		policy, limit string
	}{
		{"spec example", []ratelimit.State{
			{Name: "burst", Limit: 5, Remaining: 4, Reset: 200 * time.Millisecond, Window: time.Second},
			{Name: "minute", Limit: 100, Remaining: 57, Reset: 29500 * time.Millisecond, Window: time.Minute},
			{Name: "quota", Limit: 5000, Remaining: 4900, Reset: 48 * time.Hour, Window: 30 * 24 * time.Hour},
		}, `"burst";q=5;w=1, "minute";q=100;w=60, "quota";q=5000;w=2592000`, `"minute";r=57;t=30`},
		{"tie goes to the shorter window", []ratelimit.State{
			{Name: "minute", Limit: 100, Remaining: 50, Reset: time.Second, Window: time.Minute},
			{Name: "burst", Limit: 10, Remaining: 5, Reset: time.Second, Window: time.Second},
		}, `"minute";q=100;w=60, "burst";q=10;w=1`, `"burst";r=5;t=1`},
		{"exhausted, t always sent", []ratelimit.State{
			{Name: "consumer-quota", Limit: 1e15, Remaining: 0, Reset: 0, Window: 24 * time.Hour},
			{Name: "x", Limit: 1e15, Remaining: 1e15 - 1, Reset: 0, Window: time.Hour},
		}, `"consumer-quota";q=1000000000000000;w=86400, "x";q=1000000000000000;w=3600`, `"consumer-quota";r=0;t=0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			setRateLimitFields(h, &ratelimit.Decision{States: tt.states}, nil)
			if got := h.Get("RateLimit-Policy"); got != tt.policy {
				t.Errorf("RateLimit-Policy = %s; want %s", got, tt.policy)
			}
			if got := h.Get("RateLimit"); got != tt.limit {
				t.Errorf("RateLimit = %s; want %s", got, tt.limit)
			}
		})
	}
	h := http.Header{}
	setRateLimitFields(h, &ratelimit.Decision{}, nil)
	if len(h) != 0 {
		t.Errorf("no states: fields %v; want none", h)
	}
	for d, want := range map[time.Duration]string{0: "1", time.Millisecond: "1", time.Second: "1", 1001 * time.Millisecond: "2", time.Minute: "60"} {
		if got := retryAfter(d); got != want {
			t.Errorf("retryAfter(%v) = %s; want %s", d, got, want)
		}
	}
}

func TestRateLimitFieldsAllocs(t *testing.T) {
	d := &ratelimit.Decision{States: []ratelimit.State{
		{Name: "burst", Limit: 5, Remaining: 4, Reset: time.Second, Window: time.Second},
		{Name: "minute", Limit: 100, Remaining: 57, Reset: 30 * time.Second, Window: time.Minute},
	}}
	h := http.Header{}
	buf := make([]byte, 0, 256)
	n := testing.AllocsPerRun(100, func() { buf = setRateLimitFields(h, d, buf) })
	if n > 4 { // two strings and two one-element slices
		t.Errorf("setRateLimitFields allocates %v times; want at most 4", n)
	}
}

func TestSignatureIndependently(t *testing.T) {
	secret := []byte("s3cret")
	got := Signature(secret, 1700000000, "GET", "/v1/products", "req-1", "key_1", "con_1", "gold", "live", "products:read,products:write")
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("1700000000\nGET\n/v1/products\nreq-1\nkey_1\ncon_1\ngold\nlive\nproducts:read,products:write"))
	want := "t=1700000000,v1=" + hex.EncodeToString(mac.Sum(nil))
	if got != want {
		t.Errorf("Signature = %s; want %s", got, want)
	}
}

func TestReadKey(t *testing.T) {
	tests := []struct {
		name       string
		hdr        http.Header
		query      string
		allowQuery bool
		key, rest  string
		bad        bool
	}{
		{"bearer", http.Header{"Authorization": {"Bearer kg_x"}}, "", false, "kg_x", "", false},
		{"bearer case", http.Header{"Authorization": {"bEaReR   kg_x "}}, "", false, "kg_x", "", false},
		{"basic is not a key", http.Header{"Authorization": {"Basic abc"}}, "", false, "", "", false},
		{"x-api-key", http.Header{"X-Api-Key": {"kg_y"}}, "", false, "kg_y", "", false},
		{"both same", http.Header{"Authorization": {"Bearer kg_y"}, "X-Api-Key": {"kg_y"}}, "", false, "kg_y", "", false},
		{"both different", http.Header{"Authorization": {"Bearer kg_x"}, "X-Api-Key": {"kg_y"}}, "", false, "", "", true},
		{"two authorization", http.Header{"Authorization": {"Bearer a", "Bearer b"}}, "", false, "", "", true},
		{"two x-api-key", http.Header{"X-Api-Key": {"a", "a"}}, "", false, "", "", true},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, "", false, "", "", true},
		{"query allowed", http.Header{}, "a=1&api_key=kg_q&b=2", true, "kg_q", "a=1&b=2", false},
		{"query not allowed but removed", http.Header{}, "api_key=kg_q&b=2", false, "", "b=2", false},
		{"query encoded name", http.Header{}, "api%5Fkey=kg_q", true, "kg_q", "", false},
		{"query twice", http.Header{}, "api_key=a&api_key=b", true, "", "", true},
		{"query similar name kept", http.Header{}, "my_api_key=1", true, "", "my_api_key=1", false},
	}
	for _, tt := range tests {
		r := &http.Request{Header: tt.hdr, URL: mustURL("/x?" + tt.query)}
		key, _, rest, bad := readKey(r, tt.allowQuery)
		if key != tt.key || (bad != "") != tt.bad || (!tt.bad && rest != tt.rest) {
			t.Errorf("%s: readKey = %q, rest %q, bad %q; want %q, %q, bad %v", tt.name, key, rest, bad, tt.key, tt.rest, tt.bad)
		}
	}
}

func TestClientAddr(t *testing.T) {
	trusted := parseTrusted([]string{"10.0.0.0/8", "::1"})
	tests := []struct {
		remote, xff, want string
	}{
		{"203.0.113.5:1234", "1.2.3.4", "203.0.113.5"},             // untrusted: XFF ignored
		{"10.0.0.1:1234", "1.2.3.4", "1.2.3.4"},                    // trusted proxy
		{"10.0.0.1:1234", "9.9.9.9, 1.2.3.4, 10.0.0.2", "1.2.3.4"}, // rightmost untrusted
		{"10.0.0.1:1234", "garbage", "10.0.0.1"},
		{"[::1]:80", "2001:db8::1", "2001:db8::1"},
		{"10.0.0.1:1234", "", "10.0.0.1"},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		_, got, _ := clientAddr(r, trusted)
		if got != netip.MustParseAddr(tt.want) {
			t.Errorf("clientAddr(%s, XFF %q) = %v; want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
}

func TestCacheBoundedAndLRU(t *testing.T) {
	c := newResponseCache(time.Minute, 8000) // entries up to 1000 bytes
	now := time.Now()
	for i := 0; i < 20; i++ {
		c.put(&cachedResponse{key: strings.Repeat("k", 10) + string(rune('a'+i)), body: make([]byte, 500), stored: now, expires: now.Add(time.Minute)})
	}
	if c.size > c.max || c.len() >= 20 {
		t.Errorf("cache holds %d entries, %d bytes; want at most %d bytes", c.len(), c.size, c.max)
	}
	c.put(&cachedResponse{key: "big", body: make([]byte, 5000), stored: now, expires: now.Add(time.Minute)})
	if c.get("big", now) != nil {
		t.Error("an entry over max/8 was stored")
	}
	c.put(&cachedResponse{key: "old", body: []byte("x"), stored: now, expires: now.Add(time.Second)})
	if c.get("old", now.Add(2*time.Second)) != nil {
		t.Error("an expired entry was returned")
	}
}

func TestCacheable(t *testing.T) {
	tests := []struct {
		status int
		hdr    http.Header
		want   bool
	}{
		{200, http.Header{}, true},
		{200, http.Header{"Cache-Control": {"public, max-age=60"}}, true},
		{201, http.Header{}, false},
		{200, http.Header{"Set-Cookie": {"a=b"}}, false},
		{200, http.Header{"Cache-Control": {"Private"}}, false},
		{200, http.Header{"Cache-Control": {"max-age=0, no-store"}}, false},
		{200, http.Header{"Cache-Control": {"no-cache=\"x\""}}, false},
		{200, http.Header{"Vary": {"Accept-Encoding"}}, false},
	}
	for _, tt := range tests {
		if got := cacheable(&http.Response{StatusCode: tt.status, Header: tt.hdr}); got != tt.want {
			t.Errorf("cacheable(%d, %v) = %v; want %v", tt.status, tt.hdr, got, tt.want)
		}
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
