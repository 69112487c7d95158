package gateway

// Forwarding behaviour that the direct forwarder (direct.go) must share with ReverseProxy. Like
// every test here, these run twice (main_test.go): once per way of forwarding.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

func TestKeepAliveAndClosedIdleConnections(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.Method, len(b))
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Config.IdleTimeout = 50 * time.Millisecond // the upstream closes idle keep-alives quickly
	up.Start()
	defer up.Close()
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("k", "/k", up.URL)}}, auth)
	hdr := map[string]string{"X-API-Key": key}

	for i := 0; i < 20; i++ {
		if resp, body := do(t, "GET", srv.URL+"/k", hdr, nil); resp.StatusCode != 200 || body != "GET 0" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential requests used %d upstream connections; want 1 (keep-alive)", n)
	}
	// The upstream has closed the idle connection by now: neither a replayable GET nor a POST
	// (which must not be sent twice) may fail because of it.
	for _, m := range []string{"GET", "POST", "DELETE"} {
		time.Sleep(250 * time.Millisecond)
		var body io.Reader
		want := m + " 0"
		if m == "POST" {
			body, want = strings.NewReader("hello"), "POST 5"
		}
		if resp, got := do(t, m, srv.URL+"/k", hdr, body); resp.StatusCode != 200 || got != want {
			t.Errorf("%s after the upstream closed the idle connection: %d %q", m, resp.StatusCode, got)
		}
	}
}

func TestRequestBodiesAndPaths(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		fmt.Fprintf(w, "%s|%s|%s|%d|%d|%s", r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.ContentLength, len(b), hex.EncodeToString(sum[:8]))
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("k", "/k", up.URL)}}, auth)
	hdr := map[string]string{"X-API-Key": key}
	digest := func(b string) string { s := sha256.Sum256([]byte(b)); return hex.EncodeToString(s[:8]) }
	small, large := strings.Repeat("a", 10<<10), strings.Repeat("b", 200<<10)
	tests := []struct {
		name, method, path, body string
		want                     string
	}{
		{"get", "GET", "/k/x?a=1&api_key=zzz&b=2", "", "GET|/k/x|a=1&b=2|0|0|" + digest("")},
		{"post small", "POST", "/k", small, "POST|/k||10240|10240|" + digest(small)},
		{"post large", "POST", "/k", large, "POST|/k||204800|204800|" + digest(large)},
		{"empty post", "POST", "/k", "", "POST|/k||0|0|" + digest("")},
		{"put", "PUT", "/k/1", `{"a":1}`, "PUT|/k/1||7|7|" + digest(`{"a":1}`)},
		{"escaped path", "GET", "/k/a%20b/%C3%A9/c@d", "", "GET|/k/a%20b/%C3%A9/c@d||0|0|" + digest("")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			resp, got := do(t, tc.method, srv.URL+tc.path, hdr, body)
			if resp.StatusCode != 200 || got != tc.want {
				t.Errorf("%d %q; want %q", resp.StatusCode, got, tc.want)
			}
		})
	}
}

func TestHopByHopFieldsBothWays(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		var seen []string
		for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Forwarded", "X-Keygate-Plan", "X-Api-Key", "Authorization"} {
			if v := r.Header.Get(k); v != "" {
				seen = append(seen, k+"="+v)
			}
		}
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End", "kept")
		fmt.Fprintf(w, "%s|%s|%s", strings.Join(seen, ","), r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Other"))
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("k", "/k", up.URL)}}, auth)
	resp, body := do(t, "GET", srv.URL+"/k", map[string]string{
		"Authorization": "Bearer " + key, "Connection": "X-Hop", "X-Hop": "1", "Keep-Alive": "300",
		"Proxy-Authorization": "Basic eA==", "Forwarded": "for=1.2.3.4", "X-Forwarded-For": "1.2.3.4",
		"X-Keygate-Plan": "spoofed", "X-Other": "kept",
	}, nil)
	if resp.StatusCode != 200 || body != "|127.0.0.1|kept" {
		t.Errorf("upstream saw %q (status %d); want no hop-by-hop, key or spoofed field, X-Forwarded-For from the connection", body, resp.StatusCode)
	}
	if resp.Header.Get("X-Resp-Hop") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-End") != "kept" {
		t.Errorf("answer fields: %v", resp.Header)
	}
}

