package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keygate/keygate"
)

// The direct forwarder carries the common request — plain-HTTP target, no protocol upgrade, no
// Expect, no TE, no body or a body of known length up to directMaxBody — to the upstream on the
// handler's own goroutine: the request is written in one buffer and one write, the answer is read
// with http.ReadResponse on a keep-alive connection owned by the target. httputil.ReverseProxy
// over http.Transport spends a third of the proxy's CPU per request on what this skips: cloning the
// request and its header, sorting the header to write it, and handing each request and answer
// between the handler and the transport's writeLoop and readLoop goroutines. Everything else
// (chunked or large request bodies, WebSockets and other upgrades, 100-continue, TLS targets,
// trailers requested with TE) goes through ReverseProxy as before, so streaming and upgrades keep
// the standard library's behaviour.
//
// What the forwarder keeps from ReverseProxy and Transport: hop-by-hop fields (and those named in
// Connection) removed both ways; X-Forwarded-* replaced; 1xx answers passed on; trailers passed
// on; streamed answers (no Content-Length, or text/event-stream) flushed after every read; the
// route's timeout on the wait for the answer's header (504); a dial or read failure is a 502 and
// takes the target out of rotation; a client that goes away cancels the upstream read; a request
// that fails on a reused connection the upstream had closed is retried once on a new one when
// nothing was written or the request is replayable (the rules of http.Transport); a response body
// that breaks mid-way aborts the client's connection (http.ErrAbortHandler), as ReverseProxy does.
const (
	directMaxBody     = 64 << 10 // larger bodies stream through ReverseProxy
	directMaxHeader   = 10 << 20 // an upstream answer's header block (http.Transport's default)
	directIdleTimeout = 90 * time.Second
	directMaxIdle     = 1024 // idle connections kept per target (http.Transport: MaxIdleConnsPerHost)
)

// upstreamConns is one plain-HTTP target's pool of idle keep-alive connections.
type upstreamConns struct {
	addr string // host:port to dial
	host string // the Host field

	mu     sync.Mutex
	idle   []*upConn // most recently used last
	closed bool
}

// upConn is one connection to a target.
type upConn struct {
	nc     net.Conn
	br     *bufio.Reader
	limit  int64 // bytes the next reads may still return; -1 unlimited
	idleAt time.Time
	reused bool

	rc        syscall.RawConn // for alive; nil when the connection has no descriptor
	peekFn    func(uintptr) bool
	peekBuf   [1]byte
	peekAlive bool
}

func (c *upConn) Read(p []byte) (int, error) {
	if c.limit >= 0 {
		if c.limit == 0 {
			return 0, errHeaderTooLarge
		}
		if int64(len(p)) > c.limit {
			p = p[:c.limit]
		}
	}
	n, err := c.nc.Read(p)
	if c.limit >= 0 {
		c.limit -= int64(n)
	}
	return n, err
}

var errHeaderTooLarge = errors.New("the upstream's response header is too large")

// newUpstreamConns returns the pool for u, or nil when u is not a plain-HTTP target.
func newUpstreamConns(u *url.URL) *upstreamConns {
	if u.Scheme != "http" || u.Host == "" {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &upstreamConns{addr: addr, host: u.Host}
}

// get returns an idle connection that still looks alive, or dials a new one.
func (p *upstreamConns) get(ctx context.Context, now time.Time) (*upConn, error) {
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		idle := now.Sub(c.idleAt)
		if idle < directIdleTimeout {
			p.mu.Unlock()
			if c.alive() {
				c.reused = true
				return c, nil
			}
			c.nc.Close()
			p.mu.Lock()
			continue
		}
		c.nc.Close()
	}
	p.mu.Unlock()
	nc, err := dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	c := &upConn{nc: nc, limit: -1}
	c.br = bufio.NewReaderSize(c, 16<<10)
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.rc, c.peekFn = rc, c.peek
		}
	}
	return c, nil
}

// alive reports whether an idle connection has neither been closed by the upstream nor received
// anything unasked: a non-blocking peek at the socket, one system call. http.Transport learns the
// same from the read it keeps pending on every idle connection; without this look, a request
// that must not be repeated (a POST) would fail on a connection the upstream had closed, as every
// connection is when an upstream restarts.
func (c *upConn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.rc == nil {
		return true
	}
	c.peekAlive = false
	if err := c.rc.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekAlive
}

// peek is alive's look at the socket (a method value made once per connection, so that alive
// allocates nothing).
func (c *upConn) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	// n > 0: bytes nobody asked for; n == 0 without error: the upstream closed the connection.
	c.peekAlive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
	return true
}

