package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
)

// ServeHTTP answers one request. The steps run in this order, written once here; the request
// flows down them and stops at the first that answers, and the answer flows back up through
// the proxy's response hooks:
//
//  1. path       clean it once; %2F, control bytes, invalid UTF-8 → 400
//  2. route      host, longest prefix, method → 404 ROUTE_NOT_FOUND (before any key check)
//  3. route info Deprecation/Sunset/Link, CORS fields; a CORS preflight is answered here
//  4. body limit a declared Content-Length over max_body → 413 (a streamed one is cut at the limit)
//  5. key        read from Authorization: Bearer, X-API-Key or ?api_key= → 401/400
//  6. authorize  verify cache → ip → referrer → scopes → env → plan → 401/403
//  7. limits     the key's windows and quotas (public routes: per-IP windows) → 429/503, and
//     the RateLimit fields on every later answer  [the limiter's seam: limit()]
//  8. cache      a fresh cached GET answer is written here
//  9. proxy      rewrite (key out, identity in, signed), pick a healthy target, timeout →
//     upstream; 502/504/413 from proxyError, caching and header hygiene in modifyResponse
//
// 10. finish     metrics and OnRequest, after the answer is written
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := g.table.Load()
	ex := g.getExchange()
	ex.start = time.Now()
	ex.w.reset(w)
	defer g.finish(ex, r)

	ex.reqID = requestID(r.Header.Get("X-Request-Id"))
	h := w.Header()
	h["X-Request-Id"] = []string{ex.reqID}
	ex.remote, ex.client, ex.trustedRemote = clientAddr(r, t.trusted)

	// 1. path
	p, bad := cleanRequestPath(r)
	if bad != "" {
		ex.problem(http.StatusBadRequest, keygate.CodeBadRequest, bad)
		return
	}

	// 2. route
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	method := r.Method
	if preflight {
		method = ""
	}
	rt := t.match(hostOnly(r.Host), p, method)
	if rt == nil {
		ex.problem(http.StatusNotFound, keygate.CodeRouteNotFound, "no route matches this host, path and method")
		return
	}
	ex.route = rt

	// 3. route info
	if rt.deprecation != nil {
		h["Deprecation"] = rt.deprecation
		if rt.sunset != nil {
			h["Sunset"] = rt.sunset
		}
		if rt.link != nil {
			h["Link"] = rt.link
		}
	}
	if preflight {
		rt.cors.preflight(ex.w.ResponseWriter, r)
		ex.w.status = http.StatusNoContent
		return
	}
	if rt.cors != nil {
		rt.cors.decorate(h, r.Header.Get("Origin"))
	}

	// 4. body limit
	if rt.maxBody >= 0 && r.ContentLength > rt.maxBody {
		ex.problem(http.StatusRequestEntityTooLarge, keygate.CodePayloadTooLarge, "the request body is larger than this route accepts")
		return
	}

	// 5. key, and the query without it
	key, fromBearer, query, bad := readKey(r, rt.queryKey && !rt.public)
	if bad != "" {
		ex.problem(http.StatusBadRequest, keygate.CodeBadRequest, bad)
		return
	}
	ex.query = query
	ex.stripAuth = fromBearer
	up := rt.live
	if rt.public {
		// 7. per-IP limits of a public route
		if len(rt.ipLimits) > 0 && !g.limitIP(ex, r.Context()) {
			return
		}
	} else {
		// 6. authorize
		if key == "" {
			h["Www-Authenticate"] = wwwAuthenticate
			ex.problem(http.StatusUnauthorized, keygate.CodeUnauthorized, "an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>")
			return
		}
		e, ok := g.authorize(ex, r, rt, key)
		if !ok {
			return
		}
		ex.entry = e
		if e.Env == keygate.EnvTest {
			up = rt.test
		}
		// 7. limits
		if !g.limit(ex, r.Context(), e) {
			return
		}
	}

	// 8. cache
	if rt.cache != nil && r.Method == http.MethodGet && r.Header.Get("Range") == "" {
		plan := ""
		if ex.entry != nil {
			plan = ex.entry.Plan
		}
		ex.cacheKey = rt.name + "\x00" + p + "\x00" + ex.query + "\x00" + plan
		if c := rt.cache.get(ex.cacheKey, g.now()); c != nil {
			rt.metrics.cacheHit.Inc()
			ex.cacheHit = true
			ex.w.status = http.StatusOK
			c.write(&ex.w, g.now())
			return
		}
		rt.metrics.cacheMiss.Inc()
	}

	// 9. proxy
	ex.fwdPath = p
	if rt.stripPrefix {
		ex.fwdPath = p[len(rt.prefix):]
		if ex.fwdPath == "" {
			ex.fwdPath = "/"
		}
	}
	ex.target = up.pick()
	if directEligible(r, ex.target) {
		g.forwardDirect(ex, r)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		body := r.Body
		if rt.maxBody >= 0 {
			body = http.MaxBytesReader(w, body, rt.maxBody)
		}
		// Not pooled: the transport may read and close a request body after the handler returned.
		ex.body = &countingBody{ReadCloser: body}
		r.Body = ex.body
		// Let a streamed request body keep flowing after the answer has begun (HTTP/1 servers
		// otherwise stop reading it): bidirectional streams need it, and it costs nothing else.
		http.NewResponseController(w).EnableFullDuplex()
	}
	g.forward(ex, r)
}