func TestInformationalTrailersAndEmptyAnswers(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/k/early":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc")
		case "/k/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/k/notmodified":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "100")
			if r.Method != http.MethodHead {
				io.WriteString(w, strings.Repeat("x", 100))
			}
		}
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("k", "/k", up.URL)}}, auth)

	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", srv.URL+"/k/early", nil)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("body %q, trailer %v", b, resp.Trailer)
	}
	if len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Errorf("informational answers passed on: %q", hints)
	}
	hdr := map[string]string{"X-API-Key": key}
	// Answers without a body, one after the other on the same connections.
	for i := 0; i < 3; i++ {
		for _, c := range []struct {
			method, path string
			status       int
		}{{"HEAD", "/k/head", 200}, {"GET", "/k/nocontent", 204}, {"GET", "/k/notmodified", 304}, {"GET", "/k/full", 200}} {
			resp, body := do(t, c.method, srv.URL+c.path, hdr, nil)
			want := ""
			if c.path == "/k/full" {
				want = strings.Repeat("x", 100)
			}
			if resp.StatusCode != c.status || body != want {
				t.Errorf("%s %s: %d %q", c.method, c.path, resp.StatusCode, body)
			}
			if c.method == "HEAD" && resp.ContentLength != 100 {
				t.Errorf("HEAD Content-Length %d", resp.ContentLength)
			}
		}
	}
}

func TestEventStreamIsFlushed(t *testing.T) {
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "data: two\n\n")
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("k", "/k", up.URL)}}, auth)
	req, _ := http.NewRequest("GET", srv.URL+"/k", nil)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	got := make(chan string, 1)
	go func() { l, _ := br.ReadString('\n'); got <- l }()
	select {
	case l := <-got:
		if l != "data: one\n" {
			t.Errorf("first event %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event was held back until the stream ended")
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestClientGoneCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(cancelled)
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	rt := keyedRoute("k", "/k", up.URL)
	rt.Upstream.Timeout = keygate.Duration(time.Minute)
	_, srv := newTestGateway(t, &Config{Routes: []Route{rt}}, auth)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/k", nil)
	req.Header.Set("X-API-Key", key)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("answered %d; want the client's own timeout", resp.StatusCode)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled when the client went away")
	}
}

// rawUpstream answers every connection with the bytes of answer and closes it.
func rawUpstream(t *testing.T, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, answer)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestBrokenUpstreamAnswers(t *testing.T) {
	cut := rawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
	huge := rawUpstream(t, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 11<<20)+"\r\n\r\n")
	garbage := rawUpstream(t, "SSH-2.0-OpenSSH\r\n\r\n")
	untilClose := rawUpstream(t, "HTTP/1.1 200 OK\r\n\r\nread until close")
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{
		keyedRoute("cut", "/cut", cut), keyedRoute("huge", "/huge", huge),
		keyedRoute("garbage", "/garbage", garbage), keyedRoute("close", "/close", untilClose),
	}}, auth)
	hdr := map[string]string{"X-API-Key": key}

	req, _ := http.NewRequest("GET", srv.URL+"/cut", nil)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("an answer cut short by the upstream reached the client as a complete one")
	}
	for _, p := range []string{"/huge", "/garbage"} {
		resp, body := do(t, "GET", srv.URL+p, hdr, nil)
		if resp.StatusCode != 502 || decodeProblem(t, resp, body).Code != "UPSTREAM_UNAVAILABLE" {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, body := do(t, "GET", srv.URL+"/close", hdr, nil); resp.StatusCode != 200 || body != "read until close" {
		t.Errorf("answer delimited by the connection's end: %d %q", resp.StatusCode, body)
	}
}

func TestLargeAnswersIntact(t *testing.T) {
	big := make([]byte, 5<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
		}
		w.Write(big)
	})
	auth := newFakeAuth()
	key := auth.addKey(t, keygate.Key{})
	_, srv := newTestGateway(t, &Config{Routes: []Route{keyedRoute("k", "/k", up.URL)}}, auth)
	want := sha256.Sum256(big)
	for _, q := range []string{"", "?chunked=1"} {
		resp, body := do(t, "GET", srv.URL+"/k"+q, map[string]string{"X-API-Key": key}, nil)
		if got := sha256.Sum256([]byte(body)); resp.StatusCode != 200 || got != want {
			t.Errorf("%q: status %d, %d bytes, intact %v", q, resp.StatusCode, len(body), got == want)
		}
	}
}
