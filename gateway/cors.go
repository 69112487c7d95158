package gateway

import (
	"net/http"
	"strconv"
	"strings"
)

// corsPolicy is a compiled CORS section.
type corsPolicy struct {
	any      bool
	origins  map[string]bool
	methods  []string
	headers  []string
	expose   []string
	maxAge   []string
	creds    bool
	wildcard []string
}

var (
	defaultCORSMethods = "GET, HEAD, POST"
	defaultCORSHeaders = "Authorization, X-API-Key, Content-Type"
	defaultCORSExpose  = "RateLimit, RateLimit-Policy, Retry-After, X-Request-Id, Deprecation, Sunset, Link"
	varyOrigin         = "Origin"
	trueValue          = []string{"true"}
)

func newCORSPolicy(c *CORS, routeMethods []string) *corsPolicy {
	p := &corsPolicy{origins: map[string]bool{}, creds: c.AllowCredentials, wildcard: []string{"*"}}
	for _, o := range c.AllowOrigins {
		if o == "*" {
			p.any = true
		} else {
			p.origins[strings.ToLower(o)] = true
		}
	}
	methods := c.AllowMethods
	if len(methods) == 0 {
		methods = routeMethods
	}
	if len(methods) == 0 {
		p.methods = []string{defaultCORSMethods}
	} else {
		p.methods = []string{strings.Join(methods, ", ")}
	}
	p.headers = []string{defaultCORSHeaders}
	if len(c.AllowHeaders) > 0 {
		p.headers = []string{strings.Join(c.AllowHeaders, ", ")}
	}
	p.expose = []string{defaultCORSExpose}
	if len(c.ExposeHeaders) > 0 {
		p.expose = []string{strings.Join(c.ExposeHeaders, ", ")}
	}
	if c.MaxAge > 0 {
		p.maxAge = []string{strconv.FormatInt(ceilSeconds(c.MaxAge.D()), 10)}
	}
	return p
}

func (p *corsPolicy) allowed(origin string) bool {
	return origin != "" && (p.any || p.origins[strings.ToLower(origin)])
}

// decorate adds the CORS fields of an actual (non-preflight) answer.
func (p *corsPolicy) decorate(h http.Header, origin string) {
	if origin == "" {
		return
	}
	if !p.any || p.creds {
		h.Add("Vary", varyOrigin)
	}
	if !p.allowed(origin) {
		return
	}
	p.allowOrigin(h, origin)
	h["Access-Control-Expose-Headers"] = p.expose
}

func (p *corsPolicy) allowOrigin(h http.Header, origin string) {
	if p.any && !p.creds {
		h["Access-Control-Allow-Origin"] = p.wildcard
	} else {
		h["Access-Control-Allow-Origin"] = []string{origin}
	}
	if p.creds {
		h["Access-Control-Allow-Credentials"] = trueValue
	}
}

// preflight answers a CORS preflight with 204. A route without CORS, or an origin it does not
// allow, gets no Access-Control-Allow-* field, which the browser takes as a refusal.
func (p *corsPolicy) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Vary"] = []string{"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
	if p != nil {
		if origin := r.Header.Get("Origin"); p.allowed(origin) {
			p.allowOrigin(h, origin)
			h["Access-Control-Allow-Methods"] = p.methods
			h["Access-Control-Allow-Headers"] = p.headers
			if p.maxAge != nil {
				h["Access-Control-Max-Age"] = p.maxAge
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
