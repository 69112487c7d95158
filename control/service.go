package control

import (
	"context"
	"time"

	"github.com/keygate/keygate"
)

// Service applies and audits every change. It is safe for concurrent use.
type Service struct {
	store  keygate.Store
	now    func() time.Time
	prefix string
	legacy []string
	inv    Invalidator
	events keygate.Events
	usage  UsageFunc
	grace  time.Duration
}

// New returns a Service.
func New(o Options) *Service {
	s := &Service{store: o.Store, now: o.Now, prefix: o.Prefix, legacy: o.LegacyPrefixes,
		inv: o.Invalidator, events: o.Events, usage: o.Usage, grace: o.DefaultGracePeriod}
	if s.now == nil {
		s.now = time.Now
	}
	if s.prefix == "" {
		s.prefix = "kg"
	}
	if s.inv == nil {
		s.inv = nopInvalidator{}
	}
	if s.events == nil {
		s.events = keygate.NopEvents{}
	}
	if s.grace == 0 {
		s.grace = 24 * time.Hour
	}
	if s.usage == nil {
		s.usage = s.durableUsage
	}
	return s
}

type nopInvalidator struct{}

func (nopInvalidator) KeyChanged(string, []byte)     {}
func (nopInvalidator) ConsumerChanged(string)        {}
func (nopInvalidator) PlanChanged(string)            {}
func (nopInvalidator) RootKeyChanged(string, []byte) {}

// Store returns the store the service writes to (for reads that need no business rules).
func (s *Service) Store() keygate.Store { return s.store }

// Prefix returns the key prefix.
func (s *Service) Prefix() string { return s.prefix }

// --- consumers ---

// CreateConsumer validates and creates a consumer (audit consumer.create).
func (s *Service) CreateConsumer(ctx context.Context, a Actor, in ConsumerCreate) (*keygate.Consumer, error) {
	panic("unimplemented")
}

// Consumer returns a consumer or CodeNotFound.
func (s *Service) Consumer(ctx context.Context, id string) (*keygate.Consumer, error) {
	panic("unimplemented")
}

// Consumers lists consumers newest first.
func (s *Service) Consumers(ctx context.Context, p keygate.ListParams) ([]*keygate.Consumer, string, error) {
	panic("unimplemented")
}

// UpdateConsumer applies a patch (audit consumer.update).
func (s *Service) UpdateConsumer(ctx context.Context, a Actor, id string, p ConsumerPatch) (*keygate.Consumer, error) {
	panic("unimplemented")
}

// DeleteConsumer revokes the consumer's keys and deletes it; purge erases name and email
// (audit consumer.delete, and key.revoke for each key).
func (s *Service) DeleteConsumer(ctx context.Context, a Actor, id string, purge bool) error {
	panic("unimplemented")
}

// --- plans ---

// CreatePlan creates a plan managed by the API (audit plan.create).
func (s *Service) CreatePlan(ctx context.Context, a Actor, in PlanCreate) (*keygate.Plan, error) {
	panic("unimplemented")
}

// Plan returns a plan or CodeNotFound.
func (s *Service) Plan(ctx context.Context, name string) (*keygate.Plan, error) {
	panic("unimplemented")
}

// Plans lists plans.
func (s *Service) Plans(ctx context.Context, p keygate.ListParams) ([]*keygate.Plan, string, error) {
	panic("unimplemented")
}

// UpdatePlan applies a patch; config-managed plans are CodeConflict (audit plan.update).
func (s *Service) UpdatePlan(ctx context.Context, a Actor, name string, p PlanPatch) (*keygate.Plan, error) {
	panic("unimplemented")
}

// DeletePlan deletes an unused plan; in use or config-managed is CodeConflict (audit plan.delete).
func (s *Service) DeletePlan(ctx context.Context, a Actor, name string) error {
	panic("unimplemented")
}

// SyncConfigPlans creates or updates the plans declared in the config file, marked managed_by
// config (audit plan.create / plan.update with actor "config"). Plans no longer declared stay,
// marked managed_by api.
func (s *Service) SyncConfigPlans(ctx context.Context, plans []PlanCreate) error {
	panic("unimplemented")
}

// --- keys ---

