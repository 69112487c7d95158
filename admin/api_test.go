package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/keygate/keygate"
)

func TestHappyPaths(t *testing.T) {
	e := newEnv(t)

	// plans
	plan := e.must(201, req{method: "POST", path: "/v1/plans", body: map[string]any{
		"name": "gold", "rate_limits": []any{map[string]any{"name": "minute", "limit": 100, "period": "1m"}},
		"quota": map[string]any{"limit": 5000, "period": "month"}, "scopes_allowed": []string{"products:*"}, "max_age": "90d"}})
	if plan.str("name") != "gold" {
		t.Fatalf("plan = %s", plan.body)
	}
	e.must(200, req{method: "GET", path: "/v1/plans/gold"})
	if l := e.must(200, req{method: "GET", path: "/v1/plans"}).json(); len(l["data"].([]any)) != 1 {
		t.Fatalf("plans list = %v", l)
	}
	e.must(200, req{method: "PATCH", path: "/v1/plans/gold", body: map[string]any{"max_age": "30d"}})

	// consumers
	con := e.must(201, req{method: "POST", path: "/v1/consumers", body: map[string]any{"name": "Acme", "email": "a@acme.test", "plan": "gold", "metadata": map[string]any{"tier": 1}}})
	cid := con.str("id")
	e.must(200, req{method: "GET", path: "/v1/consumers/" + cid})
	if got := e.must(200, req{method: "PATCH", path: "/v1/consumers/" + cid, body: map[string]any{"name": "Acme Inc"}}).str("name"); got != "Acme Inc" {
		t.Fatalf("patched name = %q", got)
	}
	list := e.must(200, req{method: "GET", path: "/v1/consumers?limit=1"}).json()
	if _, ok := list["next_cursor"]; !ok {
		t.Fatalf("list lacks next_cursor: %v", list)
	}

	// keys
	k := e.must(201, req{method: "POST", path: "/v1/keys", body: map[string]any{"consumer_id": cid, "name": "mobile", "scopes": []string{"products:read"},
		"ip_allow": []string{"203.0.113.0/24"}, "ttl": "48h"}})
	kid, plaintext := k.str("id"), k.str("key")
	if !strings.HasPrefix(plaintext, "kg_sk_live_") || kid == "" {
		t.Fatalf("created key = %s", k.body)
	}
	got := e.must(200, req{method: "GET", path: "/v1/keys/" + kid})
	if got.str("key") != "" || strings.Contains(string(got.body), plaintext) {
		t.Fatalf("GET key shows the plaintext: %s", got.body)
	}
	if l := e.must(200, req{method: "GET", path: "/v1/keys?consumer_id=" + cid + "&status=active"}).json(); len(l["data"].([]any)) != 1 {
		t.Fatalf("keys list = %v", l)
	}
	if s := e.must(200, req{method: "PATCH", path: "/v1/keys/" + kid, body: map[string]any{"status": "disabled"}}).str("status"); s != "disabled" {
		t.Fatalf("status after disable = %q", s)
	}
	e.must(200, req{method: "PATCH", path: "/v1/keys/" + kid, body: map[string]any{"status": "active", "name": "mobile 2"}})

	// verify
	v := e.must(200, req{method: "POST", path: "/v1/keys/verify", body: map[string]any{"key": plaintext, "scopes": []string{"products:read"}, "ip": "203.0.113.9"}}).json()
	if v["valid"] != true || v["code"] != "VALID" || v["key_id"] != kid || v["consumer_id"] != cid || v["plan"] != "gold" {
		t.Fatalf("verify = %v", v)
	}
	if rl, ok := v["rate_limits"].([]any); !ok || len(rl) != 1 {
		t.Fatalf("verify rate_limits = %v", v["rate_limits"])
	}
	if q, ok := v["quota"].(map[string]any); !ok || q["limit"].(float64) != 5000 || q["remaining"].(float64) != 4999 {
		t.Fatalf("verify quota = %v", v["quota"])
	}
	v = e.must(200, req{method: "POST", path: "/v1/keys/verify", body: map[string]any{"key": plaintext}}).json()
	if v["valid"] != false || v["code"] != keygate.CodeIPNotAllowed {
		t.Fatalf("verify without ip = %v", v)
	}
	v = e.must(200, req{method: "POST", path: "/v1/keys/verify", body: map[string]any{"key": "kg_sk_live_nonsense"}}).json()
	if v["valid"] != false || v["code"] != keygate.CodeNotFound || v["key_id"] != nil || v["quota"] != nil {
		t.Fatalf("verify unknown = %v", v)
	}

	// rotate, unthrottle, revoke, leaked
	rot := e.must(201, req{method: "POST", path: "/v1/keys/" + kid + "/rotate", body: map[string]any{"grace_period": "1h"}})
	newID, newPlain := rot.str("id"), rot.str("key")
	if newID == kid || newPlain == "" || rot.json()["rotated_from"] != kid {
		t.Fatalf("rotate = %s", rot.body)
	}
	isProblem(t, e.must(409, req{method: "POST", path: "/v1/keys/" + newID + "/unthrottle"}))
	isProblem(t, e.must(404, req{method: "POST", path: "/v1/keys/key_nope/unthrottle"}))
	rev := e.must(200, req{method: "POST", path: "/v1/keys/" + kid + "/revoke", body: map[string]any{"reason": "done"}})
	if rev.str("status") != "revoked" {
		t.Fatalf("revoke = %s", rev.body)
	}
	isProblem(t, e.must(409, req{method: "POST", path: "/v1/keys/" + kid + "/revoke"}))
	leaked := e.must(200, req{method: "POST", path: "/v1/keys/leaked", body: map[string]any{"keys": []string{newPlain, "kg_sk_live_whatever"}}}).json()
	if r := leaked["revoked"].([]any); len(r) != 1 || r[0] != newID {
		t.Fatalf("leaked = %v", leaked)
	}

	// root keys
	rk := e.must(201, req{method: "POST", path: "/v1/root-keys", body: map[string]any{"name": "ci", "permissions": []string{"keys:read"}}})
	rkID := rk.str("id")
	if !strings.HasPrefix(rk.str("key"), "kg_root_") {
		t.Fatalf("root key = %s", rk.body)
	}
	e.must(200, req{method: "GET", path: "/v1/keys", token: rk.str("key")})
	if l := e.must(200, req{method: "GET", path: "/v1/root-keys"}).json(); len(l["data"].([]any)) != 2 {
		t.Fatalf("root keys = %v", l)
	}
	e.must(200, req{method: "POST", path: "/v1/root-keys/" + rkID + "/revoke"})
	isProblem(t, e.must(401, req{method: "GET", path: "/v1/keys", token: rk.str("key")}))

	// consumers and plans delete
	del := e.must(200, req{method: "DELETE", path: "/v1/consumers/" + cid + "?purge=true"})
	if del.str("id") != cid || del.str("name") != "" {
		t.Fatalf("deleted consumer = %s", del.body)
	}
	e.must(404, req{method: "GET", path: "/v1/consumers/" + cid})
	e.must(200, req{method: "DELETE", path: "/v1/plans/gold"})
	e.must(404, req{method: "GET", path: "/v1/plans/gold"})

	// audit
	entries := e.must(200, req{method: "GET", path: "/v1/audit?action=key.create&limit=10"}).json()
	if d := entries["data"].([]any); len(d) < 1 {
		t.Fatalf("audit key.create entries = %v", entries)
	}
	e.must(200, req{method: "GET", path: "/v1/audit?from=2020-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"})
	if av := e.must(200, req{method: "GET", path: "/v1/audit/verify"}).json(); av["ok"] != true {
		t.Fatalf("audit verify = %v", av)
	}
	if h := e.must(200, req{method: "GET", path: "/v1/audit/head"}).json(); h["seq"].(float64) < 1 || h["hash"] == "" {
		t.Fatalf("audit head = %v", h)
	}

	// public
	e.must(200, req{method: "GET", path: "/healthz", token: "-"})
	e.must(200, req{method: "GET", path: "/readyz", token: "-"})
	e.must(200, req{method: "GET", path: "/metrics", token: "-"})
	e.must(200, req{method: "GET", path: "/openapi.json", token: "-"})
	if d := e.must(200, req{method: "GET", path: "/docs", token: "-"}); !strings.Contains(string(d.body), "<script>") || strings.Contains(string(d.body), "http://") || strings.Contains(string(d.body), "https://cdn") {
		t.Fatalf("docs page is not self-contained")
	}
}

