package gateway

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
)

func keyedRoute(name, prefix string, targets ...string) Route {
	return Route{Name: name, Match: Match{PathPrefix: prefix}, Upstream: Upstream{Targets: targets}}
}

func publicRoute(name, prefix string, targets ...string) Route {
	r := keyedRoute(name, prefix, targets...)
	r.Auth.Required = ptr(false)
	return r
}

type problem struct {
	Type, Title, Detail, Code string
	Status                    int
}

func decodeProblem(t *testing.T, resp *http.Response, body string) problem {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q; want application/problem+json (body %s)", ct, body)
	}
	var p problem
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	if p.Status != resp.StatusCode || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v does not match status %d or lacks members", p, resp.StatusCode)
	}
	return p
}

func TestProxyIdentityAndSigning(t *testing.T) {
	up := newUpstream(t, nil)
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{ID: "key_a", ConsumerID: "con_a", Plan: "gold", Scopes: []string{"products:read", "products:write"}})
	cfg := &Config{UpstreamSecret: ptr("s3cret"), Routes: []Route{keyedRoute("products", "/v1/products", up.URL)}}
	_, srv := newTestGateway(t, cfg, auth)

	resp, body := do(t, "GET", srv.URL+"/v1//products/../products/42?a=1&api_key=leak", map[string]string{
		"Authorization":      "Bearer " + key,
		"X-Keygate-Key-Id":   "forged",
		"X-Keygate-Plan":     "forged",
		"X-Keygate-Whatever": "forged",
		"X-Request-Id":       "req-123",
		"Traceparent":        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"X-Forwarded-For":    "6.6.6.6",
	}, nil)
	if resp.StatusCode != 200 || body != "ok /v1/products/42" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Request-Id") != "req-123" {
		t.Errorf("answer X-Request-Id = %q", resp.Header.Get("X-Request-Id"))
	}
	r := up.last()
	if r.Header.Get("Authorization") != "" || r.URL.Query().Has("api_key") || strings.Contains(r.URL.RawQuery, "leak") {
		t.Errorf("key forwarded: Authorization %q query %q", r.Header.Get("Authorization"), r.URL.RawQuery)
	}
	if r.URL.RawQuery != "a=1" {
		t.Errorf("query = %q; want a=1", r.URL.RawQuery)
	}
	want := map[string]string{
		"X-Keygate-Key-Id": "key_a", "X-Keygate-Consumer-Id": "con_a", "X-Keygate-Plan": "gold",
		"X-Keygate-Env": "live", "X-Keygate-Scopes": "products:read,products:write", "X-Keygate-Whatever": "",
		"X-Request-Id": "req-123", "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
	}
	for k, v := range want {
		if got := r.Header.Values(k); strings.Join(got, "|") != v {
			t.Errorf("upstream %s = %q; want %q", k, got, v)
		}
	}
	sig := r.Header.Get("X-Keygate-Signature")
	ts, hexsum, ok := strings.Cut(strings.TrimPrefix(sig, "t="), ",v1=")
	if !ok {
		t.Fatalf("signature %q", sig)
	}
	if n, _ := strconv.ParseInt(ts, 10, 64); time.Since(time.Unix(n, 0)).Abs() > 5*time.Second {
		t.Errorf("signature time %s is not now", ts)
	}
	mac := hmac.New(sha256.New, []byte("s3cret"))
	fmt.Fprintf(mac, "%s\nGET\n/v1/products/42\nreq-123\nkey_a\ncon_a\ngold\nlive\nproducts:read,products:write", ts)
	if hexsum != hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("signature does not verify: %s", sig)
	}
}