var wwwAuthenticate = []string{`Bearer realm="keygate"`}
var wwwAuthenticateInvalid = []string{`Bearer realm="keygate", error="invalid_token"`}

// authorize looks the key up and checks everything but the limits, in SPEC §3's order.
func (g *Gateway) authorize(ex *exchange, r *http.Request, rt *route, key string) (*verify.Entry, bool) {
	h := ex.w.Header()
	if !plausibleKey(key) {
		// The pre-filter's cheapest part: nothing this long or with these bytes is a key.
		h["Www-Authenticate"] = wwwAuthenticateInvalid
		ex.problem(http.StatusUnauthorized, keygate.CodeNotFound, "the API key is not valid")
		return nil, false
	}
	e, code, err := g.auth.Lookup(r.Context(), key)
	switch {
	case err != nil:
		g.log.Error("gateway: key lookup failed", "route", rt.name, "err", err)
		ex.problem(http.StatusServiceUnavailable, keygate.CodeUnavailable, "key verification is unavailable; retry shortly")
		return nil, false
	case code != "" || e == nil:
		if code == "" {
			code = keygate.CodeNotFound
		}
		h["Www-Authenticate"] = wwwAuthenticateInvalid
		ex.problem(http.StatusUnauthorized, code, unauthorizedDetail(code))
		return nil, false
	}
	ex.entry = e // identifies the caller in metrics and usage events from here on
	if !e.AllowIP(ex.client) {
		ex.problem(http.StatusForbidden, keygate.CodeIPNotAllowed, "this key may not be used from this IP address")
		return nil, false
	}
	ref := r.Header.Get("Origin")
	if ref == "" {
		ref = r.Header.Get("Referer")
	}
	if !e.AllowReferrer(ref) {
		ex.problem(http.StatusForbidden, keygate.CodeReferrerNotAllowed, "this key may not be used from this origin")
		return nil, false
	}
	want, ok := rt.scopes[r.Method]
	if !ok {
		want = rt.anyScopes
	}
	if len(want) > 0 && !e.HasScopes(want) {
		ex.problem(http.StatusForbidden, keygate.CodeInsufficientScope, "this key lacks a scope this route requires: "+strings.Join(want, " "))
		return nil, false
	}
	if e.Env == keygate.EnvTest && rt.test == nil {
		ex.problem(http.StatusForbidden, keygate.CodeEnvNotAllowed, "test keys cannot call this route")
		return nil, false
	}
	if len(rt.plans) > 0 && !contains(rt.plans, e.Plan) {
		ex.problem(http.StatusForbidden, keygate.CodePlanNotAllowed, "this key's plan does not include this route")
		return nil, false
	}
	return e, true
}

