// Package verify answers "is this key good for this request?" — the hot path of both the gateway
// and POST /v1/keys/verify. A warm key is verified from memory without touching storage: the
// cache holds each key's resolved Entry (key, consumer, plan, effective limits, parsed allow-lists)
// and is invalidated by the control plane on every change (it implements control.Invalidator).
// Unknown keys are cached negatively for a few seconds, and strings that claim to be keygate keys
// but fail the checksum are refused before any lookup (SPEC §2 pre-filter).
package verify

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/ratelimit"
)

// Options configure a Verifier. Store is required.
type Options struct {
	Store keygate.Reader
	// Limiter enforces windows and quotas (nil: no limits are enforced, states are empty).
	Limiter ratelimit.Limiter
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Prefix of keygate keys (default "kg").
	Prefix string
	// LegacyPrefixes: imported keys of other systems are looked up only under these prefixes.
	LegacyPrefixes []string
	// TTL bounds how long a positive entry is trusted without invalidation (0: until invalidated).
	// A cluster without a working invalidation channel sets a few seconds.
	TTL time.Duration
	// NegativeTTL is how long an unknown key stays unknown (default 5s, at most 5s).
	NegativeTTL time.Duration
	// MaxEntries bounds the cache (default 1,000,000).
	MaxEntries int
	// LookupTimeout bounds a storage lookup on a cache miss (default 2s).
	LookupTimeout time.Duration
	// Throttled reports an anomaly throttle on a key (nil: never).
	Throttled func(keyID string) bool
	// OnAllowed is called for every request that passed all checks, with its cost (usage counting).
	OnAllowed func(e *Entry, cost int64)
	// OnLimits is called after every limiter check with its decision (quota events). It must not
	// block or keep d.
	OnLimits func(e *Entry, d *ratelimit.Decision)
}

// Verifier verifies keys. It is safe for concurrent use.
type Verifier struct {
	store     keygate.Reader
	limiter   ratelimit.Limiter
	now       func() time.Time
	prefix    string
	legacy    []string
	ttl       atomic.Int64 // time.Duration
	negTTL    time.Duration
	timeout   time.Duration
	throttled func(string) bool
	onAllowed func(*Entry, int64)
	onLimits  func(*Entry, *ratelimit.Decision)
	cache     *cache
	group     singleflight.Group
}

// New returns a Verifier.
func New(o Options) *Verifier {
	v := &Verifier{
		store: o.Store, limiter: o.Limiter, now: o.Now, prefix: o.Prefix, legacy: o.LegacyPrefixes,
		negTTL: o.NegativeTTL, timeout: o.LookupTimeout,
		throttled: o.Throttled, onAllowed: o.OnAllowed, onLimits: o.OnLimits,
	}
	v.ttl.Store(int64(o.TTL))
	if v.now == nil {
		v.now = time.Now
	}
	if v.prefix == "" {
		v.prefix = keys.DefaultPrefix
	}
	if v.negTTL <= 0 || v.negTTL > 5*time.Second {
		v.negTTL = 5 * time.Second
	}
	if v.timeout <= 0 {
		v.timeout = 2 * time.Second
	}
	maxEntries := o.MaxEntries
	if maxEntries <= 0 {
		maxEntries = 1_000_000
	}
	v.cache = newCache(maxEntries)
	return v
}

// maxKeyLen bounds presented keys: longer strings are refused before hashing.
const maxKeyLen = 512