func TestUnsignedWithoutSecretAndRouteSecret(t *testing.T) {
	up := newUpstream(t, nil)
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	r2 := keyedRoute("signed", "/signed", up.URL)
	r2.Upstream.Secret = ptr("route-secret")
	r2.Upstream.StripPrefix = true
	cfg := &Config{Routes: []Route{keyedRoute("plain", "/plain", up.URL), r2}}
	_, srv := newTestGateway(t, cfg, auth)
	do(t, "GET", srv.URL+"/plain/x", map[string]string{"X-API-Key": key, "X-Keygate-Signature": "forged"}, nil)
	if s := up.last().Header.Get("X-Keygate-Signature"); s != "" {
		t.Errorf("unsigned route forwarded signature %q", s)
	}
	if up.last().Header.Get("X-Api-Key") != "" {
		t.Error("X-API-Key forwarded")
	}
	do(t, "GET", srv.URL+"/signed/x", map[string]string{"X-API-Key": key}, nil)
	r := up.last()
	if r.URL.Path != "/x" {
		t.Errorf("strip_prefix: upstream path %q; want /x", r.URL.Path)
	}
	ts, _, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("X-Keygate-Signature"), "t="), ",")
	n, _ := strconv.ParseInt(ts, 10, 64)
	e := auth.entries[key]
	want := Signature([]byte("route-secret"), n, "GET", "/x", r.Header.Get("X-Request-Id"), e.Key.ID, e.ConsumerID, "", "live", "")
	if got := r.Header.Get("X-Keygate-Signature"); got != want {
		t.Errorf("signature %q; want %q", got, want)
	}
	if len(r.Header.Get("X-Request-Id")) != 32 {
		t.Errorf("generated X-Request-Id %q", r.Header.Get("X-Request-Id"))
	}
}

