// Command proxycore measures candidate proxy cores for keygate's gateway side by side, without
// keygate's own work (no auth, no limiter, no signing): the question is how fast the engine under
// the gateway can forward a request, and what each engine keeps of the gateway's correctness.
//
//	proxycore upstream    -addr 127.0.0.1:18101                  # 13-byte answer; /echo, /stream, /upgrade for the probe
//	proxycore nethttp     -addr 127.0.0.1:18103 -upstream http://127.0.0.1:18101
//	proxycore nethttp-raw -addr 127.0.0.1:18104 -upstream http://127.0.0.1:18101
//	proxycore fasthttp    -addr 127.0.0.1:18105 -upstream http://127.0.0.1:18101 [-stream]
//	proxycore probe       -url http://127.0.0.1:18103            # streaming / request body / upgrade checks
//	proxycore hostile     name=127.0.0.1:18103 ...               # malformed requests: each core's answer
//	proxycore report      results.tsv
//
// nethttp is what the gateway runs today (httputil.ReverseProxy, Rewrite with SetURL and
// SetXForwarded, gateway.NewTransport(), a pooled 32 KiB copy buffer). nethttp-raw is a
// hand-rolled net/http handler: Transport.RoundTrip and io.CopyBuffer with pooled buffers, no
// ReverseProxy except for Upgrade requests (no 1xx forwarding, no trailers). fasthttp is a
// fasthttp.Server with a fasthttp.HostClient, keep-alive, bodies buffered; -stream turns on
// Server.StreamRequestBody and HostClient.StreamResponseBody.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/keygate/keygate/bench/internal/benchkit"
	"github.com/keygate/keygate/gateway"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "proxycore:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: proxycore upstream|nethttp|nethttp-raw|fasthttp|probe|report [flags]")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (127.0.0.1 only)")
	upstream := fs.String("upstream", "http://127.0.0.1:18101", "upstream base URL")
	stream := fs.Bool("stream", false, "fasthttp: stream request and response bodies")
	probeURL := fs.String("url", "", "probe: the proxy's base URL")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if args[0] == "report" {
		if fs.NArg() != 1 {
			return errors.New("usage: proxycore report results.tsv")
		}
		return report(fs.Arg(0), stdout)
	}
	if args[0] == "probe" {
		return probe(*probeURL, stdout)
	}
	if args[0] == "hostile" {
		return hostile(fs.Args(), stdout)
	}
	if !strings.HasPrefix(*addr, "127.0.0.1:") {
		return errors.New("-addr must be on 127.0.0.1")
	}
	u, err := url.Parse(*upstream)
	if err != nil {
		return err
	}
	if u.Scheme != "http" || !strings.HasPrefix(u.Host, "127.0.0.1:") {
		return errors.New("-upstream must be http://127.0.0.1:PORT")
	}
	switch args[0] {
	case "upstream":
		return benchkit.Serve(ctx, *addr, upstreamHandler())
	case "nethttp":
		return benchkit.Serve(ctx, *addr, newReverseProxy(u, gateway.NewTransport()))
	case "nethttp-raw":
		t := gateway.NewTransport()
		return benchkit.Serve(ctx, *addr, &rawProxy{target: u, transport: t, upgrade: newReverseProxy(u, t)})
	case "fasthttp":
		return serveFast(ctx, *addr, u.Host, *stream)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func newReverseProxy(u *url.URL, t *http.Transport) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport:    t,
		BufferPool:   gateway.BufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) },
	}
}

// upstreamHandler is bench/proxy's upstream (13 bytes, fixed Content-Length) plus three paths
// for the probe: /echo copies the request body back, /stream writes "first", waits 300 ms and
// writes "second" (flushing each), /upgrade switches protocols and echoes raw bytes.
func upstreamHandler() http.Handler {
	body := []byte("hello, world\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%d", n)
			return
		case "/stream":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, "second\n")
			return
		case "/headers":
			// what reached the upstream: the header names the probe plants
			var seen []string
			for _, k := range []string{"X-Evil", "X-Hop", "X-A", "Transfer-Encoding"} {
				if _, ok := r.Header[k]; ok {
					seen = append(seen, k)
				}
			}
			if r.Host != "backend" && !strings.HasPrefix(r.Host, "127.0.0.1") { // nginx sends its upstream's name
				seen = append(seen, "Host="+r.Host)
			}
			if len(r.Header["X-Dup"]) > 1 {
				seen = append(seen, "X-Dup×"+strconv.Itoa(len(r.Header["X-Dup"])))
			}
			io.WriteString(w, strings.Join(seen, ","))
			return
		case "/upgrade":
			if !strings.EqualFold(r.Header.Get("Upgrade"), "probe") {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: probe\r\n\r\n")
			line, err := brw.ReadString('\n')
			if err == nil {
				io.WriteString(conn, "echo:"+line)
			}
			return
		}
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{"13"}
		w.Write(body)
	})
}

