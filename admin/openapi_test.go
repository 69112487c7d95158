package admin

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate"
)

func loadDoc(t *testing.T, e *env) map[string]any {
	t.Helper()
	a := e.must(200, req{method: "GET", path: "/openapi.json", token: "-"})
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode document: %v", err)
	}
	return doc
}

// TestOpenAPICoversRoutes: every registered route is in the document and vice versa, with its
// permission, and every operation describes each status it can answer.
func TestOpenAPICoversRoutes(t *testing.T) {
	e := newEnv(t)
	doc := loadDoc(t, e)
	if doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi = %v", doc["openapi"])
	}
	s := newServer(nil, Options{})
	registered := map[string]Route{}
	for _, rt := range s.routes {
		registered[rt.Method+" "+rt.Pattern] = rt
	}
	documented := map[string]map[string]any{}
	opIDs := map[string]bool{}
	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			documented[strings.ToUpper(method)+" "+path] = op.(map[string]any)
			id := op.(map[string]any)["operationId"].(string)
			if opIDs[id] {
				t.Errorf("operationId %s is used twice", id)
			}
			opIDs[id] = true
		}
	}
	for k := range registered {
		if _, ok := documented[k]; !ok {
			t.Errorf("route %s is not in the document", k)
		}
	}
	for k := range documented {
		if _, ok := registered[k]; !ok {
			t.Errorf("document has %s, which is not a route", k)
		}
	}
	// SPEC §3's /v1 surface of this package, so that a route cannot silently disappear.
	for _, k := range []string{
		"POST /v1/consumers", "GET /v1/consumers", "GET /v1/consumers/{id}", "PATCH /v1/consumers/{id}", "DELETE /v1/consumers/{id}",
		"POST /v1/plans", "GET /v1/plans", "GET /v1/plans/{name}", "PATCH /v1/plans/{name}", "DELETE /v1/plans/{name}",
		"POST /v1/keys", "GET /v1/keys", "GET /v1/keys/{id}", "PATCH /v1/keys/{id}", "POST /v1/keys/{id}/revoke",
		"POST /v1/keys/{id}/rotate", "POST /v1/keys/{id}/unthrottle", "POST /v1/keys/leaked", "POST /v1/keys/verify",
		"POST /v1/root-keys", "GET /v1/root-keys", "POST /v1/root-keys/{id}/revoke",
		"GET /v1/audit", "GET /v1/audit/verify", "GET /v1/audit/head",
		"GET /healthz", "GET /readyz", "GET /openapi.json", "GET /docs", "GET /metrics",
	} {
		if _, ok := registered[k]; !ok {
			t.Errorf("SPEC route %s is not registered", k)
		}
	}
	for k, op := range documented {
		rt := registered[k]
		sec := op["security"].([]any)
		if rt.Permission == "" {
			if len(sec) != 0 {
				t.Errorf("%s: public route with security %v", k, sec)
			}
		} else {
			scopes, _ := sec[0].(map[string]any)["rootKey"].([]any)
			if len(scopes) != 1 || scopes[0] != rt.Permission {
				t.Errorf("%s: security %v; want rootKey [%s]", k, sec, rt.Permission)
			}
		}
		resps := op["responses"].(map[string]any)
		if _, ok := resps["default"]; ok {
			t.Errorf("%s: has a default response", k)
		}
		if _, ok := resps[strconv.Itoa(rt.Status)]; !ok {
			t.Errorf("%s: success status %d not documented", k, rt.Status)
		}
		var statuses []string
		for st, r := range resps {
			statuses = append(statuses, st)
			content, ok := r.(map[string]any)["content"].(map[string]any)
			if !ok || len(content) == 0 {
				t.Errorf("%s %s: no content", k, st)
			}
			if st >= "400" && content["application/problem+json"] == nil {
				t.Errorf("%s %s: error without application/problem+json", k, st)
			}
		}
		sort.Strings(statuses)
		if rt.Permission != "" {
			for _, need := range []string{"401", "403", "413", "500", "503"} {
				if _, ok := resps[need]; !ok {
					t.Errorf("%s: %s not documented (have %v)", k, need, statuses)
				}
			}
			if strings.Contains(rt.Pattern, "{") {
				if _, ok := resps["404"]; !ok {
					t.Errorf("%s: 404 not documented", k)
				}
			}
		}
		if (rt.Body != nil) != (op["requestBody"] != nil) {
			t.Errorf("%s: requestBody documented = %v; route has a body = %v", k, op["requestBody"] != nil, rt.Body != nil)
		}
	}
	schemes := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	if rk, ok := schemes["rootKey"].(map[string]any); !ok || rk["scheme"] != "bearer" {
		t.Fatalf("securitySchemes = %v", schemes)
	}
}