// Lookup runs the checks that depend on the key alone, in SPEC §3 order: format, exists, revoked,
// expired, disabled. code is "" for a usable key. err is non-nil only when storage failed on a
// cache miss (its code is UNAVAILABLE).
func (v *Verifier) Lookup(ctx context.Context, key string) (e *Entry, code string, err error) {
	if len(key) == 0 || len(key) > maxKeyLen {
		return nil, keygate.CodeNotFound, nil
	}
	// The cache is consulted before the pre-filter: only well-formed strings are ever cached,
	// so a hit proves the shape and saves the checksum on the hot path.
	h := keys.Hash(key)
	// The clock is read only when something can expire: reading it is a measurable part of a
	// warm verification on virtual machines.
	var now time.Time
	s, ok := v.cache.peek(&h)
	if ok && s.deadline != 0 {
		now = v.now()
		ok = now.UnixNano() < s.deadline
	}
	if !ok {
		if !v.wellFormed(key) {
			return nil, keygate.CodeNotFound, nil
		}
		if now.IsZero() {
			now = v.now()
		}
		hh := h // escapes into the loader; copied here so the warm path stays on the stack
		s, err = v.load(ctx, &hh, now.UnixNano())
		if err != nil {
			return nil, "", err
		}
	}
	if s.e == nil {
		return nil, keygate.CodeNotFound, nil
	}
	e = s.e
	if !e.ExpiresAt.IsZero() && now.IsZero() {
		now = v.now()
	}
	switch {
	case e.State == keygate.StateRevoked:
		return e, keygate.CodeRevoked, nil
	case !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt):
		return e, keygate.CodeExpired, nil
	case e.State == keygate.StateDisabled:
		return e, keygate.CodeDisabled, nil
	}
	return e, "", nil
}

// wellFormed is the pre-filter: keygate keys must pass the checksum, other strings are looked up
// only under a legacy prefix.
func (v *Verifier) wellFormed(key string) bool {
	if keys.LooksLike(key, v.prefix) {
		p, err := keys.Parse(key, v.prefix)
		return err == nil && !p.Root()
	}
	for _, l := range v.legacy {
		if strings.HasPrefix(key, l) && len(key) > len(l) {
			return true
		}
	}
	return false
}

// load reads a key by hash on a cache miss, once per hash however many requests wait for it.
func (v *Verifier) load(ctx context.Context, h *[32]byte, now int64) (slot, error) {
	r, err, _ := v.group.Do(string(h[:]), func() (any, error) {
		// A lookup shared by many callers must not die with the first caller's context.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.timeout)
		defer cancel()
		e, err := v.resolve(lctx, h[:])
		if err != nil {
			if keygate.ErrorCode(err) == keygate.CodeNotFound {
				s := slot{deadline: now + int64(v.negTTL)}
				v.cache.put(h, s)
				return s, nil
			}
			return slot{}, keygate.Errorf(keygate.CodeUnavailable, "key storage is unavailable")
		}
		s := slot{e: e}
		if ttl := v.ttl.Load(); ttl > 0 {
			s.deadline = now + ttl
		}
		v.cache.put(h, s)
		return s, nil
	})
	if err != nil {
		return slot{}, err
	}
	return r.(slot), nil
}

// resolve reads a key, its consumer and its plan and builds its Entry.
func (v *Verifier) resolve(ctx context.Context, hash []byte) (*Entry, error) {
	k, err := v.store.KeyByHash(ctx, hash)
	if err != nil {
		return nil, err
	}
	var c *keygate.Consumer
	if k.ConsumerID != "" {
		c, err = v.store.Consumer(ctx, k.ConsumerID)
		if err != nil && keygate.ErrorCode(err) != keygate.CodeNotFound {
			return nil, err
		}
	}
	var p *keygate.Plan
	if name := keygate.PlanName(k, c); name != "" {
		p, err = v.store.Plan(ctx, name)
		if err != nil && keygate.ErrorCode(err) != keygate.CodeNotFound {
			return nil, err
		}
	}
	if c == nil && k.State != keygate.StateRevoked {
		// The owner is gone (deleted consumers' keys are revoked in the same transaction); treat
		// a dangling key as revoked rather than trusting it.
		k.State = keygate.StateRevoked
	}
	return NewEntry(k, c, p), nil
}

