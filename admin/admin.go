// Package admin is keygate's admin API (SPEC §3) on the admin listener: the /v1 routes for
// consumers, plans, keys, root keys and the audit log, the health endpoints, the OpenAPI document
// that describes them and its /docs page, and a typed Client of the API for the command line.
//
// The whole surface is listed once, in routes.go: each Route names its method and pattern, the
// root-key permission it needs, its audit action, and the Go types of its request body and
// answer. The router and the OpenAPI generator both read that table, so the document cannot drift
// from what is served.
//
// Conventions beyond SPEC §3, decided here:
//   - A request body must be sent with Content-Type application/json (or a +json type); any other
//     type is 400 BAD_REQUEST (not 415: every error code the API answers is in SPEC §3's list).
//   - DELETE answers 200 with the object as it was deleted (after a purge, without name and email).
//   - Reusing an Idempotency-Key with a different request (method, path or body) is 409 CONFLICT,
//     and so is a repeat that arrives while the first request is still being processed.
//   - Every /v1 answer has Cache-Control: no-store.
package admin

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/verify"
)

// DefaultMaxBody is the default limit of a request body (SPEC §3: 1 MiB).
const DefaultMaxBody = 1 << 20

// Verifier verifies keys for POST /v1/keys/verify. verify.Verifier implements it.
type Verifier interface {
	// Verify fills res; a non-nil error means verification could not be done (internal or
	// unavailable, told apart by keygate.ErrorCode).
	Verify(ctx context.Context, req *verify.Request, res *verify.Result) error
}

// Options are the dependencies of the admin API. Control is required; the rest have defaults.
type Options struct {
	// Control is the control plane every route calls.
	Control *control.Service
	// Verifier answers POST /v1/keys/verify. Default nil: that route answers 503 UNAVAILABLE.
	Verifier Verifier
	// Logger receives request logs and internal errors. Default: discarded.
	Logger *slog.Logger
	// Metrics serves /metrics. Default nil: /metrics answers 404.
	Metrics http.Handler
	// Ready is called by /readyz; an error answers 503. Default nil: always ready.
	Ready func(ctx context.Context) error
	// MaxBody limits request bodies (413 above). Default DefaultMaxBody.
	MaxBody int64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Routes are further API routes (analytics, webhooks, …) served with the same
	// authentication, error handling and idempotency, and described in the OpenAPI document.
	Routes []Route
	// Extra mounts further handlers that are not part of the /v1 API (the dashboard). They are
	// not authenticated by this package.
	Extra func(mux *http.ServeMux)
}

// controlPlane is the part of control.Service the admin API calls.
type controlPlane interface {
	Store() keygate.Store

	CreateConsumer(ctx context.Context, a control.Actor, in control.ConsumerCreate) (*keygate.Consumer, error)
	Consumer(ctx context.Context, id string) (*keygate.Consumer, error)
	Consumers(ctx context.Context, p keygate.ListParams) ([]*keygate.Consumer, string, error)
	UpdateConsumer(ctx context.Context, a control.Actor, id string, p control.ConsumerPatch) (*keygate.Consumer, error)
	DeleteConsumer(ctx context.Context, a control.Actor, id string, purge bool) error

	CreatePlan(ctx context.Context, a control.Actor, in control.PlanCreate) (*keygate.Plan, error)
	Plan(ctx context.Context, name string) (*keygate.Plan, error)
	Plans(ctx context.Context, p keygate.ListParams) ([]*keygate.Plan, string, error)
	UpdatePlan(ctx context.Context, a control.Actor, name string, p control.PlanPatch) (*keygate.Plan, error)
	DeletePlan(ctx context.Context, a control.Actor, name string) error

	CreateKey(ctx context.Context, a control.Actor, in control.KeyCreate) (*keygate.Key, string, error)
	Key(ctx context.Context, id string) (*keygate.Key, error)
	Keys(ctx context.Context, f keygate.KeyFilter) ([]*keygate.Key, string, error)
	UpdateKey(ctx context.Context, a control.Actor, id string, p control.KeyPatch) (*keygate.Key, error)
	RevokeKey(ctx context.Context, a control.Actor, id, reason string) (*keygate.Key, error)
	RotateKey(ctx context.Context, a control.Actor, id string, grace *time.Duration) (*keygate.Key, string, error)
	RevokeLeaked(ctx context.Context, a control.Actor, plaintexts []string) (*control.LeakedResult, error)

	CreateRootKey(ctx context.Context, a control.Actor, creator *keygate.RootKey, in control.RootKeyCreate) (*keygate.RootKey, string, error)
	RootKeys(ctx context.Context, p keygate.ListParams) ([]*keygate.RootKey, string, error)
	RevokeRootKey(ctx context.Context, a control.Actor, id string) (*keygate.RootKey, error)
	AuthenticateRoot(ctx context.Context, token string) (*keygate.RootKey, error)

	AuditFailure(ctx context.Context, a control.Actor, action, targetType, targetID string, details map[string]any) error
	AuditEntries(ctx context.Context, f keygate.AuditFilter) ([]*keygate.AuditEntry, string, error)
	VerifyAudit(ctx context.Context) (*control.AuditVerification, error)
	AuditHead(ctx context.Context) (*control.AuditHead, error)
}