func TestReadyzUnavailable(t *testing.T) {
	h := New(Options{Ready: func(context.Context) error { return fmt.Errorf("db down") }})
	srv := httptestServer(t, h)
	resp, err := http.Get(srv + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("/readyz = %d %s; want 503 problem", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	readOnly := e.rootKey(keygate.PermKeysRead)
	cid := e.consumer()

	for _, tc := range []struct {
		name   string
		header map[string]string
		token  string
	}{
		{"no header", nil, "-"},
		{"unknown key", nil, "kg_root_0000000000000000000000000000000000000000000000000"},
		{"garbage", nil, "hello"},
		{"basic scheme", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, "-"},
		{"cookie only", map[string]string{"Cookie": "session=" + e.token}, "-"},
		{"consumer key as root", nil, func() string { _, p := e.key(cid, nil); return p }()},
	} {
		a := e.do(req{method: "GET", path: "/v1/keys", token: tc.token, header: tc.header})
		if a.status != 401 {
			t.Errorf("%s: status %d; want 401", tc.name, a.status)
			continue
		}
		if isProblem(t, a)["code"] != keygate.CodeUnauthorized || a.header.Get("WWW-Authenticate") != `Bearer realm="keygate"` {
			t.Errorf("%s: %s %v", tc.name, a.body, a.header)
		}
	}

	// A key with only keys:read may read but not write; the refusal is audited.
	e.must(200, req{method: "GET", path: "/v1/keys", token: readOnly})
	a := e.must(403, req{method: "POST", path: "/v1/keys", token: readOnly, body: map[string]any{"consumer_id": cid}})
	if isProblem(t, a)["code"] != keygate.CodeForbidden {
		t.Fatalf("403 body = %s", a.body)
	}
	entries := e.must(200, req{method: "GET", path: "/v1/audit?action=key.create"}).json()["data"].([]any)
	found := false
	for _, x := range entries {
		m := x.(map[string]any)
		if m["result"] == keygate.ResultFailure && strings.HasPrefix(m["actor"].(string), "root_key:") {
			found = true
		}
	}
	if !found {
		t.Fatalf("the 403 is not audited: %v", entries)
	}
	// Every API route refuses a key without its permission (deny by default).
	s := newServer(nil, Options{})
	for _, rt := range s.routes {
		if rt.Permission == "" || rt.Permission == keygate.PermKeysRead {
			continue
		}
		path := strings.NewReplacer("{id}", "x", "{name}", "x").Replace(rt.Pattern)
		a := e.do(req{method: rt.Method, path: path, token: readOnly, body: "{}"})
		if a.status != 403 {
			t.Errorf("%s %s with keys:read = %d; want 403", rt.Method, path, a.status)
		}
	}
	// No root key can grant a permission it lacks.
	wr := e.rootKey(keygate.PermRootKeysWrite)
	a = e.must(403, req{method: "POST", path: "/v1/root-keys", token: wr, body: map[string]any{"permissions": []string{"admin"}}})
	isProblem(t, a)
}

func TestUnknownRoutesAreProblems(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/nope", 404},
		{"GET", "/v1/nothing", 404},
		{"PUT", "/v1/keys", 405},
		{"DELETE", "/v1/keys/abc", 405},
		{"GET", "/v1/keys/abc/rotate", 405},
	} {
		a := e.do(req{method: tc.method, path: tc.path})
		if a.status != tc.want {
			t.Errorf("%s %s = %d; want %d", tc.method, tc.path, a.status, tc.want)
			continue
		}
		isProblem(t, a)
		if tc.want == 405 && a.header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
		}
	}
}