// rawProxy forwards with Transport.RoundTrip directly: the outbound request is built field by
// field (no Request.Clone, no Header.Clone), hop-by-hop fields (RFC 9110 §7.6.1 plus the
// Connection tokens) are dropped both ways, X-Forwarded-For is appended, and the body is copied
// with a pooled buffer; answers without a Content-Length are flushed after every read. Requests
// with an Upgrade field (WebSockets) go to ReverseProxy instead, which bridges the switched
// connection. It does not forward 1xx answers or trailers.
type rawProxy struct {
	target    *url.URL
	transport *http.Transport
	upgrade   http.Handler
}

var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func copyEndToEnd(dst, src http.Header) {
	var tokens []string
	for _, v := range src["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tokens = append(tokens, http.CanonicalHeaderKey(t))
			}
		}
	}
next:
	for k, vv := range src {
		for _, h := range hopHeaders {
			if k == h {
				continue next
			}
		}
		for _, t := range tokens {
			if k == t {
				continue next
			}
		}
		dst[k] = vv // shared backing arrays: the inbound request is not used again
	}
}

func (p *rawProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header["Upgrade"]; ok {
		p.upgrade.ServeHTTP(w, r)
		return
	}
	out := &http.Request{
		Method:        r.Method,
		URL:           &url.URL{Scheme: p.target.Scheme, Host: p.target.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, len(r.Header)+1),
		Body:          r.Body,
		ContentLength: r.ContentLength,
	}
	if r.ContentLength == 0 {
		out.Body = nil // lets the transport reuse the connection without waiting on a body
	}
	copyEndToEnd(out.Header, r.Header)
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
			host = strings.Join(prior, ", ") + ", " + host
		}
		out.Header["X-Forwarded-For"] = []string{host}
	}
	out = out.WithContext(r.Context())
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	copyEndToEnd(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	buf := gateway.BufferPool{}.Get()
	if resp.ContentLength >= 0 {
		io.CopyBuffer(w, readerOnly{resp.Body}, buf) // readerOnly: no WriterTo, so the pooled buffer is used
	} else {
		// No length: a stream (SSE, chunked progress). Flush every read, as ReverseProxy does.
		rc := http.NewResponseController(w)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					break
				}
				rc.Flush()
			}
			if err != nil {
				break
			}
		}
	}
	gateway.BufferPool{}.Put(buf)
}

type readerOnly struct{ io.Reader }

// serveFast is a fasthttp reverse proxy: the server's RequestCtx.Request goes to the HostClient
// as it is (after dropping hop-by-hop fields and adding X-Forwarded-For) and the answer is read
// straight into RequestCtx.Response.
func serveFast(ctx context.Context, addr, upstreamHost string, stream bool) error {
	client := &fasthttp.HostClient{
		Addr:                          upstreamHost,
		MaxConns:                      1024,
		MaxIdleConnDuration:           90 * time.Second,
		ReadBufferSize:                32 << 10,
		WriteBufferSize:               32 << 10,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		StreamResponseBody:            stream,
	}
	hops := []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}
	handler := func(c *fasthttp.RequestCtx) {
		req := &c.Request
		// Fields the client's Connection names are hop-by-hop too (fasthttp does not know this).
		if conn := req.Header.Peek("Connection"); len(conn) > 0 {
			for t := range strings.SplitSeq(string(conn), ",") {
				if t = strings.TrimSpace(t); t != "" {
					req.Header.Del(t)
				}
			}
		}
		for _, h := range hops {
			req.Header.Del(h)
		}
		// fasthttp keeps Transfer-Encoding out of the header map; it re-frames the body itself.
		ip := c.RemoteIP().String()
		if prior := req.Header.Peek("X-Forwarded-For"); len(prior) > 0 {
			ip = string(prior) + ", " + ip
		}
		req.Header.Set("X-Forwarded-For", ip)
		req.SetHost(upstreamHost)
		if err := client.Do(req, &c.Response); err != nil {
			c.Response.Reset()
			c.SetStatusCode(fasthttp.StatusBadGateway)
			return
		}
		if conn := c.Response.Header.Peek("Connection"); len(conn) > 0 {
			for t := range strings.SplitSeq(string(conn), ",") {
				if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, "close") && !strings.EqualFold(t, "keep-alive") {
					c.Response.Header.Del(t)
				}
			}
		}
		for _, h := range hops {
			c.Response.Header.Del(h)
		}
	}
	srv := &fasthttp.Server{
		Handler:                       handler,
		NoDefaultServerHeader:         true,
		ReadBufferSize:                64 << 10, // bench/proxy's MaxHeaderBytes: 64 KiB
		WriteBufferSize:               32 << 10,
		ReadTimeout:                   0,
		DisableHeaderNamesNormalizing: true,
		StreamRequestBody:             stream,
		Logger:                        nopLogger{}, // the hostile probe would fill stderr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		srv.Shutdown()
	}()
	return srv.Serve(ln)
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

