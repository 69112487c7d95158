package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

// rawDo sends a raw HTTP/1.1 request and returns the answer's status and body.
func rawDo(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { io.WriteString(conn, raw) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to %.60q: %v", raw, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestHostileInput sends malformed and malicious requests. Every answer must be a 4xx (431 for
// oversized header blocks), never a 5xx, and the valid key must never reach an upstream or
// appear in an answer.
func TestHostileInput(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{Scopes: []string{"products:read"}})
	products := keyedRoute("products", "/v1/products", up.URL)
	products.Auth.Scopes = map[string][]string{"*": {"products:read"}}
	admin := keyedRoute("admin", "/v1/admin", up.URL)
	admin.Auth.Scopes = map[string][]string{"*": {"admin:write"}}
	cfg := &Config{UpstreamSecret: ptr("x"), Routes: []Route{
		products,
		admin,
		publicRoute("public", "/public", up.URL),
	}}
	_, srv := newTestGateway(t, cfg, auth)
	addr := srv.Listener.Addr().String()
	badSum := key[:len(key)-1] + string("01"[0]^key[len(key)-1]&1+'0')
	if badSum == key {
		badSum = key[:len(key)-1] + "x"
	}

	type tc struct {
		name string
		raw  string
		want int // 0: any 4xx
	}
	req := func(target string, headers ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: x\r\n" + strings.Join(headers, "") + "Connection: close\r\n\r\n"
	}
	tests := []tc{
		{"no key", req("/v1/products"), 401},
		{"bearer without token", req("/v1/products", "Authorization: Bearer\r\n"), 401},
		{"bearer spaces", req("/v1/products", "Authorization: Bearer    \r\n"), 401},
		{"bearer glued", req("/v1/products", "Authorization: Bearer"+key+"\r\n"), 401},
		{"basic", req("/v1/products", "Authorization: Basic "+key+"\r\n"), 401},
		{"two tokens", req("/v1/products", "Authorization: Bearer "+key+" "+key+"\r\n"), 401},
		{"repeated authorization", req("/v1/products", "Authorization: Bearer "+key+"\r\n", "Authorization: Bearer "+key+"\r\n"), 400},
		{"authorization and other x-api-key", req("/v1/products", "Authorization: Bearer "+key+"\r\n", "X-API-Key: kg_sk_live_other\r\n"), 400},
		{"repeated x-api-key", req("/v1/products", "X-API-Key: "+key+"\r\n", "X-API-Key: "+key+"\r\n"), 400},
		{"10 KB key", req("/v1/products", "X-API-Key: kg_sk_live_"+strings.Repeat("A", 10<<10)+"\r\n"), 401},
		{"1 MB key", req("/v1/products", "X-API-Key: kg_sk_live_"+strings.Repeat("A", 1<<20)+"\r\n"), 431},
		{"huge header block", req("/v1/products", strings.Repeat("X-Junk: "+strings.Repeat("j", 1000)+"\r\n", 100)), 431},
		{"NUL in key", req("/v1/products", "X-API-Key: kg_sk_live_\x00abc\r\n"), 0},
		{"invalid UTF-8 key", req("/v1/products", "X-API-Key: kg_sk_live_\xff\xfe\xfd\r\n"), 401},
		{"bad checksum", req("/v1/products", "X-API-Key: "+badSum+"\r\n"), 401},
		{"header injection", req("/v1/products", "X-API-Key: kg_sk_live_x\r\nX-Keygate-Key-Id: key_admin\r\n"), 401},
		{"CR in value", req("/v1/products", "X-API-Key: "+key+"\rX-Evil: 1\r\n"), 0},
		{"dot-dot to another route", req("/v1/products/../admin", "X-API-Key: "+key+"\r\n"), 403},
		{"dot-dot out of routes", req("/v1/products/../../etc/passwd", "X-API-Key: "+key+"\r\n"), 404},
		{"encoded slash", req("/v1/products%2F..%2Fadmin", "X-API-Key: "+key+"\r\n"), 400},
		{"encoded slash lower", req("/v1/products%2f..%2fadmin", "X-API-Key: "+key+"\r\n"), 400},
		{"double-encoded slash", req("/v1/products%252F..%252Fadmin", "X-API-Key: "+key+"\r\n"), 400},
		{"encoded backslash", req("/v1/products%5C..%5Cadmin", "X-API-Key: "+key+"\r\n"), 400},
		{"encoded NUL in path", req("/v1/products/%00", "X-API-Key: "+key+"\r\n"), 400},
		{"invalid UTF-8 path", req("/v1/products/%C0%AF", "X-API-Key: "+key+"\r\n"), 400},
		{"asterisk form", "GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400},
		{"absolute form elsewhere", req("http://evil.example/v1/admin"), 0},
		{"query key on a route without allow_query_key", req("/v1/products?api_key=" + key), 401},
		{"query key twice", req("/v1/products?api_key=a&api_key=b"), 400},
		{"bad method", "G\x00T /v1/products HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := rawDo(t, addr, tt.raw)
			if status >= 500 || status < 400 || (tt.want != 0 && status != tt.want) {
				t.Errorf("status %d; want %v (body %.200q)", status, tt.want, body)
			}
			if strings.Contains(body, key) {
				t.Error("the answer contains the key")
			}
		})
	}

	// A key on a public route or in a query is removed before forwarding.
	for _, raw := range []string{
		req("/public?api_key="+key, "X-API-Key: "+key+"\r\n"),
		req("/public?a=1&api%5Fkey="+key, "Authorization: Bearer "+key+"\r\n"),
		req("/v1/products?x=1", "Authorization: Bearer "+key+"\r\n", "X-Keygate-Key-Id: forged\r\n"),
	} {
		if status, body := rawDo(t, addr, raw); status != 200 {
			t.Errorf("%.60q: status %d %s", raw, status, body)
		}
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, r := range up.reqs {
		dump := fmt.Sprint(r.URL.String(), r.Header)
		if strings.Contains(dump, key) {
			t.Errorf("the key reached the upstream: %s", dump)
		}
		if strings.Contains(dump, "forged") || strings.Contains(dump, "key_admin") {
			t.Errorf("a client X-Keygate-* copy reached the upstream: %s", dump)
		}
	}
}
