// Package keygate is the domain of keygate: keys, consumers, plans, root keys, audit entries,
// their validation, the effective-settings rules of SPEC §2, and the storage interface that the
// store packages implement. It imports only the standard library.
package keygate

import (
	"encoding/json"
	"time"
)

// Key kinds and environments (SPEC §2).
const (
	KindSecret      = "secret"
	KindPublishable = "publishable"
	EnvLive         = "live"
	EnvTest         = "test"
)

// Key states. StateActive, StateDisabled and StateRevoked are stored; StatusExpired is derived
// from ExpiresAt and shown as "status".
const (
	StateActive   = "active"
	StateDisabled = "disabled"
	StateRevoked  = "revoked"
	StatusExpired = "expired"
)

// Quota periods.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
)

// Window is one named rate-limit window: at most Limit requests per Period.
type Window struct {
	Name   string   `json:"name"`
	Limit  int64    `json:"limit"`
	Period Duration `json:"period"`
}

// Quota is a calendar-period allowance. Used and ResetsAt are filled in on key objects, never
// stored (plans and consumers show neither).
type Quota struct {
	Limit    int64      `json:"limit" yaml:"limit"`
	Period   string     `json:"period" yaml:"period"`
	Used     *int64     `json:"used,omitempty" yaml:"-"`
	ResetsAt *time.Time `json:"resets_at,omitempty" yaml:"-"`
}

// Key is a consumer's API key. Only the SHA-256 of the plaintext (Hash) is ever stored.
type Key struct {
	ID            string         `json:"id"`
	ConsumerID    string         `json:"consumer_id"`
	Name          string         `json:"name"`
	Kind          string         `json:"kind"`
	Env           string         `json:"env"`
	Start         string         `json:"start"`
	Scopes        []string       `json:"scopes"`
	Plan          string         `json:"plan"`
	RateLimits    []Window       `json:"rate_limits"`
	Quota         *Quota         `json:"quota"`
	IPAllow       []string       `json:"ip_allow"`
	ReferrerAllow []string       `json:"referrer_allow"`
	ExpiresAt     *time.Time     `json:"expires_at"`
	Status        string         `json:"status"`
	RevokedAt     *time.Time     `json:"revoked_at"`
	RevokeReason  *string        `json:"revoke_reason"`
	RotatedFrom   *string        `json:"rotated_from"`
	RotatedTo     *string        `json:"rotated_to"`
	RotationDue   bool           `json:"rotation_due"`
	MaxAge        *Duration      `json:"max_age"`
	LastUsedAt    *time.Time     `json:"last_used_at"`
	CreatedAt     time.Time      `json:"created_at"`
	UpdatedAt     time.Time      `json:"updated_at"`
	Metadata      map[string]any `json:"metadata"`

	// State is the stored state: StateActive, StateDisabled or StateRevoked.
	State string `json:"-"`
	// Hash is the SHA-256 of the whole plaintext key.
	Hash []byte `json:"-"`
	// LimiterID names the limiter counters this key draws on. A new key's is its own ID; a rotated
	// key inherits its predecessor's, so that rotating never resets usage (SPEC §2).
	LimiterID string `json:"-"`
}

// MarshalJSON writes the key object of SPEC §2, with null for an empty plan and empty lists as [].
func (k Key) MarshalJSON() ([]byte, error) {
	type plain Key
	out := struct {
		*plain
		Plan any `json:"plan"`
	}{plain: (*plain)(&k)}
	if k.Plan != "" {
		out.Plan = k.Plan
	}
	c := *out.plain
	c.Scopes = nonNil(c.Scopes)
	c.IPAllow = nonNil(c.IPAllow)
	c.ReferrerAllow = nonNil(c.ReferrerAllow)
	if c.RateLimits == nil {
		c.RateLimits = []Window{}
	}
	if c.Metadata == nil {
		c.Metadata = map[string]any{}
	}
	out.plain = &c
	return json.Marshal(out)
}

// StatusAt returns the status shown for the key at time now: revoked, disabled, expired or active.
func (k *Key) StatusAt(now time.Time) string {
	switch {
	case k.State == StateRevoked:
		return StateRevoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return StatusExpired
	case k.State == StateDisabled:
		return StateDisabled
	}
	return StateActive
}

