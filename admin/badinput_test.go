package admin

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// minimalBody is a body each route accepts (so that the case under test is the only fault).
func minimalBody(rt Route, cid string) string {
	switch rt.Method + " " + rt.Pattern {
	case "POST /v1/keys":
		return `{"consumer_id":"` + cid + `"}`
	case "POST /v1/plans":
		return `{"name":"p"}`
	case "POST /v1/root-keys":
		return `{"permissions":["keys:read"]}`
	case "POST /v1/keys/leaked":
		return `{"keys":["x"]}`
	case "POST /v1/keys/verify":
		return `{"key":"x"}`
	}
	return `{}`
}

// TestBadInputEveryRoute sends malformed bodies, headers, ids and query parameters to every
// API route: each answer is a 4xx problem, never a 5xx.
func TestBadInputEveryRoute(t *testing.T) {
	e := newEnv(t)
	cid := e.consumer()
	s := newServer(nil, Options{})
	huge := `{"name":"` + strings.Repeat("a", DefaultMaxBody+10) + `"}`

	type badCase struct {
		name   string
		body   string
		header map[string]string
		want   int
	}
	check := func(rt Route, path string, c badCase) {
		t.Helper()
		a := e.do(req{method: rt.Method, path: path, body: c.body, header: c.header})
		if a.status >= 500 || a.status < 400 || (c.want != 0 && a.status != c.want) {
			t.Errorf("%s %s [%s] = %d %s; want %d", rt.Method, path, c.name, a.status, a.body, c.want)
			return
		}
		isProblem(t, a)
	}
	for _, rt := range s.routes {
		if rt.Permission == "" {
			continue
		}
		path := strings.NewReplacer("{id}", "missing_id", "{name}", "missing").Replace(rt.Pattern)
		if rt.Body != nil {
			valid := minimalBody(rt, cid)
			for _, c := range []badCase{
				{"malformed JSON", `{"name":`, nil, 400},
				{"not JSON", `name=x`, nil, 400},
				{"trailing data", valid + ` {}`, nil, 400},
				{"two values", valid + valid, nil, 400},
				{"array", `[` + valid + `]`, nil, 400},
				{"null", `null`, nil, 400},
				{"string", `"x"`, nil, 400},
				{"unknown field", strings.Replace(valid, "{", `{"unknown_field":1,`, 1), nil, 400},
				{"non-UTF-8", strings.Replace(valid, "{", "{\"\xff\xfe\":1,", 1), nil, 400},
				{"text/plain", valid, map[string]string{"Content-Type": "text/plain"}, 400},
				{"latin1", valid, map[string]string{"Content-Type": "application/json; charset=latin1"}, 400},
				{"bad media type", valid, map[string]string{"Content-Type": "application/json; ==="}, 400},
				{"no content type", valid, map[string]string{"Content-Type": ""}, 400},
				{"oversized", huge, nil, 413},
				{"long Idempotency-Key", valid, map[string]string{"Idempotency-Key": strings.Repeat("i", 256)}, 400},
			} {
				if c.name == "long Idempotency-Key" && rt.Method != http.MethodPost {
					continue
				}
				check(rt, path, c)
			}
			if !rt.BodyOptional {
				check(rt, path, badCase{"no body", "", nil, 0})
			}
		}
		if strings.Contains(rt.Pattern, "{") {
			body := ""
			if rt.Body != nil {
				body = minimalBody(rt, cid)
			}
			check(rt, path, badCase{"unknown id", body, nil, 404})
			check(rt, strings.Replace(path, "missing_id", "kg_sk_live_"+strings.Repeat("A", 49), 1), badCase{"key-like id", body, nil, 404})
		}
		if len(rt.Query) > 0 {
			check(rt, path+"?%zz", badCase{name: "malformed query", want: 400})
		}
		if hasParam(rt, "limit") {
			for _, q := range []string{"limit=abc", "limit=0", "limit=-1", "limit=1.5", "limit=1&limit=2", "cursor=" + strings.Repeat("c", 2000)} {
				check(rt, path+"?"+q, badCase{name: q, want: 400})
			}
			// Large limits are clamped, not refused.
			if a := e.do(req{method: rt.Method, path: path + "?limit=5000"}); a.status != 200 && a.status != 404 {
				t.Errorf("%s %s?limit=5000 = %d %s", rt.Method, path, a.status, a.body)
			}
			if a := e.do(req{method: rt.Method, path: path + "?limit=99999999999999999999999"}); a.status != 200 && a.status != 404 {
				t.Errorf("%s %s?limit=huge = %d %s", rt.Method, path, a.status, a.body)
			}
		}
		// Odd authorization headers.
		for _, h := range []string{"Bearer", "Bearer ", "bearer  " + "x", "Token " + e.token, e.token} {
			a := e.do(req{method: rt.Method, path: path, token: "-", header: map[string]string{"Authorization": h}})
			if a.status != 401 {
				t.Errorf("%s %s Authorization %q = %d; want 401", rt.Method, path, h, a.status)
			}
		}
	}

	// Specific validation failures, all 400.
	for _, c := range []struct {
		method, path, body string
	}{
		{"GET", "/v1/keys?status=bogus", ""},
		{"GET", "/v1/keys?cursor=garbage", ""},
		{"GET", "/v1/consumers?cursor=Zm9v", ""},
		{"GET", "/v1/audit?cursor=-1", ""},
		{"GET", "/v1/plans?cursor=%FF", ""},
		{"GET", "/v1/audit?from=yesterday", ""},
		{"GET", "/v1/audit?to=2026-13-01T00:00:00Z", ""},
		{"GET", "/v1/audit?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", ""},
		{"DELETE", "/v1/consumers/" + cid + "?purge=maybe", ""},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","ip_allow":["1.2.3.4/40"]}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","ip_allow":["::g"]}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","ttl":"1x"}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","max_age":"0s"}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","rate_limits":[{"name":"m","limit":1,"period":"1 minute"}]}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","name":"` + strings.Repeat("é", 150) + `"}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","metadata":{"big":"` + strings.Repeat("m", 9000) + `"}}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","kind":"publishable","scopes":["products:write"],"referrer_allow":["https://a.example"]}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","limit":1e400}`},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","quota":{"limit":99999999999999999999,"period":"day"}}`},
		{"POST", "/v1/consumers", `{"metadata":{"k":"` + strings.Repeat("m", 9000) + `"}}`},
		{"POST", "/v1/consumers", `{"name":"\u0000"}`},
		{"POST", "/v1/plans", `{"name":"` + strings.Repeat("p", 65) + `"}`},
		{"POST", "/v1/plans", `{"name":"ok","rate_limits":[{"name":"a","limit":1,"period":"1s"},{"name":"a","limit":2,"period":"1s"}]}`},
		{"POST", "/v1/keys/verify", `{"key":"` + strings.Repeat("k", 600) + `"}`},
		{"POST", "/v1/keys/verify", `{"key":"x","ip":"fe80::1%eth0"}`},
	} {
		a := e.do(req{method: c.method, path: c.path, body: c.body})
		if a.status != 400 {
			t.Errorf("%s %s %.80s = %d %s; want 400", c.method, c.path, c.body, a.status, a.body)
			continue
		}
		isProblem(t, a)
	}
	if strings.Contains(e.logs.String(), "panic") {
		t.Fatalf("a handler panicked: %s", e.logs.String())
	}
}

// TestPlaintextNeverStored issues keys and root keys, rotates, verifies and replays them, then
// looks for every plaintext in the database files and the logs.
func TestPlaintextNeverStored(t *testing.T) {
	e := newEnv(t)
	cid := e.consumer()
	var secrets []string
	for i := 0; i < 3; i++ {
		h := map[string]string{"Idempotency-Key": "k" + string(rune('a'+i))}
		a := e.must(201, req{method: "POST", path: "/v1/keys", body: map[string]any{"consumer_id": cid}, header: h})
		e.must(201, req{method: "POST", path: "/v1/keys", body: map[string]any{"consumer_id": cid}, header: h})
		secrets = append(secrets, a.str("key"))
		e.must(200, req{method: "POST", path: "/v1/keys/verify", body: map[string]any{"key": a.str("key")}, header: map[string]string{"Idempotency-Key": "v" + string(rune('a'+i))}})
		rot := e.must(201, req{method: "POST", path: "/v1/keys/" + a.str("id") + "/rotate", header: map[string]string{"Idempotency-Key": "r" + string(rune('a'+i))}})
		secrets = append(secrets, rot.str("key"))
		// A plaintext pasted into a URL goes neither to the logs nor the audit log.
		e.do(req{method: "GET", path: "/v1/keys/" + rot.str("key")})
	}
	secrets = append(secrets, e.rootKey("keys:read"), e.token)
	// Refused requests with a plaintext in the path are audited without it.
	e.do(req{method: "POST", path: "/v1/keys/" + secrets[0] + "/revoke", token: secrets[len(secrets)-2]})
	e.must(200, req{method: "POST", path: "/v1/keys/leaked", body: map[string]any{"keys": []string{secrets[0]}}})

	scan := func(when string) {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(filepath.Dir(e.dbPath), "*"))
		n, sawID := 0, false
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			n++
			sawID = sawID || bytes.Contains(b, []byte(cid))
			for _, s := range secrets {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%s: plaintext %s… found in %s", when, s[:12], f)
				}
			}
		}
		if n == 0 || !sawID {
			t.Fatalf("%s: the scan read %d files and found no consumer id: it proves nothing", when, n)
		}
	}
	scan("while open") // the -wal and -shm files exist now
	if err := e.store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	scan("after close")
	logs := e.logs.String()
	if logs == "" {
		t.Fatal("no logs captured")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("plaintext %s… found in the logs", s[:12])
		}
	}
}

func hasParam(rt Route, name string) bool {
	for _, p := range rt.Query {
		if p.Name == name {
			return true
		}
	}
	return false
}

// TestChunkedOversizedBody: a body without Content-Length is cut at the limit too (413).
func TestChunkedOversizedBody(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/v1/consumers", "/v1/keys/verify"} {
		for _, idem := range []string{"", "chunk-" + path} {
			body := io.MultiReader(strings.NewReader(`{"name":"`), strings.NewReader(strings.Repeat("a", DefaultMaxBody)), strings.NewReader(`"}`))
			r, _ := http.NewRequest("POST", e.srv.URL+path, body)
			r.Header.Set("Authorization", "Bearer "+e.token)
			r.Header.Set("Content-Type", "application/json")
			if idem != "" {
				r.Header.Set("Idempotency-Key", idem)
			}
			resp, err := e.srv.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 413 || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("POST %s chunked oversized (idempotency %q) = %d %s", path, idem, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		}
	}
}