// put returns a connection whose last exchange ended cleanly.
func (p *upstreamConns) put(c *upConn, now time.Time) {
	c.idleAt = now
	p.mu.Lock()
	if p.closed || len(p.idle) >= directMaxIdle {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// close closes the idle connections and makes put close the others as they come back.
func (p *upstreamConns) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// directEligible reports whether the direct forwarder handles r to t.
func directEligible(r *http.Request, t *target) bool {
	if t.conns == nil || r.Method == http.MethodConnect || r.ContentLength < 0 || r.ContentLength > directMaxBody {
		return false
	}
	h := r.Header
	if _, ok := h["Upgrade"]; ok {
		return false
	}
	if _, ok := h["Expect"]; ok {
		return false
	}
	if _, ok := h["Te"]; ok {
		return false
	}
	return true
}

var reqBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// forwardDirect sends r to ex.target and writes the answer.
func (g *Gateway) forwardDirect(ex *exchange, r *http.Request) {
	bp := reqBuffers.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 2*directMaxBody {
			reqBuffers.Put(bp)
		}
	}()
	b := g.appendRequest((*bp)[:0], ex, r)
	if r.ContentLength > 0 {
		n := len(b)
		b = append(b, make([]byte, r.ContentLength)...)
		got, err := io.ReadFull(r.Body, b[n:])
		ex.bytesIn = int64(got)
		if err != nil {
			if r.Context().Err() != nil {
				ex.code, ex.w.status = "CLIENT_CLOSED", 499
				return
			}
			ex.problem(http.StatusBadRequest, keygate.CodeBadRequest, "the request body could not be read: it ended before its Content-Length")
			return
		}
	}
	*bp = b

	ctx := r.Context()
	conns := ex.target.conns
	for attempt := 0; ; attempt++ {
		c, err := conns.get(ctx, ex.start)
		if err != nil {
			g.upstreamFailed(ex, ctx, err)
			return
		}
		if !g.exchangeDirect(ex, r, c, b, attempt == 0) {
			return
		}
	}
}

// exchangeDirect writes the request on c and the answer to the client. It reports true, with
// nothing answered, for a failure on a reused connection that may be repeated on a new one.
func (g *Gateway) exchangeDirect(ex *exchange, r *http.Request, c *upConn, req []byte, mayRetry bool) (retry bool) {
	ctx := r.Context()
	rt := ex.route
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })

	c.nc.SetDeadline(time.Now().Add(rt.timeout))
	if _, err := c.nc.Write(req); err != nil {
		stop()
		c.nc.Close()
		// A failed write to a reused connection means the upstream had closed it. Without a body,
		// what went out was not a whole request, so it is sent again on a new connection; with
		// one, complete headers and a cut body may have gone out, and the request is not repeated.
		if mayRetry && c.reused && ctx.Err() == nil && r.ContentLength == 0 {
			return true
		}
		g.upstreamFailed(ex, ctx, err)
		return false
	}
	c.limit = directMaxHeader
	resp, err := http.ReadResponse(c.br, r)
	for err == nil && resp.StatusCode < 200 {
		if resp.StatusCode == http.StatusSwitchingProtocols {
			err = errors.New("the upstream switched protocols unasked")
			break
		}
		if resp.StatusCode != http.StatusContinue {
			g.writeInformational(ex, resp)
		}
		resp, err = http.ReadResponse(c.br, r)
	}
	if err != nil {
		stop()
		c.nc.Close()
		if mayRetry && c.reused && ctx.Err() == nil && replayable(r) &&
			(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			return true // the upstream closed the idle connection as the request went out
		}
		g.upstreamFailed(ex, ctx, err)
		return false
	}
	c.limit = -1
	c.nc.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		// The client went away while the header was read; the cancellation's deadline may have
		// been cleared by the line above.
		stop()
		c.nc.Close()
		g.upstreamFailed(ex, ctx, ctx.Err())
		return false
	}

	removeHopByHop(resp.Header)
	g.upstreamHeader(ex, resp)
	h := ex.w.Header()
	for k, vv := range resp.Header {
		if old, ok := h[k]; ok {
			h[k] = append(old, vv...)
		} else {
			h[k] = vv
		}
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	ex.w.WriteHeader(resp.StatusCode)

	flush := resp.ContentLength < 0 || isEventStream(resp.Header)
	bufp := copyBuffers.Get().(*[]byte)
	buf := *bufp
	var rerr, werr error
	for {
		var n int
		n, rerr = resp.Body.Read(buf)
		if n > 0 {
			if _, werr = ex.w.Write(buf[:n]); werr != nil {
				break
			}
			if flush {
				if werr = ex.w.FlushError(); werr != nil {
					break
				}
			}
		}
		if rerr != nil {
			break
		}
	}
	copyBuffers.Put(bufp)
	stopped := stop()
	if rerr != io.EOF || werr != nil {
		// The answer is cut short: the client must see a broken answer, not a complete one.
		c.nc.Close()
		if werr == nil && ctx.Err() == nil {
			g.log.Debug("gateway: upstream answer broke off", "route", rt.name, "err", rerr)
		}
		ex.code = "UPSTREAM_ABORTED"
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	if resp.Close || !stopped {
		c.nc.Close() // asked to, or the client went away and the deadline is in the past
	} else {
		ex.target.conns.put(c, ex.start)
	}
	return false
}

var aLongTimeAgo = time.Unix(1, 0)

// replayable mirrors http.Transport: a request without a body that is idempotent, or that the
// client marked with an idempotency key, may be sent again.
func replayable(r *http.Request) bool {
	if r.ContentLength > 0 {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := r.Header["Idempotency-Key"]
	_, b := r.Header["X-Idempotency-Key"]
	return a || b
}

// upstreamFailed answers a request whose upstream could not be reached or did not answer. The
// route's timeout shows as the connection's deadline; a client that went away also moves the
// deadline (to the past), so it is told apart by the request's context.
func (g *Gateway) upstreamFailed(ex *exchange, ctx context.Context, err error) {
	clientGone := ctx.Err() != nil
	var ne net.Error
	timedOut := !clientGone && errors.As(err, &ne) && ne.Timeout() && !isDialError(err)
	g.upstreamError(ex, err, timedOut, clientGone)
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// writeInformational passes a 1xx answer on, as ReverseProxy does, leaving the final answer's
// fields as they were.
func (g *Gateway) writeInformational(ex *exchange, resp *http.Response) {
	h := ex.w.Header()
	removeHopByHop(resp.Header)
	saved := make(map[string][]string, len(resp.Header))
	for k, vv := range resp.Header {
		if old, ok := h[k]; ok {
			saved[k] = old
		}
		h[k] = vv
	}
	ex.w.ResponseWriter.WriteHeader(resp.StatusCode)
	for k := range resp.Header {
		if old, ok := saved[k]; ok {
			h[k] = old
		} else {
			delete(h, k)
		}
	}
}

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(strings.ToLower(ct[0]), "text/event-stream")
}

// hopByHop are the fields that belong to one connection (RFC 9110 §7.6.1), as ReverseProxy
// removes them.
var hopByHop = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				delete(h, http.CanonicalHeaderKey(f))
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// appendRequest writes the upstream request's line and header: the route's target and the
// cleaned path, the query without api_key, the client's fields without hop-by-hop ones, key
// fields, client copies of X-Keygate-* or X-Forwarded-*, then keygate's own.
func (g *Gateway) appendRequest(b []byte, ex *exchange, r *http.Request) []byte {
	path := ex.target.url.Path + ex.fwdPath
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = appendPath(b, path)
	if ex.query != "" {
		b = append(b, '?')
		b = append(b, ex.query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, ex.target.conns.host...)
	b = append(b, "\r\n"...)

	var named map[string]bool // fields the client's Connection names
	if conn := r.Header["Connection"]; len(conn) > 0 {
		named = map[string]bool{}
		for _, v := range conn {
			for _, f := range strings.Split(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					named[http.CanonicalHeaderKey(f)] = true
				}
			}
		}
	}
	for k, vv := range r.Header {
		if dropForward(k, ex.stripAuth) || named[k] {
			continue
		}
		for _, v := range vv {
			b = appendField(b, k, v)
		}
	}
	var id identity
	g.identityOf(ex, r, r.Method, path, &id)
	b = appendField(b, "X-Request-Id", ex.reqID)
	if ex.entry != nil {
		b = appendField(b, "X-Keygate-Key-Id", id.keyID)
		b = appendField(b, "X-Keygate-Consumer-Id", id.consumerID)
		b = appendField(b, "X-Keygate-Plan", id.plan)
		b = appendField(b, "X-Keygate-Env", id.env)
		b = appendField(b, "X-Keygate-Scopes", id.scopes)
	}
	if id.signed {
		b = append(b, "X-Keygate-Signature: "...)
		b = append(b, ex.buf...)
		b = append(b, "\r\n"...)
	}
	b = appendField(b, "X-Forwarded-For", id.xff)
	b = appendField(b, "X-Forwarded-Host", id.fwdHost)
	b = appendField(b, "X-Forwarded-Proto", id.fwdProto)
	if r.ContentLength > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, max(r.ContentLength, 0), 10)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// dropForward reports whether a client's field stays behind.
func dropForward(k string, stripAuth bool) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded",
		"X-Api-Key", "X-Request-Id", "Content-Length", "Host":
		return true
	case "Authorization":
		return stripAuth
	}
	return strings.HasPrefix(k, "X-Keygate-")
}

// appendPath appends p escaped as http.Transport writes a URL path without RawPath; the common
// path that needs no escaping is copied as is.
func appendPath(b []byte, p string) []byte {
	if p == "" {
		return append(b, '/')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		switch c {
		case '-', '_', '.', '~', '/', '$', '&', '+', ',', ':', ';', '=', '@':
			continue
		}
		return append(b, (&url.URL{Path: p}).EscapedPath()...)
	}
	return append(b, p...)
}