// Consumer owns keys. Its own RateLimits and Quota are shared by all its keys.
type Consumer struct {
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	Email      string         `json:"email"`
	Plan       string         `json:"plan"`
	RateLimits []Window       `json:"rate_limits"`
	Quota      *Quota         `json:"quota"`
	Metadata   map[string]any `json:"metadata"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	// DeletedAt is set when the consumer was deleted; deleted consumers are not found.
	DeletedAt *time.Time `json:"-"`
}

// MarshalJSON writes null for an empty plan and [] / {} for empty lists and metadata.
func (c Consumer) MarshalJSON() ([]byte, error) {
	type plain Consumer
	cp := plain(c)
	if cp.RateLimits == nil {
		cp.RateLimits = []Window{}
	}
	if cp.Metadata == nil {
		cp.Metadata = map[string]any{}
	}
	out := struct {
		*plain
		Plan any `json:"plan"`
	}{plain: &cp}
	if c.Plan != "" {
		out.Plan = c.Plan
	}
	return json.Marshal(out)
}

// Plan groups limits and a scope ceiling. Plans declared in the config file have ManagedBy "config"
// and cannot be changed through the API.
type Plan struct {
	Name          string    `json:"name"`
	RateLimits    []Window  `json:"rate_limits"`
	Quota         *Quota    `json:"quota"`
	ScopesAllowed []string  `json:"scopes_allowed"`
	MaxAge        *Duration `json:"max_age"`
	ManagedBy     string    `json:"managed_by"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// Plan managers.
const (
	ManagedByAPI    = "api"
	ManagedByConfig = "config"
)

// RootKey authenticates callers of the admin API.
type RootKey struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Start       string     `json:"start"`
	Permissions []string   `json:"permissions"`
	CreatedAt   time.Time  `json:"created_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	// CreatedBy is the id of the root key that created this one ("" for the bootstrap key).
	CreatedBy string `json:"created_by"`
	Hash      []byte `json:"-"`
}

// Root-key permissions (SPEC §3).
const (
	PermAdmin          = "admin"
	PermKeysRead       = "keys:read"
	PermKeysWrite      = "keys:write"
	PermKeysVerify     = "keys:verify"
	PermConsumersRead  = "consumers:read"
	PermConsumersWrite = "consumers:write"
	PermPlansRead      = "plans:read"
	PermPlansWrite     = "plans:write"
	PermRootKeysWrite  = "root_keys:write"
	PermAnalyticsRead  = "analytics:read"
	PermAuditRead      = "audit:read"
	PermWebhooksRead   = "webhooks:read"
	PermWebhooksWrite  = "webhooks:write"
)

// Permissions lists every permission a root key can carry.
var Permissions = []string{
	PermAdmin, PermKeysRead, PermKeysWrite, PermKeysVerify, PermConsumersRead, PermConsumersWrite,
	PermPlansRead, PermPlansWrite, PermRootKeysWrite, PermAnalyticsRead, PermAuditRead,
	PermWebhooksRead, PermWebhooksWrite,
}

// Has reports whether the root key carries permission p (admin carries all).
func (r *RootKey) Has(p string) bool {
	for _, q := range r.Permissions {
		if q == p || q == PermAdmin {
			return true
		}
	}
	return false
}

// AuditEntry is one entry of the hash-chained audit log (SPEC §7).
type AuditEntry struct {
	Seq        int64          `json:"seq"`
	TS         time.Time      `json:"ts"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	TargetType string         `json:"target_type"`
	TargetID   string         `json:"target_id"`
	IP         string         `json:"ip"`
	Result     string         `json:"result"`
	Details    map[string]any `json:"details"`
	Hash       string         `json:"hash"`
}

// Audit results.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
)

// UsageDelta adds successful requests of one key on one UTC day to the durable counters (SPEC §5).
type UsageDelta struct {
	KeyID      string
	ConsumerID string
	LimiterID  string
	Day        time.Time // midnight UTC
	Requests   int64
}

// UsageRow is one key's successful requests on one UTC day.
type UsageRow struct {
	Day        time.Time `json:"date"`
	ConsumerID string    `json:"consumer_id"`
	KeyID      string    `json:"key_id"`
	Requests   int64     `json:"requests"`
}

// IdempotencyRecord remembers the first answer to a POST carrying an Idempotency-Key header.
type IdempotencyRecord struct {
	Scope       string // who asked: the root key id (or portal user), so keys never collide across callers
	Key         string // the Idempotency-Key header value
	RequestHash []byte // SHA-256 of method, path and body, to refuse reuse with a different request
	Status      int
	Body        []byte
	CreatedAt   time.Time
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