// bodyCase is a request body and whether the contract admits it.
type bodyCase struct {
	method, path string
	body         string
	valid        bool
}

// TestOpenAPISchemasAgreeWithServer checks request bodies against the document's schemas with a
// small JSON-schema validator, and sends them: a body invalid by the schema must be a 400, a
// valid one must not be.
func TestOpenAPISchemasAgreeWithServer(t *testing.T) {
	e := newEnv(t)
	doc := loadDoc(t, e)
	vd := newValidator(doc)
	cid := e.consumer()
	kid, plaintext := e.key(cid, nil)
	e.must(201, req{method: "POST", path: "/v1/plans", body: map[string]any{"name": "base"}})

	long := strings.Repeat("n", 201)
	cases := []bodyCase{
		// consumers
		{"POST", "/v1/consumers", `{"name":"a","email":"a@b.test","metadata":{"x":1}}`, true},
		{"POST", "/v1/consumers", `{}`, true},
		{"POST", "/v1/consumers", `{"name":"a","extra":1}`, false},
		{"POST", "/v1/consumers", `{"name":5}`, false},
		{"POST", "/v1/consumers", `{"name":"` + long + `"}`, false},
		{"POST", "/v1/consumers", `{"name":"tab\there"}`, false},
		{"POST", "/v1/consumers", `{"email":"not an email"}`, false},
		{"POST", "/v1/consumers", `{"plan":"Bad Plan"}`, false},
		{"POST", "/v1/consumers", `{"rate_limits":[{"name":"m","limit":0,"period":"1m"}]}`, false},
		{"POST", "/v1/consumers", `{"rate_limits":[{"name":"m","limit":10,"period":"soon"}]}`, false},
		{"POST", "/v1/consumers", `{"rate_limits":[{"name":"m","limit":10}]}`, false},
		{"POST", "/v1/consumers", `{"rate_limits":[{"name":"m","limit":10,"period":"1m"}]}`, true},
		{"POST", "/v1/consumers", `{"quota":{"limit":10,"period":"week"}}`, false},
		{"POST", "/v1/consumers", `{"quota":{"limit":10,"period":"day"}}`, true},
		{"POST", "/v1/consumers", `{"metadata":[1]}`, false},
		{"PATCH", "/v1/consumers/" + cid, `{"name":null,"plan":null,"quota":null}`, true},
		{"PATCH", "/v1/consumers/" + cid, `{"name":"x","bogus":true}`, false},
		{"PATCH", "/v1/consumers/" + cid, `{"rate_limits":"1/m"}`, false},
		// plans
		{"POST", "/v1/plans", `{"name":"silver","max_age":"30d","scopes_allowed":["products:*"]}`, true},
		{"POST", "/v1/plans", `{"name":"Silver"}`, false},
		{"POST", "/v1/plans", `{}`, false},
		{"POST", "/v1/plans", `{"name":"p2","max_age":30}`, false},
		{"POST", "/v1/plans", `{"name":"p3","scopes_allowed":["products"]}`, false},
		{"PATCH", "/v1/plans/base", `{"max_age":"12h"}`, true},
		{"PATCH", "/v1/plans/base", `{"name":"renamed"}`, false},
		// keys
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","scopes":["products:read"],"ip_allow":["10.0.0.0/8","2001:db8::1"],"ttl":"15m","metadata":{"a":"b"}}`, true},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","kind":"publishable","scopes":["products:read"],"referrer_allow":["https://app.example.com"]}`, true},
		{"POST", "/v1/keys", `{"name":"no owner"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":""}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","kind":"magic"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","env":"prod"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","scopes":"products:read"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","scopes":["Products:Read"]}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","ip_allow":["10.0.0.0/33"]}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","ip_allow":["example.com"]}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","referrer_allow":["ftp://x"]}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","ttl":"forever"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","ttl":"-5m"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","expires_at":"tomorrow"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","name":"` + long + `"}`, false},
		{"POST", "/v1/keys", `{"consumer_id":"` + cid + `","key":"kg_sk_live_x"}`, false},
		{"PATCH", "/v1/keys/" + kid, `{"status":"disabled"}`, true},
		{"PATCH", "/v1/keys/" + kid, `{"status":"active","expires_at":null,"plan":null}`, true},
		{"PATCH", "/v1/keys/" + kid, `{"status":"revoked"}`, false},
		{"PATCH", "/v1/keys/" + kid, `{"status":null}`, false},
		{"PATCH", "/v1/keys/" + kid, `{"consumer_id":"con_x"}`, false},
		{"PATCH", "/v1/keys/" + kid, `{"scopes":[1]}`, false},
		{"POST", "/v1/keys/" + kid + "/revoke", `{"reason":"x","now":true}`, false},
		{"POST", "/v1/keys/" + kid + "/revoke", `{"reason":` + strconv.Quote(strings.Repeat("r", 501)) + `}`, false},
		{"POST", "/v1/keys/" + kid + "/rotate", `{"grace_period":"1y"}`, false},
		{"POST", "/v1/keys/" + kid + "/rotate", `{"grace_period":24}`, false},
		{"POST", "/v1/keys/leaked", `{"keys":[]}`, false},
		{"POST", "/v1/keys/leaked", `{"keys":"kg_sk"}`, false},
		{"POST", "/v1/keys/leaked", `{"keys":["kg_sk_live_notakey"]}`, true},
		// verify
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","scopes":["products:read"],"cost":0}`, true},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","ip":"203.0.113.7","cost":1000}`, true},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","cost":1001}`, false},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","cost":-1}`, false},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","cost":1.5}`, false},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","cost":"1"}`, false},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","ip":"300.1.1.1"}`, false},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","scopes":["products:*"]}`, false},
		{"POST", "/v1/keys/verify", `{"scopes":["products:read"]}`, false},
		{"POST", "/v1/keys/verify", `{"key":""}`, false},
		{"POST", "/v1/keys/verify", `{"key":"` + plaintext + `","env":"live"}`, false},
		// root keys
		{"POST", "/v1/root-keys", `{"name":"ci","permissions":["keys:read","audit:read"]}`, true},
		{"POST", "/v1/root-keys", `{"name":"ci","permissions":[]}`, false},
		{"POST", "/v1/root-keys", `{"name":"ci"}`, false},
		{"POST", "/v1/root-keys", `{"permissions":["everything"]}`, false},
	}
	paths := doc["paths"].(map[string]any)
	s := newServer(nil, Options{})
	for i, tc := range cases {
		rt := matchRoute(s.routes, tc.method, tc.path)
		if rt == nil {
			t.Fatalf("case %d: no route for %s %s", i, tc.method, tc.path)
		}
		op := paths[rt.Pattern].(map[string]any)[strings.ToLower(tc.method)].(map[string]any)
		schema := op["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
		dec := json.NewDecoder(strings.NewReader(tc.body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("case %d: bad test JSON: %v", i, err)
		}
		err := vd.validate(schema, v, "body")
		if (err == nil) != tc.valid {
			t.Errorf("case %d %s %s %s: schema says valid=%v (%v); want %v", i, tc.method, tc.path, tc.body, err == nil, err, tc.valid)
		}
		a := e.do(req{method: tc.method, path: tc.path, body: tc.body})
		if tc.valid && a.status == 400 {
			t.Errorf("case %d %s %s %s: server 400 (%s) for a body valid by the document", i, tc.method, tc.path, tc.body, a.body)
		}
		if !tc.valid && a.status != 400 {
			t.Errorf("case %d %s %s %s: server %d (%s); want 400", i, tc.method, tc.path, tc.body, a.status, a.body)
		}
		if a.status >= 500 {
			t.Errorf("case %d: server error %d %s", i, a.status, a.body)
		}
	}
}

// matchRoute finds the route of a concrete path, literal patterns first.
func matchRoute(routes []Route, method, path string) *Route {
	path = strings.SplitN(path, "?", 2)[0]
	for i, rt := range routes {
		if rt.Method == method && rt.Pattern == path {
			return &routes[i]
		}
	}
	for i, rt := range routes {
		ps, ts := strings.Split(rt.Pattern, "/"), strings.Split(path, "/")
		if rt.Method != method || len(ps) != len(ts) {
			continue
		}
		ok := true
		for j := range ps {
			if !strings.HasPrefix(ps[j], "{") && ps[j] != ts[j] {
				ok = false
			}
		}
		if ok {
			return &routes[i]
		}
	}
	return nil
}

func TestOpenAPIPermissionsAreKnown(t *testing.T) {
	s := newServer(nil, Options{})
	known := map[string]bool{}
	for _, p := range keygate.Permissions {
		known[p] = true
	}
	for _, rt := range s.routes {
		if strings.HasPrefix(rt.Pattern, "/v1/") && !known[rt.Permission] {
			t.Errorf("%s %s: permission %q is not a permission (deny by default needs one)", rt.Method, rt.Pattern, rt.Permission)
		}
		if rt.Permission != "" && rt.Action == "" {
			t.Errorf("%s %s: no audit action", rt.Method, rt.Pattern)
		}
	}
}
