// Package control is keygate's control plane: every change to consumers, plans, keys and root
// keys goes through a Service, which validates it, applies it and appends its audit entry in one
// transaction (SPEC §7), then tells the verify caches (Invalidator) and the webhooks (Events).
// The admin API and the developer portal call it; neither touches the store for writes.
package control

import (
	"context"
	"log/slog"
	"time"

	"github.com/keygate/keygate"
)

// Actor is who performs an action, as written to the audit log.
type Actor struct {
	// ID is "root_key:<id>", "portal:<user id>", "config" or "system".
	ID string
	// IP is the caller's address ("" when not over the network).
	IP string
}

// Invalidator is told about changes so that caches drop what they hold. Calls happen after commit.
type Invalidator interface {
	KeyChanged(id string, hash []byte)
	ConsumerChanged(id string)
	PlanChanged(name string)
	RootKeyChanged(id string, hash []byte)
}

// UsageFunc returns how much of quota q the keys sharing limiterID (a rotation chain) have used
// in the current period. The limiter provides the live value; without it, the durable daily
// counters are read.
type UsageFunc func(ctx context.Context, limiterID string, q *keygate.Quota, now time.Time) (int64, error)

// Options configure a Service. Store is required; the rest have defaults.
type Options struct {
	Store keygate.Store
	// Now is the clock (default time.Now). Tests inject a fake one.
	Now func() time.Time
	// Prefix of generated keys (default "kg").
	Prefix string
	// LegacyPrefixes are the prefixes of imported keys of other systems that verification accepts.
	LegacyPrefixes []string
	// Invalidator is told about every committed change (default: none).
	Invalidator Invalidator
	// Events receives key.created, key.revoked, key.rotated, key.leaked (default: dropped).
	Events keygate.Events
	// Usage reports live quota usage for key objects (default: the durable daily counters).
	Usage UsageFunc
	// DefaultGracePeriod of rotation (default 24h).
	DefaultGracePeriod time.Duration
	// AuditKey is the HMAC key of the audit chain, for VerifyAudit.
	AuditKey []byte
	// AuditSink receives every committed audit entry (JSON-lines sinks for a SIEM); nil: none.
	AuditSink func(*keygate.AuditEntry)
	// Logger logs storage failures (default slog.Default()).
	Logger *slog.Logger
	// RootKeyTTL bounds how long an authenticated root key is trusted from memory before it is
	// read again, so that a revocation on another node takes effect (default 1s).
	RootKeyTTL time.Duration
}

// KeyCreate is the body of POST /v1/keys.
type KeyCreate struct {
	ConsumerID    string            `json:"consumer_id"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"` // default secret
	Env           string            `json:"env"`  // default live
	Scopes        []string          `json:"scopes"`
	Plan          string            `json:"plan"`
	RateLimits    []keygate.Window  `json:"rate_limits"`
	Quota         *keygate.Quota    `json:"quota"`
	IPAllow       []string          `json:"ip_allow"`
	ReferrerAllow []string          `json:"referrer_allow"`
	ExpiresAt     *time.Time        `json:"expires_at"`
	TTL           *keygate.Duration `json:"ttl"`
	MaxAge        *keygate.Duration `json:"max_age"`
	Metadata      map[string]any    `json:"metadata"`
}

// KeyPatch is the body of PATCH /v1/keys/{id}. Absent fields are unchanged; null clears.
type KeyPatch struct {
	Name          keygate.Opt[string]            `json:"name"`
	Scopes        keygate.Opt[[]string]          `json:"scopes"`
	Plan          keygate.Opt[string]            `json:"plan"`
	RateLimits    keygate.Opt[[]keygate.Window]  `json:"rate_limits"`
	Quota         keygate.Opt[*keygate.Quota]    `json:"quota"`
	IPAllow       keygate.Opt[[]string]          `json:"ip_allow"`
	ReferrerAllow keygate.Opt[[]string]          `json:"referrer_allow"`
	ExpiresAt     keygate.Opt[*time.Time]        `json:"expires_at"`
	MaxAge        keygate.Opt[*keygate.Duration] `json:"max_age"`
	Metadata      keygate.Opt[map[string]any]    `json:"metadata"`
	// Status may be "active" or "disabled".
	Status keygate.Opt[string] `json:"status"`
}

// ConsumerCreate is the body of POST /v1/consumers.
type ConsumerCreate struct {
	Name       string           `json:"name"`
	Email      string           `json:"email"`
	Plan       string           `json:"plan"`
	RateLimits []keygate.Window `json:"rate_limits"`
	Quota      *keygate.Quota   `json:"quota"`
	Metadata   map[string]any   `json:"metadata"`
}

// ConsumerPatch is the body of PATCH /v1/consumers/{id}.
type ConsumerPatch struct {
	Name       keygate.Opt[string]           `json:"name"`
	Email      keygate.Opt[string]           `json:"email"`
	Plan       keygate.Opt[string]           `json:"plan"`
	RateLimits keygate.Opt[[]keygate.Window] `json:"rate_limits"`
	Quota      keygate.Opt[*keygate.Quota]   `json:"quota"`
	Metadata   keygate.Opt[map[string]any]   `json:"metadata"`
}

// PlanCreate is the body of POST /v1/plans.
type PlanCreate struct {
	Name          string            `json:"name" yaml:"name"`
	RateLimits    []keygate.Window  `json:"rate_limits" yaml:"rate_limits"`
	Quota         *keygate.Quota    `json:"quota" yaml:"quota"`
	ScopesAllowed []string          `json:"scopes_allowed" yaml:"scopes_allowed"`
	MaxAge        *keygate.Duration `json:"max_age" yaml:"max_age"`
}

// PlanPatch is the body of PATCH /v1/plans/{name}.
type PlanPatch struct {
	RateLimits    keygate.Opt[[]keygate.Window]  `json:"rate_limits"`
	Quota         keygate.Opt[*keygate.Quota]    `json:"quota"`
	ScopesAllowed keygate.Opt[[]string]          `json:"scopes_allowed"`
	MaxAge        keygate.Opt[*keygate.Duration] `json:"max_age"`
}

// RootKeyCreate is the body of POST /v1/root-keys.
type RootKeyCreate struct {
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
}

// LeakedResult answers POST /v1/keys/leaked.
type LeakedResult struct {
	// Revoked lists the keys found and revoked now; AlreadyRevoked those found already revoked.
	Revoked        []string `json:"revoked"`
	AlreadyRevoked []string `json:"already_revoked"`
	// NotFound counts presented strings that matched no key (they are never echoed back).
	NotFound int `json:"not_found"`
}

// AuditVerification answers GET /v1/audit/verify.
type AuditVerification struct {
	OK       bool   `json:"ok"`
	Entries  int64  `json:"entries"`
	BrokenAt *int64 `json:"broken_at"`
}

// AuditHead answers GET /v1/audit/head.
type AuditHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}