// NewEntry resolves a key with its consumer and plan into an Entry.
func NewEntry(k *keygate.Key, c *keygate.Consumer, p *keygate.Plan) *Entry {
	eff := keygate.EffectiveSettings(k, c, p)
	e := &Entry{
		Key: k, Effective: eff, ConsumerID: k.ConsumerID, Plan: eff.Plan, Env: k.Env,
		ScopesHeader: strings.Join(k.Scopes, ","), State: k.State,
	}
	if k.ExpiresAt != nil {
		e.ExpiresAt = *k.ExpiresAt
	}
	if len(k.IPAllow) > 0 {
		// Stored values were validated on the way in; an unparsable one would only narrow access.
		ps, _ := keygate.ParseIPAllow("ip_allow", k.IPAllow)
		e.IPAllow = ps
		if e.IPAllow == nil {
			e.IPAllow = []netip.Prefix{}
		}
	}
	for _, r := range k.ReferrerAllow {
		if o, ok := parseOrigin(r); ok {
			e.referrers = append(e.referrers, o)
		}
	}
	e.hasReferrerAllow = len(k.ReferrerAllow) > 0
	limiterID := k.LimiterID
	if limiterID == "" {
		limiterID = k.ID
	}
	for _, w := range eff.RateLimits {
		e.Limits = append(e.Limits, ratelimit.Limit{Name: w.Name, Key: "k:" + limiterID + ":" + w.Name,
			Kind: ratelimit.Window, Limit: w.Limit, Period: w.Period.D()})
	}
	if q := eff.Quota; q != nil {
		e.Limits = append(e.Limits, ratelimit.Limit{Name: "quota", Key: "k:" + limiterID + ":quota",
			Kind: quotaKind(q.Period), Limit: q.Limit})
	}
	for _, w := range eff.ConsumerRateLimits {
		e.Limits = append(e.Limits, ratelimit.Limit{Name: "consumer-" + w.Name, Key: "c:" + k.ConsumerID + ":" + w.Name,
			Kind: ratelimit.Window, Limit: w.Limit, Period: w.Period.D()})
	}
	if q := eff.ConsumerQuota; q != nil {
		e.Limits = append(e.Limits, ratelimit.Limit{Name: "consumer-quota", Key: "c:" + k.ConsumerID + ":quota",
			Kind: quotaKind(q.Period), Limit: q.Limit})
	}
	return e
}

func quotaKind(period string) ratelimit.Kind {
	if period == keygate.PeriodDay {
		return ratelimit.QuotaDay
	}
	return ratelimit.QuotaMonth
}