func unauthorizedDetail(code string) string {
	switch code {
	case keygate.CodeRevoked:
		return "the API key was revoked"
	case keygate.CodeExpired:
		return "the API key has expired"
	case keygate.CodeDisabled:
		return "the API key is disabled"
	}
	return "the API key is not valid"
}

// limit is the limiter's seam: it consumes one request from the key's windows and quotas, sets
// the RateLimit fields, and answers 429 or 503 when it must.
func (g *Gateway) limit(ex *exchange, ctx context.Context, e *verify.Entry) bool {
	code, err := g.auth.Limit(ctx, e, 1, &ex.decision)
	return g.applyDecision(ex, code, err)
}

// limitIP applies a public route's per-client-IP windows.
func (g *Gateway) limitIP(ex *exchange, ctx context.Context) bool {
	rt := ex.route
	owner := "ip:" + rt.name + ":" + ex.client.String()
	ex.limits = append(ex.limits[:0], rt.ipLimits...)
	for i := range ex.limits {
		ex.limits[i].Key = owner + ":" + ex.limits[i].Name
	}
	err := g.limiter.Check(ctx, ex.limits, 1, &ex.decision)
	code := ""
	if err == nil && !ex.decision.Allowed {
		code = keygate.CodeRateLimited
	}
	return g.applyDecision(ex, code, err)
}

func (g *Gateway) applyDecision(ex *exchange, code string, err error) bool {
	if err != nil {
		// An unavailable store (closed mode) or a client that went away is an answer, not a fault.
		if !errors.Is(err, ratelimit.ErrUnavailable) && keygate.ErrorCode(err) != keygate.CodeUnavailable {
			g.log.Error("gateway: limiter failed", "route", ex.route.name, "err", err)
		}
		ex.problem(http.StatusServiceUnavailable, keygate.CodeUnavailable, "rate limiting is unavailable; retry shortly")
		return false
	}
	h := ex.w.Header()
	ex.buf = setRateLimitFields(h, &ex.decision, ex.buf[:0])
	switch code {
	case "":
		return true
	case keygate.CodeRateLimited, keygate.CodeQuotaExceeded, keygate.CodeThrottled:
		h["Retry-After"] = []string{retryAfter(ex.decision.RetryAfter)}
		ex.problem(http.StatusTooManyRequests, code, tooManyDetail(code))
	default:
		g.log.Error("gateway: limiter answered an unknown code", "code", code)
		ex.problem(http.StatusServiceUnavailable, keygate.CodeUnavailable, "rate limiting is unavailable; retry shortly")
	}
	return false
}

func tooManyDetail(code string) string {
	switch code {
	case keygate.CodeQuotaExceeded:
		return "the quota of this period is used up"
	case keygate.CodeThrottled:
		return "this key is throttled after unusual traffic"
	}
	return "too many requests; see Retry-After"
}