func TestIdempotency(t *testing.T) {
	e := newEnv(t)
	cid := e.consumer()
	body := map[string]any{"consumer_id": cid, "name": "idem"}
	h := map[string]string{"Idempotency-Key": "abc-123"}
	first := e.must(201, req{method: "POST", path: "/v1/keys", body: body, header: h})
	plaintext := first.str("key")
	again := e.must(201, req{method: "POST", path: "/v1/keys", body: body, header: h})
	m := again.json()
	if m["id"] != first.str("id") || m["key"] != nil || m["idempotent_replay"] != true || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay = %s", again.body)
	}
	if l := e.must(200, req{method: "GET", path: "/v1/keys?consumer_id=" + cid}).json()["data"].([]any); len(l) != 1 {
		t.Fatalf("replay created another key: %d keys", len(l))
	}
	// Same key, different body: 409.
	isProblem(t, e.must(409, req{method: "POST", path: "/v1/keys", body: map[string]any{"consumer_id": cid, "name": "other"}, header: h}))
	// Another root key's Idempotency-Key space is separate.
	other := e.rootKey(keygate.PermAdmin)
	e.must(201, req{method: "POST", path: "/v1/keys", token: other, body: body, header: h})
	// 4xx answers are replayed too.
	bad := map[string]string{"Idempotency-Key": "bad-1"}
	e.must(404, req{method: "POST", path: "/v1/keys", body: map[string]any{"consumer_id": "con_missing"}, header: bad})
	isProblem(t, e.must(404, req{method: "POST", path: "/v1/keys", body: map[string]any{"consumer_id": "con_missing"}, header: bad}))
	// Rotation replays without the plaintext; root keys likewise.
	rh := map[string]string{"Idempotency-Key": "rot-1"}
	r1 := e.must(201, req{method: "POST", path: "/v1/keys/" + first.str("id") + "/rotate", header: rh})
	r2 := e.must(201, req{method: "POST", path: "/v1/keys/" + first.str("id") + "/rotate", header: rh})
	if r2.json()["key"] != nil || r2.str("id") != r1.str("id") {
		t.Fatalf("rotate replay = %s", r2.body)
	}
	kh := map[string]string{"Idempotency-Key": "rk-1"}
	rk := map[string]any{"permissions": []string{"keys:read"}}
	e.must(201, req{method: "POST", path: "/v1/root-keys", body: rk, header: kh})
	if a := e.must(201, req{method: "POST", path: "/v1/root-keys", body: rk, header: kh}); a.json()["key"] != nil {
		t.Fatalf("root key replay = %s", a.body)
	}
	// Every POST's answer can be replayed, and the replay is valid by the document.
	ch := map[string]string{"Idempotency-Key": "con-1"}
	c1 := e.must(201, req{method: "POST", path: "/v1/consumers", body: map[string]any{"name": "x"}, header: ch})
	if c2 := e.must(201, req{method: "POST", path: "/v1/consumers", body: map[string]any{"name": "x"}, header: ch}); c2.str("id") != c1.str("id") || c2.json()["idempotent_replay"] != true {
		t.Fatalf("consumer replay = %s", c2.body)
	}
	vh := map[string]string{"Idempotency-Key": "ver-1"}
	e.must(200, req{method: "POST", path: "/v1/keys/verify", body: map[string]any{"key": "x"}, header: vh})
	e.must(200, req{method: "POST", path: "/v1/keys/verify", body: map[string]any{"key": "x"}, header: vh})
	// Malformed header.
	isProblem(t, e.must(400, req{method: "POST", path: "/v1/keys", body: body, header: map[string]string{"Idempotency-Key": strings.Repeat("x", 300)}}))
	_ = plaintext
}