// AllowIP reports whether ip may use the key: true when the key has no ip_allow; false for the
// zero Addr (no address given) when it has one.
func (e *Entry) AllowIP(ip netip.Addr) bool {
	if e.IPAllow == nil {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range e.IPAllow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// AllowReferrer reports whether a request from referrer (a Referer URL or an Origin) may use the
// key: true when the key has no referrer_allow; false for "" when it has one.
func (e *Entry) AllowReferrer(referrer string) bool {
	if !e.hasReferrerAllow {
		return true
	}
	o, ok := parseOrigin(referrer)
	if !ok {
		return false
	}
	for _, a := range e.referrers {
		if a.matches(o) {
			return true
		}
	}
	return false
}

// HasScopes reports whether the key grants every scope in want.
func (e *Entry) HasScopes(want []string) bool { return keygate.ScopesGrant(e.Key.Scopes, want) }

// Limit checks and consumes the key's windows and quotas. code is "" when allowed, else
// THROTTLED (an anomaly throttle), RATE_LIMITED or QUOTA_EXCEEDED; d holds every state. err is ratelimit.ErrUnavailable (code
// UNAVAILABLE) when the counter store failed in closed mode. An allowed request of cost > 0 is
// counted in the durable usage record (OnAllowed), with or without limits.
func (v *Verifier) Limit(ctx context.Context, e *Entry, cost int64, d *ratelimit.Decision) (code string, err error) {
	d.Allowed, d.Denied, d.RetryAfter, d.States = true, -1, 0, d.States[:0]
	// An anomaly throttle comes first: it is checked after scopes and before the limits.
	if v.throttled != nil && v.throttled(e.Key.ID) {
		d.Allowed = false
		return keygate.CodeThrottled, nil
	}
	if v.limiter != nil && len(e.Limits) > 0 {
		if err := v.limiter.Check(ctx, e.Limits, cost, d); err != nil {
			if errors.Is(err, ratelimit.ErrUnavailable) {
				return "", &keygate.Error{Code: keygate.CodeUnavailable, Message: "the rate-limit store is unavailable"}
			}
			return "", err
		}
		if v.onLimits != nil {
			v.onLimits(e, d)
		}
		if !d.Allowed {
			if d.Denied >= 0 && d.Denied < len(e.Limits) && e.Limits[d.Denied].Kind != ratelimit.Window {
				return keygate.CodeQuotaExceeded, nil
			}
			return keygate.CodeRateLimited, nil
		}
	}
	if cost > 0 && v.onAllowed != nil {
		v.onAllowed(e, cost)
	}
	return "", nil
}

// Verify runs every check of SPEC §3 in order and fills res. The returned error is non-nil only
// when a dependency failed (code UNAVAILABLE); refusals are answers, not errors.
func (v *Verifier) Verify(ctx context.Context, req *Request, res *Result) error {
	res.Valid, res.Code, res.Entry = false, "", nil
	res.Limits.Allowed, res.Limits.Denied, res.Limits.RetryAfter, res.Limits.States = false, -1, 0, res.Limits.States[:0]
	e, code, err := v.Lookup(ctx, req.Key)
	if err != nil {
		return err
	}
	res.Entry = e
	if code == "" {
		code = v.authorize(e, req)
	}
	if code == "" {
		cost := req.Cost
		code, err = v.Limit(ctx, e, cost, &res.Limits)
		if err != nil {
			return err
		}
	}
	if code == "" {
		res.Valid, res.Code = true, keygate.CodeValid
	} else {
		res.Code = code
	}
	return nil
}

func (v *Verifier) authorize(e *Entry, req *Request) string {
	switch {
	case !e.AllowIP(req.IP):
		return keygate.CodeIPNotAllowed
	case !e.AllowReferrer(req.Referrer):
		return keygate.CodeReferrerNotAllowed
	case !e.HasScopes(req.Scopes):
		return keygate.CodeInsufficientScope
	}
	return ""
}

// --- invalidation (control.Invalidator) ---

// KeyChanged drops the entry for a key's hash, positive or negative (a key just created).
func (v *Verifier) KeyChanged(id string, hash []byte) {
	v.cache.delete(hash)
}

// ConsumerChanged drops the entries of a consumer's keys.
func (v *Verifier) ConsumerChanged(id string) {
	v.cache.deleteIf(func(e *Entry) bool { return e.ConsumerID == id })
}

// PlanChanged drops the entries of keys on a plan.
func (v *Verifier) PlanChanged(name string) {
	v.cache.deleteIf(func(e *Entry) bool { return e.Plan == name })
}

// RootKeyChanged is a no-op: root keys are not verified here.
func (v *Verifier) RootKeyChanged(string, []byte) {}

// SetTTL changes how long new positive entries are trusted without invalidation (0: until
// invalidated). A cluster node sets a few seconds while its invalidation channel is down.
func (v *Verifier) SetTTL(d time.Duration) { v.ttl.Store(int64(d)) }

// Purge drops every entry (used when the invalidation channel of a cluster was lost).
func (v *Verifier) Purge() { v.cache.clear() }

// CacheLen returns the number of cached entries, positive and negative.
func (v *Verifier) CacheLen() int { return v.cache.len() }