var _ controlPlane = (*control.Service)(nil)

// server holds the dependencies shared by the handlers.
type server struct {
	ctl      controlPlane
	verifier Verifier
	log      *slog.Logger
	metrics  http.Handler
	ready    func(ctx context.Context) error
	maxBody  int64
	now      func() time.Time
	idem     *idempotency
	routes   []Route
	mux      *http.ServeMux
}

// New returns the admin API handler.
func New(o Options) http.Handler {
	var ctl controlPlane
	if o.Control != nil {
		ctl = o.Control
	}
	return newServer(ctl, o)
}

func newServer(ctl controlPlane, o Options) *server {
	s := &server{ctl: ctl, verifier: o.Verifier, log: o.Logger, metrics: o.Metrics, ready: o.Ready,
		maxBody: o.MaxBody, now: o.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.idem = newIdempotency(s.now)
	s.routes = append(s.apiRoutes(), o.Routes...)
	s.routes = append(s.routes, s.publicRoutes()...)
	s.mux = http.NewServeMux()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt))
	}
	if o.Extra != nil {
		o.Extra(s.mux)
	}
	return s
}

// ServeHTTP answers unknown paths and methods with problem+json instead of the mux's plain text.
//
// Requests flow: ServeHTTP (recover, log) → route middleware of wrap (body limit, auth,
// permission, idempotency) → handler; answers flow back the same way.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "admin: panic", "method", r.Method, "path", redactPath(r.URL.Path), "panic", v)
			if !sw.wrote {
				writeProblem(sw, r, keygate.CodeInternal, "internal error")
			}
		}
		// Probes and scrapes come every few seconds, and verifications are the hot path of services
		// outside the proxy (thousands a second, counted in /metrics and usage): both are logged at
		// debug level. Changes are audited anyway; the log keeps them at info.
		level := slog.LevelInfo
		if !strings.HasPrefix(r.URL.Path, "/v1/") || r.URL.Path == "/v1/keys/verify" {
			level = slog.LevelDebug
		}
		s.log.Log(r.Context(), level, "admin request", "method", r.Method, "path", redactPath(r.URL.Path),
			"status", sw.status, "duration", time.Since(start), "remote", remoteIP(r))
	}()
	r = r.WithContext(context.WithValue(r.Context(), loggerKey{}, s.log))
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.unmatched(sw, r)
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// unmatched turns the mux's 404 and 405 answers into problems, keeping its Allow header.
func (s *server) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	rec := &discardWriter{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusMethodNotAllowed:
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		writeProblemStatus(w, http.StatusMethodNotAllowed, keygate.CodeBadRequest,
			"method "+truncate(r.Method, 32)+" is not allowed on "+truncate(redactPath(r.URL.Path), 200))
	case http.StatusNotFound, 0:
		writeProblem(w, r, keygate.CodeNotFound, "no such endpoint: "+truncate(redactPath(r.URL.Path), 200))
	default:
		// Redirects (path cleaning) and anything else the mux decides: pass it on as it is.
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
