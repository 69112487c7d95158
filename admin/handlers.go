package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

// list is the shape of every list answer.
type list[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

func newList[T any](items []*T, next string) list[T] {
	l := list[T]{Data: make([]T, 0, len(items))}
	for _, it := range items {
		l.Data = append(l.Data, *it)
	}
	if next != "" {
		l.NextCursor = &next
	}
	return l
}

// withSecret is an object answer with the plaintext "key" added: the only answers that carry one.
func withSecret(v any, key string) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	k, _ := json.Marshal(key)
	out := make([]byte, 0, len(b)+len(k)+8)
	out = append(out, b[:len(b)-1]...)
	out = append(out, `,"key":`...)
	out = append(out, k...)
	out = append(out, '}')
	return out, nil
}

// The three shapes most handlers share, written once: decode a JSON body and answer the result,
// answer a read, answer a page of a list.

// handleJSON decodes the body into In, calls fn and answers its result with status.
func handleJSON[In, Out any](status int, fn func(r *http.Request, in In) (Out, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in In
		if err := decode(r, &in); err != nil {
			writeError(w, r, err)
			return
		}
		out, err := fn(r, in)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, status, out)
	})
}

// handleRead answers fn's result with 200.
func handleRead[Out any](fn func(r *http.Request) (Out, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, err := fn(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, http.StatusOK, out)
	})
}

// handleList reads limit and cursor and answers fn's page as {"data", "next_cursor"}.
func handleList[T any](fn func(r *http.Request, p keygate.ListParams) ([]*T, string, error)) http.Handler {
	return handleFilteredList(func(q *query) (keygate.ListParams, error) { return q.list(), nil }, fn)
}

// handleFilteredList reads a list's filter from the query string (a bad parameter is a 400
// before anything is read) and answers fetch's page as {"data", "next_cursor"}.
func handleFilteredList[F, T any](filter func(q *query) (F, error), fetch func(r *http.Request, f F) ([]*T, string, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := newQuery(r.URL)
		f, err := filter(q)
		if err == nil {
			err = q.err
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		items, next, err := fetch(r, f)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, http.StatusOK, newList(items, next))
	})
}

// --- consumers ---

func handleConsumerCreate(ctl controlPlane) http.Handler {
	return handleJSON(http.StatusCreated, func(r *http.Request, in control.ConsumerCreate) (*keygate.Consumer, error) {
		return ctl.CreateConsumer(r.Context(), actorOf(r), in)
	})
}

func handleConsumerList(ctl controlPlane) http.Handler {
	return handleList(func(r *http.Request, p keygate.ListParams) ([]*keygate.Consumer, string, error) {
		return ctl.Consumers(r.Context(), p)
	})
}

func handleConsumerGet(ctl controlPlane) http.Handler {
	return handleRead(func(r *http.Request) (*keygate.Consumer, error) {
		return ctl.Consumer(r.Context(), r.PathValue("id"))
	})
}

func handleConsumerUpdate(ctl controlPlane) http.Handler {
	return handleJSON(http.StatusOK, func(r *http.Request, p control.ConsumerPatch) (*keygate.Consumer, error) {
		return ctl.UpdateConsumer(r.Context(), actorOf(r), r.PathValue("id"), p)
	})
}

func handleConsumerDelete(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := newQuery(r.URL)
		purge := q.bool("purge")
		if q.err != nil {
			writeError(w, r, q.err)
			return
		}
		id := r.PathValue("id")
		c, err := ctl.Consumer(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := ctl.DeleteConsumer(r.Context(), actorOf(r), id, purge); err != nil {
			writeError(w, r, err)
			return
		}
		if purge {
			c.Name, c.Email = "", ""
		}
		encode(w, r, http.StatusOK, c)
	})
}

// --- plans ---

// planOut is a plan as answered: rate_limits is a list even when empty (scopes_allowed stays
// null there, which means "no ceiling").
func planOut(p *keygate.Plan) *keygate.Plan {
	if p != nil && p.RateLimits == nil {
		c := *p
		c.RateLimits = []keygate.Window{}
		return &c
	}
	return p
}

func handlePlanCreate(ctl controlPlane) http.Handler {
	return handleJSON(http.StatusCreated, func(r *http.Request, in control.PlanCreate) (*keygate.Plan, error) {
		p, err := ctl.CreatePlan(r.Context(), actorOf(r), in)
		return planOut(p), err
	})
}

func handlePlanList(ctl controlPlane) http.Handler {
	return handleList(func(r *http.Request, lp keygate.ListParams) ([]*keygate.Plan, string, error) {
		items, next, err := ctl.Plans(r.Context(), lp)
		for i := range items {
			items[i] = planOut(items[i])
		}
		return items, next, err
	})
}