// CreateKey issues a key and returns it with its plaintext, shown once (audit key.create, event
// key.created).
func (s *Service) CreateKey(ctx context.Context, a Actor, in KeyCreate) (*keygate.Key, string, error) {
	panic("unimplemented")
}

// Key returns a key object with status, quota usage and rotation_due filled in.
func (s *Service) Key(ctx context.Context, id string) (*keygate.Key, error) {
	panic("unimplemented")
}

// Keys lists key objects newest first.
func (s *Service) Keys(ctx context.Context, f keygate.KeyFilter) ([]*keygate.Key, string, error) {
	panic("unimplemented")
}

// UpdateKey applies a patch (audit key.update). Revoked keys are CodeConflict.
func (s *Service) UpdateKey(ctx context.Context, a Actor, id string, p KeyPatch) (*keygate.Key, error) {
	panic("unimplemented")
}

// RevokeKey revokes a key at once (audit key.revoke, event key.revoked). Revoking a revoked key
// is CodeConflict.
func (s *Service) RevokeKey(ctx context.Context, a Actor, id, reason string) (*keygate.Key, error) {
	panic("unimplemented")
}

// RotateKey issues a successor with the same settings, owner and limiter state, and makes the old
// key expire after grace (nil: the default 24h; 0: now). Returns the new key and its plaintext
// (audit key.rotate, event key.rotated).
func (s *Service) RotateKey(ctx context.Context, a Actor, id string, grace *time.Duration) (*keygate.Key, string, error) {
	panic("unimplemented")
}

// RevokeLeaked revokes the keys among plaintexts with reason "leaked" (audit key.revoke, event
// key.leaked). Strings matching no key are counted, never echoed.
func (s *Service) RevokeLeaked(ctx context.Context, a Actor, plaintexts []string) (*LeakedResult, error) {
	panic("unimplemented")
}

// --- root keys ---

// CreateRootKey creates a root key; creator must hold every permission it grants (else
// CodeForbidden). Returns the plaintext once (audit root_key.create).
func (s *Service) CreateRootKey(ctx context.Context, a Actor, creator *keygate.RootKey, in RootKeyCreate) (*keygate.RootKey, string, error) {
	panic("unimplemented")
}

// RootKeys lists root keys.
func (s *Service) RootKeys(ctx context.Context, p keygate.ListParams) ([]*keygate.RootKey, string, error) {
	panic("unimplemented")
}

// RevokeRootKey revokes a root key (audit root_key.revoke).
func (s *Service) RevokeRootKey(ctx context.Context, a Actor, id string) (*keygate.RootKey, error) {
	panic("unimplemented")
}

// AuthenticateRoot returns the active root key whose plaintext is token, or CodeUnauthorized.
// Results are cached briefly; revocation on this node takes effect at once.
func (s *Service) AuthenticateRoot(ctx context.Context, token string) (*keygate.RootKey, error) {
	panic("unimplemented")
}

// EnsureRootKey makes sure a root key with plaintext token exists with permission admin
// (idempotent). A revoked one is an error saying so.
func (s *Service) EnsureRootKey(ctx context.Context, token string) error {
	panic("unimplemented")
}

// BootstrapRootKey creates an admin root key if none exists, under a cluster-wide lock, and
// returns its plaintext ("" when one existed already).
func (s *Service) BootstrapRootKey(ctx context.Context) (string, error) {
	panic("unimplemented")
}

// --- audit ---

// AuditFailure appends an entry with result failure for an action that was refused (for example
// a 403), in its own transaction.
func (s *Service) AuditFailure(ctx context.Context, a Actor, action, targetType, targetID string, details map[string]any) error {
	panic("unimplemented")
}

// AuditEntries lists entries newest first.
func (s *Service) AuditEntries(ctx context.Context, f keygate.AuditFilter) ([]*keygate.AuditEntry, string, error) {
	panic("unimplemented")
}

// VerifyAudit checks the whole chain with the audit key.
func (s *Service) VerifyAudit(ctx context.Context) (*AuditVerification, error) {
	panic("unimplemented")
}

// AuditHead returns the newest entry's seq and hash.
func (s *Service) AuditHead(ctx context.Context) (*AuditHead, error) {
	panic("unimplemented")
}

func (s *Service) durableUsage(ctx context.Context, limiterKey string, q *keygate.Quota, now time.Time) (int64, error) {
	panic("unimplemented")
}