// TestIdempotencyConcurrent: identical requests racing with one Idempotency-Key create one key.
func TestIdempotencyConcurrent(t *testing.T) {
	e := newEnv(t)
	cid := e.consumer()
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.do(req{method: "POST", path: "/v1/keys", body: map[string]any{"consumer_id": cid},
				header: map[string]string{"Idempotency-Key": "race"}}).status
		}()
	}
	wg.Wait()
	for _, s := range statuses {
		if s != 201 && s != 409 {
			t.Fatalf("statuses = %v; want 201 or 409", statuses)
		}
	}
	if l := e.must(200, req{method: "GET", path: "/v1/keys?consumer_id=" + cid}).json()["data"].([]any); len(l) != 1 {
		t.Fatalf("%d keys created; want 1 (statuses %v)", len(l), statuses)
	}
}

// TestExtraRoutes: routes added through Options.Routes get authentication, permissions and a
// place in the OpenAPI document; Extra mounts unauthenticated handlers.
func TestExtraRoutes(t *testing.T) {
	e := newEnv(t)
	h := New(Options{Control: e.ctl, Routes: []Route{{
		Method: "GET", Pattern: "/v1/analytics/ping", Permission: keygate.PermAnalyticsRead, Action: "analytics.read",
		Tag: "analytics", Summary: "ping", Query: []Param{ParamLimit}, Status: 200, Response: health{},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := ListParams(r); err != nil {
				WriteError(w, r, err)
				return
			}
			Encode(w, r, 200, health{Status: "pong"})
		}),
	}}, Extra: func(mux *http.ServeMux) {
		mux.HandleFunc("GET /dashboard/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("dash")) })
	}})
	url := httptestServer(t, h)
	get := func(path, token string) int {
		r, _ := http.NewRequest("GET", url+path, nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	noPerm := e.rootKey(keygate.PermKeysRead)
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/v1/analytics/ping", e.token, 200},
		{"/v1/analytics/ping", "", 401},
		{"/v1/analytics/ping", noPerm, 403},
		{"/v1/analytics/ping?limit=0", e.token, 400},
		{"/dashboard/", "", 200},
	} {
		if got := get(tc.path, tc.token); got != tc.want {
			t.Errorf("GET %s = %d; want %d", tc.path, got, tc.want)
		}
	}
	doc := openAPIDocument(h.(*server).routes)
	if _, ok := doc["paths"].(map[string]map[string]any)["/v1/analytics/ping"]; !ok {
		t.Fatal("extra route missing from the document")
	}
}