// probe checks what a proxy keeps of the gateway's correctness: does a streamed answer's first
// chunk arrive before the upstream finishes (time to first byte vs. total), does an 8 MiB chunked
// request body arrive whole, and does an Upgrade get through to a raw byte echo.
func probe(base string, w io.Writer) error {
	u, err := url.Parse(base)
	if err != nil || !strings.HasPrefix(u.Host, "127.0.0.1:") {
		return errors.New("-url must be http://127.0.0.1:PORT")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}

	// 1. streaming answer
	stream := "error"
	start := time.Now()
	if resp, err := client.Get(base + "/stream"); err == nil {
		br := bufio.NewReader(resp.Body)
		first, err1 := br.ReadString('\n')
		ttfb := time.Since(start)
		rest, _ := io.ReadAll(br)
		total := time.Since(start)
		resp.Body.Close()
		if err1 == nil && first == "first\n" && string(rest) == "second\n" {
			verdict := "streamed"
			if ttfb > 200*time.Millisecond {
				verdict = "BUFFERED"
			}
			stream = fmt.Sprintf("%s (first chunk %dms, all %dms)", verdict, ttfb.Milliseconds(), total.Milliseconds())
		} else {
			stream = fmt.Sprintf("wrong answer %q %q", first, rest)
		}
	} else {
		stream = "error: " + err.Error()
	}

	// 2. an 8 MiB chunked request body (keygate's default max_body is 10 MiB): does it arrive whole
	const size = 8 << 20
	body := "error"
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < size/len(chunk); i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, base+"/echo", pr) // ContentLength -1: chunked
	if resp, err := client.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && string(b) == strconv.Itoa(size) {
			body = "ok (8 MiB chunked)"
		} else {
			body = fmt.Sprintf("FAILED (status %d, %q)", resp.StatusCode, b)
		}
	} else {
		body = "FAILED: " + err.Error()
	}

	// 3. upgrade to a raw byte stream (what a WebSocket needs)
	upgrade := "FAILED"
	if conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second); err == nil {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(conn, "GET /upgrade HTTP/1.1\r\nHost: "+u.Host+"\r\nConnection: Upgrade\r\nUpgrade: probe\r\n\r\n")
		br := bufio.NewReader(conn)
		if resp, err := http.ReadResponse(br, nil); err == nil {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				io.WriteString(conn, "ping\n")
				if line, err := br.ReadString('\n'); err == nil && line == "echo:ping\n" {
					upgrade = "ok (101, bytes echoed)"
				} else {
					upgrade = fmt.Sprintf("FAILED (101 but no echo: %v)", err)
				}
			} else {
				upgrade = fmt.Sprintf("FAILED (status %d)", resp.StatusCode)
			}
		} else {
			upgrade = "FAILED: " + err.Error()
		}
		conn.Close()
	}
	fmt.Fprintf(w, "stream: %s; request body: %s; upgrade: %s\n", stream, body, upgrade)
	return nil
}