func TestAuthAnswers(t *testing.T) {
	up := newUpstream(t, nil)
	test := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "test") })
	auth := newFakeAuth()
	reader := auth.addKey(t, keygate.Key{Scopes: []string{"products:read"}, Plan: "gold"})
	star := auth.addKey(t, keygate.Key{Scopes: []string{"products:*"}, Plan: "gold"})
	silver := auth.addKey(t, keygate.Key{Scopes: []string{"*:*"}, Plan: "silver"})
	testKey := auth.addKey(t, keygate.Key{Env: "test", Scopes: []string{"products:read"}, Plan: "gold"})
	ipKey := auth.addKey(t, keygate.Key{IPAllow: []string{"203.0.113.0/24"}, Plan: "gold", Scopes: []string{"products:read"}})
	pk := auth.addKey(t, keygate.Key{Kind: keygate.KindPublishable, ReferrerAllow: []string{"https://app.example.com"}, Plan: "gold", Scopes: []string{"products:read"}})
	revoked := auth.addKey(t, keygate.Key{})
	auth.codes[revoked] = keygate.CodeRevoked
	expired := auth.addKey(t, keygate.Key{})
	auth.codes[expired] = keygate.CodeExpired
	disabled := auth.addKey(t, keygate.Key{})
	auth.codes[disabled] = keygate.CodeDisabled

	products := keyedRoute("products", "/v1/products", up.URL)
	products.Match.Methods = []string{"GET", "POST"}
	products.Auth.Scopes = map[string][]string{"GET": {"products:read"}, "POST": {"products:write"}}
	products.Auth.Plans = []string{"gold"}
	products.Upstream.TestTargets = []string{test.URL}
	orders := keyedRoute("orders", "/v1/orders", up.URL)
	orders.Auth.AllowQueryKey = true
	cfg := &Config{Routes: []Route{products, orders}}
	_, srv := newTestGateway(t, cfg, auth)

	tests := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		code               string
	}{
		{"no key", "GET", "/v1/products", nil, 401, "UNAUTHORIZED"},
		{"unknown key", "GET", "/v1/products", map[string]string{"X-API-Key": "kg_sk_live_nope"}, 401, "NOT_FOUND"},
		{"revoked", "GET", "/v1/products", map[string]string{"X-API-Key": revoked}, 401, "REVOKED"},
		{"expired", "GET", "/v1/products", map[string]string{"X-API-Key": expired}, 401, "EXPIRED"},
		{"disabled", "GET", "/v1/products", map[string]string{"X-API-Key": disabled}, 401, "DISABLED"},
		{"reader GET", "GET", "/v1/products", map[string]string{"Authorization": "Bearer " + reader}, 200, ""},
		{"reader POST", "POST", "/v1/products", map[string]string{"Authorization": "Bearer " + reader}, 403, "INSUFFICIENT_SCOPE"},
		{"wildcard POST", "POST", "/v1/products", map[string]string{"Authorization": "Bearer " + star}, 200, ""},
		{"plan refused", "GET", "/v1/products", map[string]string{"X-API-Key": silver}, 403, "PLAN_NOT_ALLOWED"},
		{"test key to test targets", "GET", "/v1/products", map[string]string{"X-API-Key": testKey}, 200, ""},
		{"test key without test targets", "GET", "/v1/orders", map[string]string{"X-API-Key": testKey}, 403, "ENV_NOT_ALLOWED"},
		{"ip refused", "GET", "/v1/products", map[string]string{"X-API-Key": ipKey}, 403, "IP_NOT_ALLOWED"},
		{"pk without origin", "GET", "/v1/products", map[string]string{"X-API-Key": pk}, 403, "REFERRER_NOT_ALLOWED"},
		{"pk wrong origin", "GET", "/v1/products", map[string]string{"X-API-Key": pk, "Origin": "https://evil.example"}, 403, "REFERRER_NOT_ALLOWED"},
		{"pk right referer", "GET", "/v1/products", map[string]string{"X-API-Key": pk, "Referer": "https://app.example.com/page?x=1"}, 200, ""},
		{"no route", "GET", "/v2/x", map[string]string{"X-API-Key": reader}, 404, "ROUTE_NOT_FOUND"},
		{"method not matched", "DELETE", "/v1/products", map[string]string{"X-API-Key": star}, 404, "ROUTE_NOT_FOUND"},
		{"query key allowed", "GET", "/v1/orders?api_key=" + reader, nil, 200, ""},
		{"query key not allowed", "GET", "/v1/products?api_key=" + reader, nil, 401, "UNAUTHORIZED"},
		{"encoded slash", "GET", "/v1/products%2F..%2Fadmin", map[string]string{"X-API-Key": reader}, 400, "BAD_REQUEST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, srv.URL+tt.path, tt.hdr, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.code == "" {
				return
			}
			p := decodeProblem(t, resp, body)
			if p.Code != tt.code {
				t.Errorf("code %s; want %s", p.Code, tt.code)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer realm="keygate"`) {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if test.count() != 1 {
		t.Errorf("test targets got %d requests; want 1", test.count())
	}
}

func TestRateLimitFieldsAnd429(t *testing.T) {
	up := newUpstream(t, nil)
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	var n atomic.Int64
	auth.limit = func(e *verify.Entry, d *ratelimit.Decision) (string, error) {
		rem := 2 - n.Add(1)
		d.States = append(d.States, ratelimit.State{Name: "minute", Kind: ratelimit.Window, Limit: 2, Remaining: max(rem, 0), Reset: 30 * time.Second, Window: time.Minute})
		if rem < 0 {
			d.Allowed, d.Denied, d.RetryAfter = false, 0, 1500*time.Millisecond
			return keygate.CodeRateLimited, nil
		}
		return "", nil
	}
	up2 := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit", `"upstream";r=1;t=1`)
		io.WriteString(w, "ok")
	})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("a", "/a", up2.URL)}}, auth)
	_ = up
	for i, want := range []int{200, 200, 429} {
		resp, body := do(t, "GET", srv.URL+"/a", map[string]string{"X-API-Key": key}, nil)
		if resp.StatusCode != want {
			t.Fatalf("request %d: status %d; want %d", i, resp.StatusCode, want)
		}
		if got := resp.Header.Values("RateLimit-Policy"); len(got) != 1 || got[0] != `"minute";q=2;w=60` {
			t.Errorf("request %d: RateLimit-Policy %q", i, got)
		}
		if got := resp.Header.Values("RateLimit"); len(got) != 1 || !strings.HasPrefix(got[0], `"minute";r=`) {
			t.Errorf("request %d: RateLimit %q", i, got)
		}
		if want == 429 {
			if p := decodeProblem(t, resp, body); p.Code != "RATE_LIMITED" {
				t.Errorf("code %s", p.Code)
			}
			// The draft's quota-exceeded problem type, naming the refusing policy.
			if !strings.Contains(body, `"type":"https://iana.org/assignments/http-problem-types#quota-exceeded"`) ||
				!strings.Contains(body, `"violated-policies":["minute"]`) {
				t.Errorf("429 body = %s; want the quota-exceeded type and violated-policies [minute]", body)
			}
			if resp.Header.Get("Retry-After") != "2" {
				t.Errorf("Retry-After = %q; want 2", resp.Header.Get("Retry-After"))
			}
		}
	}
	auth.limit = func(*verify.Entry, *ratelimit.Decision) (string, error) {
		return "", &keygate.Error{Code: keygate.CodeUnavailable, Message: "down"}
	}
	resp, body := do(t, "GET", srv.URL+"/a", map[string]string{"X-API-Key": key}, nil)
	if resp.StatusCode != 503 || decodeProblem(t, resp, body).Code != "UNAVAILABLE" {
		t.Errorf("limiter down: %d %s", resp.StatusCode, body)
	}
	if !strings.Contains(body, `"type":"urn:keygate:problem:unavailable"`) {
		t.Errorf("503 type in %s; want urn:keygate:problem:unavailable", body)
	}
	auth.err = fmt.Errorf("db down")
	resp, body = do(t, "GET", srv.URL+"/a", map[string]string{"X-API-Key": "kg_sk_live_x"}, nil)
	if resp.StatusCode != 503 || decodeProblem(t, resp, body).Code != "UNAVAILABLE" {
		t.Errorf("store down: %d %s", resp.StatusCode, body)
	}
}

func TestPublicRoutePerIPLimits(t *testing.T) {
	up := newUpstream(t, nil)
	r := publicRoute("status", "/status", up.URL)
	r.RateLimits = []keygate.Window{{Name: "second", Limit: 2, Period: keygate.Duration(time.Hour)}}
	_, srv := newTestGateway(t, &Config{Routes: []Route{r}}, newFakeAuth())
	codes := []int{}
	for i := 0; i < 3; i++ {
		resp, _ := do(t, "GET", srv.URL+"/status", nil, nil)
		codes = append(codes, resp.StatusCode)
		if resp.Header.Get("RateLimit-Policy") != `"second";q=2;w=3600` {
			t.Errorf("RateLimit-Policy %q", resp.Header.Get("RateLimit-Policy"))
		}
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Errorf("statuses %v; want [200 200 429]", codes)
	}
}

func TestCORSAndDeprecation(t *testing.T) {
	up := newUpstream(t, nil)
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	r := keyedRoute("products", "/v1/products", up.URL)
	r.Match.Methods = []string{"GET"}
	r.CORS = &CORS{AllowOrigins: []string{"https://app.example.com"}, MaxAge: keygate.Duration(10 * time.Minute)}
	r.Deprecated = &Deprecated{Since: "2026-06-01T00:00:00Z", Sunset: "2027-06-01T00:00:00Z", Link: "https://example.com/migrate"}
	nocors := keyedRoute("other", "/other", up.URL)
	_, srv := newTestGateway(t, &Config{Routes: []Route{r, nocors}}, auth)

	pre := map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "x-api-key"}
	resp, _ := do(t, "OPTIONS", srv.URL+"/v1/products/1", pre, nil)
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "GET" || resp.Header.Get("Access-Control-Max-Age") != "600" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if up.count() != 0 {
		t.Error("preflight reached the upstream")
	}
	pre["Origin"] = "https://evil.example"
	resp, _ = do(t, "OPTIONS", srv.URL+"/v1/products/1", pre, nil)
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = do(t, "OPTIONS", srv.URL+"/other", pre, nil)
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight on a route without cors: %d %v", resp.StatusCode, resp.Header)
	}

	resp, _ = do(t, "GET", srv.URL+"/v1/products", map[string]string{"X-API-Key": key, "Origin": "https://app.example.com"}, nil)
	h := resp.Header
	if h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(h.Get("Access-Control-Expose-Headers"), "RateLimit") {
		t.Errorf("actual request CORS fields: %v", h)
	}
	since, _ := time.Parse(time.RFC3339, "2026-06-01T00:00:00Z")
	if h.Get("Deprecation") != "@"+strconv.FormatInt(since.Unix(), 10) || h.Get("Sunset") != "Tue, 01 Jun 2027 00:00:00 GMT" ||
		h.Get("Link") != `<https://example.com/migrate>; rel="deprecation"; type="text/html"` {
		t.Errorf("deprecation fields: %v", h)
	}
	// Even a refusal of a deprecated route says so.
	resp, _ = do(t, "GET", srv.URL+"/v1/products", nil, nil)
	if resp.StatusCode != 401 || resp.Header.Get("Deprecation") == "" || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("401 on a deprecated route: %v", resp.Header)
	}
}

