package admin

import (
	"net/http"
	"net/netip"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/verify"
)

const (
	maxKeyLen      = 512
	maxVerifyCost  = 1000
	maxReferrerLen = 2048
)

// verifyRequest is the body of POST /v1/keys/verify.
type verifyRequest struct {
	Key      string   `json:"key"`
	Scopes   []string `json:"scopes"`
	IP       string   `json:"ip"`
	Referrer string   `json:"referrer"`
	// Cost is 0..1000 (default 1); 0 answers as 1 would without counting.
	Cost *int64 `json:"cost"`
}

// verifyResponse answers POST /v1/keys/verify (SPEC §3).
type verifyResponse struct {
	Valid      bool              `json:"valid"`
	Code       string            `json:"code"`
	KeyID      *string           `json:"key_id"`
	ConsumerID *string           `json:"consumer_id"`
	Env        *string           `json:"env"`
	Scopes     []string          `json:"scopes"`
	Plan       *string           `json:"plan"`
	ExpiresAt  *time.Time        `json:"expires_at"`
	RateLimits []verifyRateLimit `json:"rate_limits"`
	Quota      *verifyQuota      `json:"quota"`
	Metadata   map[string]any    `json:"metadata"`
}

type verifyRateLimit struct {
	Name      string `json:"name"`
	Limit     int64  `json:"limit"`
	Remaining int64  `json:"remaining"`
	ResetMS   int64  `json:"reset_ms"`
}

type verifyQuota struct {
	Limit     int64     `json:"limit"`
	Remaining int64     `json:"remaining"`
	ResetsAt  time.Time `json:"resets_at"`
}

// toRequest checks a decoded body and converts it.
func (in *verifyRequest) toRequest() (*verify.Request, error) {
	if in.Key == "" {
		return nil, badRequest("key is required")
	}
	if len(in.Key) > maxKeyLen {
		return nil, badRequest("key is longer than %d bytes", maxKeyLen)
	}
	if len(in.Scopes) > keygate.MaxScopes {
		return nil, badRequest("scopes has more than %d entries", keygate.MaxScopes)
	}
	for _, s := range in.Scopes {
		if !keygate.ValidScope(s, false) {
			return nil, badRequest("scopes: %q is not a scope of the form resource:action", truncate(s, 64))
		}
	}
	req := &verify.Request{Key: in.Key, Scopes: in.Scopes, Referrer: in.Referrer, Cost: 1}
	if in.IP != "" {
		a, err := netip.ParseAddr(in.IP)
		if err != nil || a.Zone() != "" {
			return nil, badRequest("ip: %q is not an IP address", truncate(in.IP, 64))
		}
		req.IP = a.Unmap()
	}
	if err := keygate.ValidateText("referrer", in.Referrer, maxReferrerLen); err != nil {
		return nil, err
	}
	if in.Cost != nil {
		if *in.Cost < 0 || *in.Cost > maxVerifyCost {
			return nil, badRequest("cost must be an integer from 0 to %d", maxVerifyCost)
		}
		req.Cost = *in.Cost
	}
	return req, nil
}

func handleKeyVerify(v Verifier, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in verifyRequest
		if err := decode(r, &in); err != nil {
			writeError(w, r, err)
			return
		}
		req, err := in.toRequest()
		if err != nil {
			writeError(w, r, err)
			return
		}
		if v == nil {
			writeProblem(w, r, keygate.CodeUnavailable, "key verification is not available on this node")
			return
		}
		var res verify.Result
		if err := v.Verify(r.Context(), req, &res); err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, r, http.StatusOK, newVerifyResponse(&res, now()))
	})
}

func newVerifyResponse(res *verify.Result, now time.Time) verifyResponse {
	out := verifyResponse{Valid: res.Valid, Code: res.Code, Scopes: []string{}, RateLimits: []verifyRateLimit{},
		Metadata: map[string]any{}}
	if out.Code == "" {
		out.Code = keygate.CodeNotFound
	}
	if e := res.Entry; e != nil && e.Key != nil {
		k := e.Key
		out.KeyID = &k.ID
		consumer := e.ConsumerID
		if consumer == "" {
			consumer = k.ConsumerID
		}
		out.ConsumerID = &consumer
		env := e.Env
		if env == "" {
			env = k.Env
		}
		out.Env = &env
		if e.Effective.Scopes != nil {
			out.Scopes = e.Effective.Scopes
		} else if k.Scopes != nil {
			out.Scopes = k.Scopes
		}
		plan := e.Plan
		if plan == "" {
			plan = e.Effective.Plan
		}
		if plan != "" {
			out.Plan = &plan
		}
		out.ExpiresAt = k.ExpiresAt
		if k.Metadata != nil {
			out.Metadata = k.Metadata
		}
	}
	for _, st := range res.Limits.States {
		switch st.Kind {
		case ratelimit.Window:
			out.RateLimits = append(out.RateLimits, verifyRateLimit{Name: st.Name, Limit: st.Limit,
				Remaining: st.Remaining, ResetMS: st.Reset.Milliseconds()})
		case ratelimit.QuotaDay, ratelimit.QuotaMonth:
			// The key's own quota; the consumer's shared one ("consumer-quota") is not shown.
			if st.Name == "quota" || out.Quota == nil && st.Name != "consumer-quota" {
				out.Quota = &verifyQuota{Limit: st.Limit, Remaining: st.Remaining,
					ResetsAt: now.Add(st.Reset).UTC().Round(time.Second)}
			}
		}
	}
	return out
}