// hostile sends malformed or smuggling-shaped requests to each named address and prints one
// line per case: the status each core answers with (0: connection closed without an answer), and
// for 200s which planted fields the upstream saw (/headers reports X-Evil, X-Hop, X-A,
// Transfer-Encoding, a foreign Host, repeated X-Dup).
func hostile(targets []string, w io.Writer) error {
	type tc struct{ name, raw string }
	req := func(path string, fields ...string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + strings.Join(fields, "") + "\r\n"
	}
	cases := []tc{
		{"plain", req("/headers")},
		{"NUL in value", req("/headers", "X-A: a\x00b\r\n")},
		{"CR in value", req("/headers", "X-A: a\rX-Evil: 1\r\n")},
		{"LF-only line end", "GET /headers HTTP/1.1\nHost: 127.0.0.1\nX-Evil: 1\n\n"},
		{"obs-fold", req("/headers", "X-A: a\r\n X-Evil: 1\r\n")},
		{"space before colon", req("/headers", "X-Evil : 1\r\n")},
		{"Connection names a field", req("/headers", "Connection: X-Hop\r\nX-Hop: 1\r\n")},
		{"repeated field", req("/headers", "X-Dup: 1\r\nX-Dup: 2\r\n")},
		{"two Host fields", "GET /headers HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{"no Host (HTTP/1.1)", "GET /headers HTTP/1.1\r\n\r\n"},
		{"absolute form", "GET http://evil.example/headers HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
		{"asterisk form", "GET * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
		{"bad method", "G\x00T /headers HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
		{"CL + TE chunked", "POST /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"two different CLs", "POST /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"},
		{"TE gzip, chunked", "POST /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"TE chunked, bad size", "POST /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"},
		{"10 KB field", req("/headers", "X-A: "+strings.Repeat("a", 10<<10)+"\r\n")},
		{"100 KB header block", req("/headers", strings.Repeat("X-Junk: "+strings.Repeat("j", 1000)+"\r\n", 100))},
		{"1 MiB field", req("/headers", "X-A: "+strings.Repeat("a", 1<<20)+"\r\n")},
	}
	fmt.Fprintf(w, "%-26s", "case")
	for _, t := range targets {
		name, _, _ := strings.Cut(t, "=")
		fmt.Fprintf(w, " %-16s", name)
	}
	fmt.Fprintln(w)
	for _, c := range cases {
		fmt.Fprintf(w, "%-26s", c.name)
		for _, t := range targets {
			_, addr, _ := strings.Cut(t, "=")
			fmt.Fprintf(w, " %-16s", rawAnswer(addr, c.raw))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func rawAnswer(addr, raw string) string {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "dial"
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	go io.WriteString(conn, raw)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "0"
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	resp.Body.Close()
	out := strconv.Itoa(resp.StatusCode)
	if resp.StatusCode == 200 && len(b) > 0 {
		out += " " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " ")
	}
	return out
}

// report reads "round<TAB>target<TAB>conns<TAB>rps<TAB>p50ms<TAB>p99ms" lines and prints one
// table of medians with the spread of req/s (min..max across rounds as % of the median) and the
// ratios of the medians to nginx and to nethttp.
func report(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type key struct{ target, conns string }
	type samples struct{ rps, p50, p99 []float64 }
	data := map[key]*samples{}
	var order []key
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Split(sc.Text(), "\t")
		if len(fl) != 6 {
			continue
		}
		k := key{fl[1], fl[2]}
		s, ok := data[k]
		if !ok {
			s = &samples{}
			data[k] = s
			order = append(order, k)
		}
		rps, _ := strconv.ParseFloat(fl[3], 64)
		p50, _ := strconv.ParseFloat(fl[4], 64)
		p99, _ := strconv.ParseFloat(fl[5], 64)
		s.rps, s.p50, s.p99 = append(s.rps, rps), append(s.p50, p50), append(s.p99, p99)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(order) == 0 {
		return errors.New("no results")
	}
	sort.SliceStable(order, func(i, j int) bool { return len(order[i].conns) > len(order[j].conns) }) // c50 block, then c1
	fmt.Fprintf(w, "medians of %d rounds; spread = min..max req/s as %% of the median\n", len(data[order[0]].rps))
	fmt.Fprintf(w, "%-16s %5s %10s %14s %9s %9s %8s %9s\n", "target", "conns", "req/s", "spread", "p50 ms", "p99 ms", "×nginx", "×nethttp")
	for _, k := range order {
		s := data[k]
		m := benchkit.Median(s.rps)
		lo, hi := benchkit.MinMax(s.rps)
		ratio := func(base string) string {
			b := data[key{base, k.conns}]
			if b == nil || benchkit.Median(b.rps) == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", m/benchkit.Median(b.rps))
		}
		fmt.Fprintf(w, "%-16s %5s %10.0f %6.0f%%..%3.0f%% %9.3f %9.3f %8s %9s\n", k.target, k.conns, m,
			100*lo/m, 100*hi/m, benchkit.Median(s.p50), benchkit.Median(s.p99), ratio("nginx"), ratio("nethttp"))
	}
	return nil
}
