package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate"
)

var dialer = net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

// forward hands the request to the reverse proxy with the route's timeout on the wait for the
// upstream's response header.
func (g *Gateway) forward(ex *exchange, r *http.Request) {
	ctx, cancel := context.WithCancelCause(r.Context())
	ex.cancel = cancel
	// A fresh context, not one in the pooled exchange: the transport's goroutines may still
	// consult it after the handler returned.
	ectx := &exchangeContext{Context: ctx, ex: ex}
	ex.startTimer(ex.route.timeout)
	g.proxy.ServeHTTP(&ex.w, r.WithContext(ectx))
}

// rewrite builds the upstream request: the target's URL with the cleaned path, the query
// without api_key, no key headers, no client copies of X-Keygate-*, the caller's identity
// (signed), and X-Forwarded-*. ReverseProxy has already removed hop-by-hop fields and the
// client's X-Forwarded-*/Forwarded.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In.Context())
	out := pr.Out
	u := ex.target.url
	out.URL.Scheme = u.Scheme
	out.URL.Host = u.Host
	out.URL.Path = u.Path + ex.fwdPath
	out.URL.RawPath = ""
	out.URL.RawQuery = ex.query
	out.Host = ""

	h := out.Header
	for k := range h {
		if strings.HasPrefix(k, "X-Keygate-") {
			delete(h, k)
		}
	}
	delete(h, "X-Api-Key")
	if ex.stripAuth {
		delete(h, "Authorization")
	}

	// Every value this sets lives in one backing array: one allocation instead of ten. Each
	// field gets a capacity-clipped slice, so that a later Add copies instead of overwriting.
	var id identity
	g.identityOf(ex, pr.In, out.Method, out.URL.Path, &id)
	v := make([]string, 10)
	set := func(i int, k, val string) {
		v[i] = val
		h[k] = v[i : i+1 : i+1]
	}
	set(0, "X-Request-Id", ex.reqID)
	if ex.entry != nil {
		set(1, "X-Keygate-Key-Id", id.keyID)
		set(2, "X-Keygate-Consumer-Id", id.consumerID)
		set(3, "X-Keygate-Plan", id.plan)
		set(4, "X-Keygate-Env", id.env)
		set(5, "X-Keygate-Scopes", id.scopes)
	}
	if id.signed {
		set(6, "X-Keygate-Signature", string(ex.buf))
	}
	set(7, "X-Forwarded-For", id.xff)
	set(8, "X-Forwarded-Host", id.fwdHost)
	set(9, "X-Forwarded-Proto", id.fwdProto)
}

// identity is what keygate adds to an upstream request besides X-Request-Id.
type identity struct {
	keyID, consumerID, plan, env, scopes string
	signed                               bool // the signature is in ex.buf
	xff, fwdHost, fwdProto               string
}

// identityOf computes the identity fields of the request in to method and path (the path the
// upstream receives, unescaped), signing them into ex.buf when the route has a secret.
func (g *Gateway) identityOf(ex *exchange, in *http.Request, method, path string, id *identity) {
	if e := ex.entry; e != nil {
		id.keyID, id.consumerID, id.plan, id.env, id.scopes = e.Key.ID, e.ConsumerID, e.Plan, e.Env, e.ScopesHeader
	}
	if rt := ex.route; rt.hmacs != nil {
		ex.buf = appendSignature(ex.buf[:0], rt.hmacs, g.now().Unix(), method, path, ex.reqID, id.keyID, id.consumerID, id.plan, id.env, id.scopes)
		id.signed = true
	}
	host, _, err := net.SplitHostPort(in.RemoteAddr)
	if err != nil {
		host = in.RemoteAddr
	}
	if prior := in.Header["X-Forwarded-For"]; ex.trustedRemote && len(prior) > 0 {
		host = strings.Join(prior, ", ") + ", " + host
	}
	id.xff = host
	id.fwdHost, id.fwdProto = in.Host, "http"
	if in.TLS != nil {
		id.fwdProto = "https"
	}
	if ex.trustedRemote {
		if x := in.Header.Get("X-Forwarded-Host"); x != "" {
			id.fwdHost = x
		}
		if x := in.Header.Get("X-Forwarded-Proto"); x == "http" || x == "https" {
			id.fwdProto = x
		}
	}
}

