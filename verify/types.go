package verify

import (
	"net/netip"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
)

// Request is a verification request (the body of POST /v1/keys/verify, decoded).
type Request struct {
	Key    string
	Scopes []string
	// IP is the client address to check against ip_allow; the zero Addr means "not given".
	IP       netip.Addr
	Referrer string
	// Cost is 0..1000; 0 answers as cost 1 would without counting.
	Cost int64
}

// Result is a verification answer. Reuse one Result across calls to avoid allocations.
type Result struct {
	Valid bool
	Code  string
	// Entry is the key's cached entry; nil when the key was not found.
	Entry *Entry
	// Limits holds the states of every window and quota checked (empty when the checks stopped
	// before the limits).
	Limits ratelimit.Decision
}

// Entry is the cached, resolved form of one key: the key, its effective settings, and everything
// the hot path needs precomputed. Entries are immutable once cached; never modify one.
type Entry struct {
	Key        *keygate.Key
	Effective  keygate.Effective
	ConsumerID string
	Plan       string
	Env        string
	// ScopesHeader is the scopes joined by commas (X-Keygate-Scopes).
	ScopesHeader string
	ExpiresAt    time.Time // zero: never
	State        string
	// IPAllow is the parsed ip_allow list (nil: any address).
	IPAllow []netip.Prefix
	// Limits are the key's windows and quota and its consumer's, ready for the limiter.
	Limits []ratelimit.Limit

	referrers        []origin
	hasReferrerAllow bool
}