func handlePlanGet(ctl controlPlane) http.Handler {
	return handleRead(func(r *http.Request) (*keygate.Plan, error) {
		p, err := ctl.Plan(r.Context(), r.PathValue("name"))
		return planOut(p), err
	})
}

func handlePlanUpdate(ctl controlPlane) http.Handler {
	return handleJSON(http.StatusOK, func(r *http.Request, in control.PlanPatch) (*keygate.Plan, error) {
		p, err := ctl.UpdatePlan(r.Context(), actorOf(r), r.PathValue("name"), in)
		return planOut(p), err
	})
}

func handlePlanDelete(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		p, err := ctl.Plan(r.Context(), name)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if err := ctl.DeletePlan(r.Context(), actorOf(r), name); err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, http.StatusOK, planOut(p))
	})
}

// --- keys ---

func handleKeyCreate(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in control.KeyCreate
		if err := decode(r, &in); err != nil {
			writeError(w, r, err)
			return
		}
		if in.ConsumerID == "" {
			writeError(w, r, badRequest("consumer_id is required: every key has an owner"))
			return
		}
		k, plaintext, err := ctl.CreateKey(r.Context(), actorOf(r), in)
		encodeNewKey(w, r, k, plaintext, err)
	})
}

// encodeNewKey answers 201 with a key just made and its plaintext (shown this once), or err.
func encodeNewKey(w http.ResponseWriter, r *http.Request, k *keygate.Key, plaintext string, err error) {
	var body json.RawMessage
	if err == nil {
		body, err = withSecret(k, plaintext)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	encode(w, r, http.StatusCreated, body)
}

func handleKeyList(ctl controlPlane, now func() time.Time) http.Handler {
	return handleFilteredList(func(q *query) (keygate.KeyFilter, error) {
		return keygate.KeyFilter{
			ConsumerID: q.str("consumer_id", maxFilter),
			Status:     q.oneOf("status", keygate.StateActive, keygate.StateDisabled, keygate.StatusExpired, keygate.StateRevoked),
			ListParams: q.list(),
			Now:        now(),
		}, nil
	}, func(r *http.Request, f keygate.KeyFilter) ([]*keygate.Key, string, error) {
		return ctl.Keys(r.Context(), f)
	})
}

func handleKeyGet(ctl controlPlane) http.Handler {
	return handleRead(func(r *http.Request) (*keygate.Key, error) {
		return ctl.Key(r.Context(), r.PathValue("id"))
	})
}

func handleKeyUpdate(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p control.KeyPatch
		if err := decode(r, &p); err != nil {
			writeError(w, r, err)
			return
		}
		if p.Status.Set && (p.Status.Null || p.Status.Value != keygate.StateActive && p.Status.Value != keygate.StateDisabled) {
			writeError(w, r, badRequest("status may only be changed to \"active\" or \"disabled\" (revoke with POST /v1/keys/{id}/revoke)"))
			return
		}
		k, err := ctl.UpdateKey(r.Context(), actorOf(r), r.PathValue("id"), p)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, http.StatusOK, k)
	})
}

// revokeRequest is the optional body of POST /v1/keys/{id}/revoke.
type revokeRequest struct {
	Reason string `json:"reason"`
}

func handleKeyRevoke(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in revokeRequest
		if err := decodeOptional(r, &in); err != nil {
			writeError(w, r, err)
			return
		}
		if err := keygate.ValidateText("reason", in.Reason, keygate.MaxReasonLen); err != nil {
			writeError(w, r, err)
			return
		}
		k, err := ctl.RevokeKey(r.Context(), actorOf(r), r.PathValue("id"), in.Reason)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, http.StatusOK, k)
	})
}

// rotateRequest is the optional body of POST /v1/keys/{id}/rotate.
type rotateRequest struct {
	// GracePeriod is how long the old key keeps working (default 24h; "0s": it expires now).
	GracePeriod *keygate.Duration `json:"grace_period"`
}

// maxGracePeriod bounds rotation grace periods.
const maxGracePeriod = 366 * keygate.Day

func handleKeyRotate(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in rotateRequest
		if err := decodeOptional(r, &in); err != nil {
			writeError(w, r, err)
			return
		}
		var grace *time.Duration
		if in.GracePeriod != nil {
			d := in.GracePeriod.D()
			if d > maxGracePeriod {
				writeError(w, r, badRequest("grace_period must be at most 366d"))
				return
			}
			grace = &d
		}
		k, plaintext, err := ctl.RotateKey(r.Context(), actorOf(r), r.PathValue("id"), grace)
		encodeNewKey(w, r, k, plaintext, err)
	})
}

// handleKeyUnthrottle answers until anomaly detection exists: no key is ever throttled yet.
func handleKeyUnthrottle(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := ctl.Key(r.Context(), r.PathValue("id")); err != nil {
			writeError(w, r, err)
			return
		}
		writeProblem(w, r, keygate.CodeConflict, "key is not throttled")
	})
}