func TestResponseCache(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		switch r.URL.Path {
		case "/c/cookie":
			w.Header().Set("Set-Cookie", "a=b")
		case "/c/private":
			w.Header().Set("Cache-Control", "private")
		case "/c/nostore":
			w.Header().Set("Cache-Control", "no-store")
		case "/c/404":
			w.WriteHeader(404)
		}
		fmt.Fprintf(w, "answer %d", i)
	})
	auth := newFakeAuth()
	gold := auth.addKey(t, keygate.Key{Plan: "gold"})
	gold2 := auth.addKey(t, keygate.Key{Plan: "gold"})
	silver := auth.addKey(t, keygate.Key{Plan: "silver"})
	r := keyedRoute("c", "/c", up.URL)
	r.Cache.TTL = keygate.Duration(time.Minute)
	_, srv := newTestGateway(t, &Config{Routes: []Route{r}}, auth)

	get := func(path, key string) (string, string) {
		resp, body := do(t, "GET", srv.URL+path, map[string]string{"X-API-Key": key}, nil)
		return body, resp.Header.Get("Cache-Status")
	}
	b1, s1 := get("/c/x?q=1", gold)
	b2, s2 := get("/c/x?q=1", gold2)
	if b1 != b2 || !strings.Contains(s1, "fwd=miss") || !strings.Contains(s2, "hit") {
		t.Errorf("same plan: %q (%s), %q (%s); want the second from the cache", b1, s1, b2, s2)
	}
	if b3, _ := get("/c/x?q=1", silver); b3 == b1 {
		t.Error("another plan got a cached answer")
	}
	if b4, _ := get("/c/x?q=2", gold); b4 == b1 {
		t.Error("another query got a cached answer")
	}
	if b5, _ := get("/c/x?q=1&api_key=zzz", gold); b5 != b1 {
		t.Error("api_key is part of the cache key")
	}
	for _, p := range []string{"/c/cookie", "/c/private", "/c/nostore", "/c/404"} {
		a, _ := get(p, gold)
		b, s := get(p, gold)
		if a == b || strings.Contains(s, "hit") {
			t.Errorf("%s was cached (%q, %q, %s)", p, a, b, s)
		}
	}
}

