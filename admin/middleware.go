package admin

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

// wrap puts a route's handler behind its middleware. A request flows down: body limit →
// authentication and permission (API routes) → idempotency (POST) → handler; the answer flows
// back up the same way.
func (s *server) wrap(rt Route) http.Handler {
	h := rt.Handler
	if rt.Permission == "" {
		return h
	}
	if rt.Method == http.MethodPost {
		h = s.idempotent(h)
	}
	h = s.authorize(rt, h)
	return s.limitBody(h)
}

func (s *server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.ContentLength > s.maxBody {
			writeProblem(w, r, keygate.CodePayloadTooLarge, "request body is larger than "+strconv.FormatInt(s.maxBody, 10)+" bytes")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
		next.ServeHTTP(w, r)
	})
}

type callerKey struct{}

type caller struct {
	root  *keygate.RootKey
	actor control.Actor
}

// Caller returns the authenticated root key of a request to an API route and the actor to
// write to the audit log for it.
func Caller(ctx context.Context) (*keygate.RootKey, control.Actor, bool) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		return nil, control.Actor{}, false
	}
	return c.root, c.actor, true
}

func actorOf(r *http.Request) control.Actor {
	_, a, _ := Caller(r.Context())
	return a
}

// authorize authenticates the root key of the Authorization header (never a cookie) and checks
// the route's permission. Refusals for a missing permission are audited.
func (s *server) authorize(rt Route, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, detail := bearerToken(r)
		if detail != "" {
			writeProblem(w, r, keygate.CodeUnauthorized, detail)
			return
		}
		if s.ctl == nil {
			writeProblem(w, r, keygate.CodeUnavailable, "the control plane is not configured")
			return
		}
		rk, err := s.ctl.AuthenticateRoot(r.Context(), token)
		if err != nil {
			if keygate.ErrorCode(err) == keygate.CodeUnauthorized || keygate.ErrorCode(err) == keygate.CodeNotFound {
				writeProblem(w, r, keygate.CodeUnauthorized, "the root key is unknown or revoked")
				return
			}
			writeError(w, r, err)
			return
		}
		actor := control.Actor{ID: "root_key:" + rk.ID, IP: remoteIP(r)}
		if !rk.Has(rt.Permission) {
			target := r.PathValue("id")
			if target == "" {
				target = r.PathValue("name")
			}
			details := map[string]any{"reason": "missing permission", "permission": rt.Permission,
				"method": r.Method, "route": rt.Pattern}
			if err := s.ctl.AuditFailure(r.Context(), actor, rt.Action, rt.TargetType, redact(target), details); err != nil {
				loggerFrom(r).ErrorContext(r.Context(), "admin: audit of a refused request failed",
					"action", rt.Action, "err", err)
			}
			writeProblem(w, r, keygate.CodeForbidden, "this root key lacks the permission "+rt.Permission)
			return
		}
		ctx := context.WithValue(r.Context(), callerKey{}, &caller{root: rk, actor: actor})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// bearerToken returns the token of the one Authorization: Bearer header, or why there is none.
func bearerToken(r *http.Request) (token, problem string) {
	vals := r.Header.Values("Authorization")
	switch {
	case len(vals) == 0:
		return "", "an Authorization: Bearer <root key> header is required"
	case len(vals) > 1:
		return "", "send exactly one Authorization header"
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "the Authorization header must use the Bearer scheme"
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || len(tok) > 512 {
		return "", "the root key is unknown or revoked"
	}
	return tok, ""
}

// remoteIP is the address of the peer. The admin listener is private, so X-Forwarded-For is not
// believed.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// redactPath is a path fit for logs: segments that could be plaintext keys are hidden.
func redactPath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = redact(s)
	}
	return strings.Join(segs, "/")
}

// redact hides a path value that could be a plaintext key pasted into a URL, so that it reaches
// neither the audit log nor an error.
func redact(s string) string {
	if len(s) > 64 || strings.Count(s, "_") >= 2 && len(s) > 40 {
		return "[redacted]"
	}
	return s
}