// readKey finds the presented key. It returns the query to forward (without api_key, which is
// removed on every route so that a key never reaches an upstream) and a 400 detail for
// ambiguous input.
func readKey(r *http.Request, allowQuery bool) (key string, fromBearer bool, query string, bad string) {
	query = r.URL.RawQuery
	if auth := r.Header["Authorization"]; len(auth) > 0 {
		if len(auth) > 1 {
			return "", false, "", "more than one Authorization field"
		}
		if k, ok := bearer(auth[0]); ok {
			key, fromBearer = k, true
			if key == "" {
				return "", false, "", "an empty Bearer token"
			}
		}
	}
	if x := r.Header["X-Api-Key"]; len(x) > 0 {
		if len(x) > 1 {
			return "", false, "", "more than one X-API-Key field"
		}
		if key != "" && key != x[0] {
			return "", false, "", "different keys in Authorization and X-API-Key"
		}
		key = x[0]
	}
	if strings.Contains(query, "api_key") || strings.IndexByte(query, '%') >= 0 {
		var qk string
		var n int
		query, qk, n = removeQueryKey(query)
		switch {
		case n > 1:
			return "", false, "", "more than one api_key parameter"
		case n == 1 && allowQuery:
			if key != "" && key != qk {
				return "", false, "", "different keys in the header and the api_key parameter"
			}
			key = qk
		}
	}
	return key, fromBearer, query, ""
}

// bearer returns the token of a Bearer credential.
func bearer(v string) (string, bool) {
	const scheme = "bearer "
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	return strings.Trim(v[len(scheme):], " \t"), true
}

// removeQueryKey drops every api_key parameter from a raw query, leaving the rest byte for byte.
func removeQueryKey(q string) (rest, key string, n int) {
	var b strings.Builder
	for q != "" {
		var part string
		part, q, _ = strings.Cut(q, "&")
		name, val, _ := strings.Cut(part, "=")
		if name == "api_key" || (strings.Contains(name, "%") && unescapeOr(name) == "api_key") {
			n++
			key = unescapeOr(val)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String(), key, n
}

// plausibleKey refuses what cannot be a key of any format before it reaches verification: too
// long, or with bytes outside visible ASCII (NUL, spaces, invalid UTF-8).
func plausibleKey(k string) bool {
	if len(k) > 256 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] >= 0x7f {
			return false
		}
	}
	return true
}