// leakedRequest is the body of POST /v1/keys/leaked.
type leakedRequest struct {
	Keys []string `json:"keys"`
}

const maxLeaked = 1000

func handleKeysLeaked(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in leakedRequest
		if err := decode(r, &in); err != nil {
			writeError(w, r, err)
			return
		}
		if len(in.Keys) == 0 || len(in.Keys) > maxLeaked {
			writeError(w, r, badRequest("keys must list 1 to %d strings", maxLeaked))
			return
		}
		for i, k := range in.Keys {
			if k == "" || len(k) > maxKeyLen {
				writeError(w, r, badRequest("keys[%d] must be 1 to %d bytes", i, maxKeyLen))
				return
			}
		}
		res, err := ctl.RevokeLeaked(r.Context(), actorOf(r), in.Keys)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if res.Revoked == nil {
			res.Revoked = []string{}
		}
		if res.AlreadyRevoked == nil {
			res.AlreadyRevoked = []string{}
		}
		encode(w, r, http.StatusOK, res)
	})
}

// --- root keys ---

func handleRootKeyCreate(ctl controlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in control.RootKeyCreate
		if err := decode(r, &in); err != nil {
			writeError(w, r, err)
			return
		}
		if err := validateRootKeyCreate(&in); err != nil {
			writeError(w, r, err)
			return
		}
		creator, actor, _ := Caller(r.Context())
		rk, plaintext, err := ctl.CreateRootKey(r.Context(), actor, creator, in)
		if err != nil {
			writeError(w, r, err)
			return
		}
		body, err := withSecret(rk, plaintext)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, http.StatusCreated, body)
	})
}

func validateRootKeyCreate(in *control.RootKeyCreate) error {
	if err := keygate.ValidateText("name", in.Name, keygate.MaxNameLen); err != nil {
		return err
	}
	if len(in.Permissions) == 0 {
		return badRequest("permissions must list at least one permission")
	}
	for _, p := range in.Permissions {
		ok := false
		for _, q := range keygate.Permissions {
			ok = ok || p == q
		}
		if !ok {
			return badRequest("permissions: %q is not a permission", truncate(p, 64))
		}
	}
	return nil
}

func handleRootKeyList(ctl controlPlane) http.Handler {
	return handleList(func(r *http.Request, p keygate.ListParams) ([]*keygate.RootKey, string, error) {
		return ctl.RootKeys(r.Context(), p)
	})
}

func handleRootKeyRevoke(ctl controlPlane) http.Handler {
	return handleRead(func(r *http.Request) (*keygate.RootKey, error) {
		return ctl.RevokeRootKey(r.Context(), actorOf(r), r.PathValue("id"))
	})
}

// --- audit ---

func handleAuditList(ctl controlPlane) http.Handler {
	return handleFilteredList(func(q *query) (keygate.AuditFilter, error) {
		f := keygate.AuditFilter{
			Actor:      q.str("actor", maxFilter),
			Action:     q.str("action", maxFilter),
			Target:     q.str("target", maxFilter),
			From:       q.time("from"),
			To:         q.time("to"),
			ListParams: q.list(),
		}
		if q.err == nil && f.From != nil && f.To != nil && f.To.Before(*f.From) {
			return f, badRequest("to is before from")
		}
		return f, nil
	}, func(r *http.Request, f keygate.AuditFilter) ([]*keygate.AuditEntry, string, error) {
		return ctl.AuditEntries(r.Context(), f)
	})
}

func handleAuditVerify(ctl controlPlane) http.Handler {
	return handleRead(func(r *http.Request) (*control.AuditVerification, error) {
		return ctl.VerifyAudit(r.Context())
	})
}

func handleAuditHead(ctl controlPlane) http.Handler {
	return handleRead(func(r *http.Request) (*control.AuditHead, error) {
		return ctl.AuditHead(r.Context())
	})
}

// --- system ---

// health answers /healthz and /readyz.
type health struct {
	Status string `json:"status"`
}

func handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		encode(w, r, http.StatusOK, health{Status: "ok"})
	})
}

func handleReadyz(ready func(context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := ready(ctx); err != nil {
				loggerFrom(r).WarnContext(r.Context(), "admin: not ready", "err", err)
				writeProblem(w, r, keygate.CodeUnavailable, "not ready: a dependency is unavailable")
				return
			}
		}
		encode(w, r, http.StatusOK, health{Status: "ready"})
	})
}

func handleMetrics(metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if metrics == nil {
			writeProblem(w, r, keygate.CodeNotFound, "metrics are not enabled")
			return
		}
		metrics.ServeHTTP(w, r)
	})
}
