package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/control"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestBinaryGatewayAndSIGHUP runs the real binary with a route to a test upstream: a keyed request
// is proxied with signed identity headers and without the key; SIGHUP adds a route without
// dropping the listener; a bad file on SIGHUP keeps the running config.
func TestBinaryGatewayAndSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const secret = "upstream-signing-secret"
	var seen atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Clone())
		io.WriteString(w, "upstream:"+r.URL.Path)
	}))
	defer upstream.Close()

	dir := t.TempDir()
	bin := buildBinary(t)
	cfg := filepath.Join(dir, "keygate.yaml")
	route := func(name, prefix string) string {
		return "  - name: " + name + "\n    match: {path_prefix: " + prefix + "}\n    upstream: {targets: [" + upstream.URL + "]}\n" +
			"    auth: {scopes: {GET: [products:read]}}\n"
	}
	write := func(body string) {
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("upstream_secret: ${UPSTREAM_SECRET}\nroutes:\n" + route("products", "/v1/products"))

	root := generateRootKey(t)
	proxy, adm := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "serve", "--config", cfg, "--proxy-addr", proxy, "--admin-addr", adm, "--portal-addr", "",
		"--database-url", "sqlite:"+filepath.Join(dir, "k.db"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "UPSTREAM_SECRET=" + secret, "KEYGATE_ROOT_KEY=" + root}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitHTTP(t, "http://"+adm+"/healthz", &stderr)

	ctx := context.Background()
	c := admin.NewClient("http://"+adm, root)
	con, err := c.CreateConsumer(ctx, control.ConsumerCreate{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.CreateKey(ctx, control.KeyCreate{ConsumerID: con.ID, Scopes: []string{"products:read"}})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+proxy+path, nil)
		req.Header.Set("Authorization", "Bearer "+k.Plaintext)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, body, _ := get("/v1/products/42"); code != 200 || body != "upstream:/v1/products/42" {
		t.Fatalf("keyed GET = %d %q\n%s", code, body, stderr.String())
	}
	h := seen.Load().(http.Header)
	if h.Get("Authorization") != "" || strings.Contains(strings.Join(flatten(h), "\n"), k.Plaintext) {
		t.Fatal("the upstream received the key")
	}
	if h.Get("X-Keygate-Key-Id") != k.ID || h.Get("X-Keygate-Consumer-Id") != con.ID {
		t.Fatalf("identity headers = %v", h)
	}
	// Check the signature independently: HMAC-SHA256 over the newline-joined fields.
	sig := h.Get("X-Keygate-Signature")
	var ts, v1 string
	for _, part := range strings.Split(sig, ",") {
		if v, ok := strings.CutPrefix(part, "t="); ok {
			ts = v
		}
		if v, ok := strings.CutPrefix(part, "v1="); ok {
			v1 = v
		}
	}
	mac := hmac.New(sha256.New, []byte(secret))
	io.WriteString(mac, strings.Join([]string{ts, "GET", "/v1/products/42", h.Get("X-Request-Id"), k.ID, con.ID,
		h.Get("X-Keygate-Plan"), h.Get("X-Keygate-Env"), h.Get("X-Keygate-Scopes")}, "\n"))
	if want := hex.EncodeToString(mac.Sum(nil)); v1 != want {
		t.Fatalf("signature %q does not verify (want v1=%s)", sig, want)
	}

	if code, _, _ := get("/v1/orders"); code != 404 {
		t.Fatalf("unknown route = %d; want 404", code)
	}
	// SIGHUP with a new route: served without restarting.
	write("upstream_secret: ${UPSTREAM_SECRET}\nroutes:\n" + route("products", "/v1/products") + route("orders", "/v1/orders"))
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, _ := get("/v1/orders")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("route added by SIGHUP not served (last %d)\n%s", code, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A bad file is rejected; the running routes stay.
	write("routes:\n  - name: broken\n    bogus: true\n")
	cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "config reload rejected") {
		if time.Now().After(deadline) {
			t.Fatalf("bad reload not reported\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _, _ := get("/v1/orders"); code != 200 {
		t.Fatalf("after a rejected reload /v1/orders = %d; want the old config to stay", code)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), k.Plaintext) || strings.Contains(stderr.String(), root) || strings.Contains(stderr.String(), secret) {
		t.Fatal("a secret reached the log")
	}
}

func flatten(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	return out
}

func waitHTTP(t *testing.T, url string, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200: %v\n%s", url, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