// requestID keeps a client's X-Request-Id when it is a sane token, else makes one.
func requestID(v string) string {
	if len(v) > 0 && len(v) <= 128 {
		ok := true
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
				ok = false
				break
			}
		}
		if ok {
			return v
		}
	}
	// Unique, not secret: a random per-process prefix and a counter (no syscall per request).
	var b [32]byte
	copy(b[:16], idPrefix[:])
	n := idCounter.Add(1)
	const hexd = "0123456789abcdef"
	for i := 31; i >= 16; i-- {
		b[i] = hexd[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

var (
	idCounter atomic.Uint64
	idPrefix  = func() (p [16]byte) {
		var r [8]byte
		rand.Read(r[:])
		hex.Encode(p[:], r[:])
		return p
	}()
)

// clientAddr returns the connection's address and the client's: the connection's, unless it is
// a trusted proxy, in which case X-Forwarded-For is walked from the right past trusted proxies.
func clientAddr(r *http.Request, trusted []netip.Prefix) (remote, client netip.Addr, isTrusted bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		remote, _ = netip.ParseAddr(r.RemoteAddr)
	} else {
		remote = ap.Addr()
	}
	remote = remote.Unmap()
	client = remote
	if len(trusted) == 0 || !inPrefixes(remote, trusted) {
		return remote, client, false
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		list := xff[i]
		for list != "" {
			var item string
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				item, list = list[j+1:], list[:j]
			} else {
				item, list = list, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(item))
			if err != nil {
				return remote, client, true
			}
			client = a.Unmap()
			if !inPrefixes(client, trusted) {
				return remote, client, true
			}
		}
	}
	return remote, client, true
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

// exchange is the state of one request; exchanges are pooled.
type exchange struct {
	g             *Gateway
	route         *route
	entry         *verify.Entry
	target        *target
	fwdPath       string
	query         string
	stripAuth     bool
	reqID         string
	remote        netip.Addr
	client        netip.Addr
	trustedRemote bool
	start         time.Time
	code          string
	status        int // the upstream's status (101 for upgrades, which bypass w)
	cacheKey      string
	cacheHit      bool
	decision      ratelimit.Decision
	limits        []ratelimit.Limit
	buf           []byte

	w       responseWriter
	body    *countingBody
	bytesIn int64 // request body bytes read by the direct forwarder

	timer       *time.Timer
	timerActive bool
	fired       atomic.Bool
	cancel      context.CancelCauseFunc
	info        RequestInfo
}

func (g *Gateway) getExchange() *exchange {
	if ex, ok := g.exchanges.Get().(*exchange); ok {
		return ex
	}
	return &exchange{g: g, buf: make([]byte, 0, 256)}
}

func (ex *exchange) problem(status int, code, detail string) {
	ex.code = code
	violated := ""
	if status == http.StatusTooManyRequests {
		violated = violatedPolicy(ex, code)
	}
	writeProblem(&ex.w, status, code, detail, violated)
}

// violatedPolicy names the refusing limit of a 429 as it appears in RateLimit-Policy.
func violatedPolicy(ex *exchange, code string) string {
	d := &ex.decision
	if code != keygate.CodeThrottled && d.Denied >= 0 && d.Denied < len(d.States) {
		return d.States[d.Denied].Name
	}
	return ""
}

// finish records the request and returns the exchange to the pool.
func (g *Gateway) finish(ex *exchange, r *http.Request) {
	ex.stopTimer()
	if ex.cancel != nil {
		ex.cancel(nil)
	}
	status := ex.w.status
	if ex.status == http.StatusSwitchingProtocols {
		status = ex.status
	} else if status == 0 {
		status = http.StatusOK
		if ex.status != 0 {
			status = ex.status
		}
	}
	lat := time.Since(ex.start)
	if ex.route != nil {
		ex.route.metrics.observe(status, ex.code, lat)
	} else {
		g.metrics.observeNoRoute(status, ex.code, lat)
	}
	if g.onRequest != nil {
		in := &ex.info
		*in = RequestInfo{Time: ex.start, Method: r.Method, Status: status, Code: ex.code, Latency: lat,
			Bytes: ex.w.bytes, ClientIP: ex.client, RequestID: ex.reqID, CacheHit: ex.cacheHit}
		in.BytesIn = ex.bytesIn
		if ex.body != nil {
			in.BytesIn = ex.body.n
		}
		if ex.route != nil {
			in.Route = ex.route.name
			in.Deprecated = ex.route.deprecation != nil
		}
		if ex.entry != nil {
			in.KeyID, in.ConsumerID = ex.entry.Key.ID, ex.entry.ConsumerID
		}
		g.onRequest(in)
	}
	if ex.fired.Load() {
		// The timer's function may still run: this exchange is not reused.
		return
	}
	*ex = exchange{g: g, buf: ex.buf[:0], decision: ex.decision, limits: ex.limits[:0], timer: ex.timer}
	g.exchanges.Put(ex)
}

// exchangeContext carries the exchange to the proxy's hooks.
type exchangeContext struct {
	context.Context
	ex *exchange
}

type exchangeKey struct{}

func (c *exchangeContext) Value(k any) any {
	if k == (exchangeKey{}) {
		return c.ex
	}
	return c.Context.Value(k)
}

func exchangeOf(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

var errUpstreamTimeout = errors.New("upstream timeout")

func (ex *exchange) startTimer(d time.Duration) {
	if ex.timer == nil {
		ex.timer = time.AfterFunc(d, ex.onTimeout)
	} else {
		ex.timer.Reset(d)
	}
	ex.timerActive = true
}

func (ex *exchange) onTimeout() {
	ex.fired.Store(true)
	if c := ex.cancel; c != nil {
		c(errUpstreamTimeout)
	}
}

// stopTimer stops the upstream timeout; it runs on the request's goroutine only.
func (ex *exchange) stopTimer() {
	if ex.timerActive {
		ex.timerActive = false
		if !ex.timer.Stop() {
			ex.fired.Store(true)
		}
	}
}