func TestStreamingBothWays(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.Header().Set("Content-Type", "text/plain")
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				io.WriteString(w, "echo "+line)
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("s", "/s", up.URL)}}, auth)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", srv.URL+"/s", pr)
	req.Header.Set("X-API-Key", key)
	respc := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			close(respc)
			return
		}
		respc <- resp
	}()
	io.WriteString(pw, "one\n")
	resp := <-respc
	if resp == nil {
		t.FailNow()
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for _, w := range []string{"one", "two", "three"} {
		if w != "one" {
			io.WriteString(pw, w+"\n")
		}
		done := make(chan string, 1)
		go func() { l, _ := br.ReadString('\n'); done <- l }()
		select {
		case l := <-done:
			if l != "echo "+w+"\n" {
				t.Fatalf("got %q; want echo %s", l, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not streamed through", w)
		}
	}
	pw.Close()
}

func TestWebSocketUpgrade(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || r.Header.Get("X-Keygate-Key-Id") == "" {
			http.Error(w, "no upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	r := keyedRoute("ws", "/ws", up.URL)
	r.Upstream.Timeout = keygate.Duration(200 * time.Millisecond) // must not cut the upgraded connection
	_, srv := newTestGateway(t, &Config{Routes: []Route{r}}, auth)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-API-Key: %s\r\n\r\n", key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, m := range []string{"hello", "world"} {
		fmt.Fprintf(conn, "%s\n", m)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := br.ReadString('\n')
		if err != nil || l != "echo "+m+"\n" {
			t.Fatalf("over the upgraded connection: %q, %v", l, err)
		}
	}
}

func TestUpstreamFailures(t *testing.T) {
	slow := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	sink := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	dead := newUpstream(t, nil)
	dead.Close()
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	rs := keyedRoute("slow", "/slow", slow.URL)
	rs.Upstream.Timeout = keygate.Duration(100 * time.Millisecond)
	rd := keyedRoute("dead", "/dead", dead.URL)
	rb := keyedRoute("body", "/body", sink.URL)
	rb.MaxBody = 1000
	_, srv := newTestGateway(t, &Config{Routes: []Route{rs, rd, rb}}, auth)
	hdr := map[string]string{"X-API-Key": key}

	start := time.Now()
	resp, body := do(t, "GET", srv.URL+"/slow", hdr, nil)
	if resp.StatusCode != 504 || decodeProblem(t, resp, body).Code != "UPSTREAM_TIMEOUT" || time.Since(start) > time.Second {
		t.Errorf("slow upstream: %d %s after %v", resp.StatusCode, body, time.Since(start))
	}
	resp, body = do(t, "GET", srv.URL+"/dead", hdr, nil)
	if resp.StatusCode != 502 || decodeProblem(t, resp, body).Code != "UPSTREAM_UNAVAILABLE" {
		t.Errorf("dead upstream: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", srv.URL+"/body", hdr, strings.NewReader(strings.Repeat("x", 1001)))
	if resp.StatusCode != 413 || decodeProblem(t, resp, body).Code != "PAYLOAD_TOO_LARGE" {
		t.Errorf("declared large body: %d %s", resp.StatusCode, body)
	}
	// A streamed body (no Content-Length) is cut at the limit.
	resp, body = do(t, "POST", srv.URL+"/body", hdr, io.MultiReader(strings.NewReader(strings.Repeat("x", 2000))))
	if resp.StatusCode != 413 {
		t.Errorf("streamed large body: %d %s", resp.StatusCode, body)
	}
	resp, _ = do(t, "POST", srv.URL+"/body", hdr, strings.NewReader(strings.Repeat("x", 1000)))
	if resp.StatusCode != 200 {
		t.Errorf("body at the limit: %d", resp.StatusCode)
	}
}

func TestLoadBalancingAndPassiveHealth(t *testing.T) {
	a := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") })
	b := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	c := newUpstream(t, nil)
	c.Close() // refuses connections
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("lb", "/lb", a.URL, b.URL, c.URL)}}, auth)
	counts := map[int]int{}
	for i := 0; i < 30; i++ {
		resp, _ := do(t, "GET", srv.URL+"/lb", map[string]string{"X-API-Key": key}, nil)
		counts[resp.StatusCode]++
	}
	if counts[502] > 1 {
		t.Errorf("statuses %v: the dead target was tried more than once", counts)
	}
	if a.count() < 10 || b.count() < 10 {
		t.Errorf("round robin: a=%d b=%d; want both about 15", a.count(), b.count())
	}
}

func TestActiveHealthCheck(t *testing.T) {
	var healthy atomic.Bool
	a := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && !healthy.Load() {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "a")
	})
	b := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	r := keyedRoute("hc", "/hc", a.URL, b.URL)
	r.Upstream.HealthCheck = &HealthCheck{Path: "/healthz", Interval: keygate.Duration(100 * time.Millisecond)}
	_, srv := newTestGateway(t, &Config{Routes: []Route{r}}, auth)
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 10; i++ {
		if _, body := do(t, "GET", srv.URL+"/hc", map[string]string{"X-API-Key": key}, nil); body != "b" {
			t.Fatalf("an unhealthy target got traffic: %q", body)
		}
	}
	healthy.Store(true)
	time.Sleep(300 * time.Millisecond)
	seen := map[string]bool{}
	for i := 0; i < 10; i++ {
		_, body := do(t, "GET", srv.URL+"/hc", map[string]string{"X-API-Key": key}, nil)
		seen[body] = true
	}
	if !seen["a"] {
		t.Error("a recovered target got no traffic")
	}
}

