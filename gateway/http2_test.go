package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keygate/keygate"
)

// TestHTTP2Clients: the gateway answers HTTP/2 clients (TLS listener), streaming and all.
func TestHTTP2Clients(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		for _, s := range []string{"a", "b", "c"} {
			io.WriteString(w, s)
			http.NewResponseController(w).Flush()
		}
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	g, err := New(Options{Config: &Config{Routes: []Route{keyedRoute("r", "/r", up.URL)}}, Auth: auth, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	srv := httptest.NewUnstartedServer(g)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/r", strings.NewReader("body"))
	req.Header.Set("X-API-Key", key)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "abc" {
		t.Errorf("HTTP/%d %d %q; want HTTP/2 200 abc", resp.ProtoMajor, resp.StatusCode, b)
	}
	if got := up.last().Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto = %q; want https", got)
	}
}