// Signature computes X-Keygate-Signature as an upstream would check it: t=<unix>,v1=<hex of
// HMAC-SHA256(secret, t\nmethod\npath\nrequest id\nkey id\nconsumer id\nplan\nenv\nscopes)>,
// where path is the path the upstream receives.
func Signature(secret []byte, t int64, method, path, requestID, keyID, consumerID, plan, env, scopes string) string {
	pool := newHMACPool(secret)
	return string(appendSignature(nil, pool, t, method, path, requestID, keyID, consumerID, plan, env, scopes))
}

func newHMACPool(secret []byte) *sync.Pool {
	return &sync.Pool{New: func() any { return &signer{mac: hmac.New(sha256.New, secret)} }}
}

type signer struct {
	mac hash.Hash
	msg []byte
	sum []byte
}

func appendSignature(dst []byte, pool *sync.Pool, t int64, fields ...string) []byte {
	s := pool.Get().(*signer)
	s.msg = strconv.AppendInt(s.msg[:0], t, 10)
	for _, f := range fields {
		s.msg = append(s.msg, '\n')
		s.msg = append(s.msg, f...)
	}
	s.mac.Reset()
	s.mac.Write(s.msg)
	s.sum = s.mac.Sum(s.sum[:0])
	dst = append(dst, "t="...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, ",v1="...)
	dst = hex.AppendEncode(dst, s.sum)
	pool.Put(s)
	return dst
}

// modifyResponse runs when the upstream's response header arrives.
func (g *Gateway) modifyResponse(resp *http.Response) error {
	ex := exchangeOf(resp.Request.Context())
	ex.stopTimer()
	g.upstreamHeader(ex, resp)
	return nil
}

// upstreamHeader adjusts the upstream's answer header before it is copied to the client.
func (g *Gateway) upstreamHeader(ex *exchange, resp *http.Response) {
	ex.status = resp.StatusCode
	h := resp.Header
	// Fields keygate owns on this answer: the upstream's copies would duplicate them.
	delete(h, "Ratelimit")
	delete(h, "Ratelimit-Policy")
	delete(h, "X-Request-Id")
	if ex.route.deprecation != nil {
		delete(h, "Deprecation")
		delete(h, "Sunset")
	}
	if ex.cacheKey != "" {
		c := ex.route.cache
		if cacheable(resp) && (resp.ContentLength < 0 || resp.ContentLength <= c.maxEntry) {
			now := g.now()
			resp.Body = &cacheTee{ReadCloser: resp.Body, c: c, e: &cachedResponse{
				key: ex.cacheKey, header: h.Clone(), stored: now, expires: now.Add(c.ttl),
			}, want: resp.ContentLength}
		}
		h["Cache-Status"] = cacheStatusMiss
	}
}

var cacheStatusMiss = []string{"keygate; fwd=miss"}

// proxyError answers when the upstream could not be reached or did not answer in time.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	ex.stopTimer()
	timedOut := context.Cause(r.Context()) == errUpstreamTimeout
	var tooLarge *http.MaxBytesError
	if !timedOut && errors.As(err, &tooLarge) {
		ex.problem(http.StatusRequestEntityTooLarge, keygate.CodePayloadTooLarge, "the request body is larger than this route accepts")
		return
	}
	g.upstreamError(ex, err, timedOut, r.Context().Err() != nil)
}

// upstreamError answers a request whose upstream did not answer: 504 when the route's timeout
// ran out, 499 (nginx's name; nobody reads it) when the client had gone, else 502. A timeout or a
// failure takes the target out of rotation for the passive-health cooldown.
func (g *Gateway) upstreamError(ex *exchange, err error, timedOut, clientGone bool) {
	switch {
	case timedOut:
		g.markFailed(ex.target)
		ex.problem(http.StatusGatewayTimeout, keygate.CodeUpstreamTimeout, "the upstream did not answer in time")
	case clientGone:
		ex.code, ex.w.status = "CLIENT_CLOSED", 499
	default:
		g.markFailed(ex.target)
		g.log.Warn("gateway: upstream failed", "route", ex.route.name, "target", ex.target.url.Redacted(), "err", redactErr(err))
		ex.problem(http.StatusBadGateway, keygate.CodeUpstreamUnavailable, "the upstream is unavailable")
	}
}

// markFailed takes a target out of rotation for the passive-health cooldown.
func (g *Gateway) markFailed(t *target) {
	t.downUntil.Store(time.Now().Add(g.cooldown).UnixNano())
}

// redactErr drops the URL (and so any query) from a transport error.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func unescapeOr(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}