func TestReloadUnderLoad(t *testing.T) {
	a := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond)
		io.WriteString(w, "a")
	})
	b := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	cfgA := &Config{Routes: []Route{keyedRoute("r", "/r", a.URL)}}
	cfgB := &Config{Routes: []Route{keyedRoute("r", "/r", b.URL), keyedRoute("new", "/new", b.URL)}}
	g, srv := newTestGateway(t, cfgA, auth)

	var failures, total atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", srv.URL+"/r", nil)
				req.Header.Set("X-API-Key", key)
				resp, err := http.DefaultClient.Do(req)
				total.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
			}
		})
	}
	for i := 0; i < 20; i++ {
		cfg := cfgA
		if i%2 == 0 {
			cfg = cfgB
		}
		if err := g.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	bad := &Config{Routes: []Route{keyedRoute("r", "/r", "not a url")}}
	if err := g.Reload(bad); err == nil {
		t.Error("Reload accepted a bad config")
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || total.Load() < 50 {
		t.Errorf("%d of %d requests failed during reloads", failures.Load(), total.Load())
	}
	// The bad config changed nothing: the last good one (cfgA) still answers.
	if _, body := do(t, "GET", srv.URL+"/r", map[string]string{"X-API-Key": key}, nil); body != "a" {
		t.Errorf("after a refused reload: %q", body)
	}
}

func TestOnRequest(t *testing.T) {
	up := newUpstream(t, nil)
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{ID: "key_z", ConsumerID: "con_z"})
	var got []RequestInfo
	var mu sync.Mutex
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("r", "/r", up.URL)}}, auth, func(o *Options) {
		o.OnRequest = func(ri *RequestInfo) { mu.Lock(); got = append(got, *ri); mu.Unlock() }
	})
	do(t, "POST", srv.URL+"/r", map[string]string{"X-API-Key": key, "X-Request-Id": "abc"}, strings.NewReader("12345"))
	do(t, "GET", srv.URL+"/nope", nil, nil)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("OnRequest called %d times", len(got))
	}
	a := got[0]
	if a.KeyID != "key_z" || a.ConsumerID != "con_z" || a.Route != "r" || a.Status != 200 || a.Method != "POST" ||
		a.RequestID != "abc" || a.BytesIn != 5 || a.Bytes != int64(len("ok /r")) || !a.ClientIP.IsLoopback() || a.Latency <= 0 {
		t.Errorf("info %+v", a)
	}
	if b := got[1]; b.Status != 404 || b.Code != "ROUTE_NOT_FOUND" || b.Route != "" {
		t.Errorf("info %+v", b)
	}
}
