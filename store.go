package keygate

import (
	"context"
	"time"
)

// ListParams pages through a list: Limit items after the opaque Cursor.
type ListParams struct {
	Limit  int
	Cursor string
}

// KeyFilter selects keys for a list, newest first.
type KeyFilter struct {
	ListParams
	ConsumerID string
	// Status filters on the shown status (active, disabled, expired, revoked); "" is all.
	Status string
	// Now is the time against which "expired" is judged.
	Now time.Time
}

// AuditFilter selects audit entries, newest first.
type AuditFilter struct {
	ListParams
	Actor  string
	Action string
	Target string // matches target_id
	From   *time.Time
	To     *time.Time
}

// Reader reads the store. Every lookup of a missing object returns an *Error with CodeNotFound.
type Reader interface {
	// KeyByHash finds a key by the SHA-256 of its plaintext: one indexed read.
	KeyByHash(ctx context.Context, hash []byte) (*Key, error)
	Key(ctx context.Context, id string) (*Key, error)
	Keys(ctx context.Context, f KeyFilter) (keys []*Key, nextCursor string, err error)
	// CountKeys counts the keys of a consumer that are not revoked.
	CountKeys(ctx context.Context, consumerID string) (int, error)

	Consumer(ctx context.Context, id string) (*Consumer, error)
	Consumers(ctx context.Context, p ListParams) ([]*Consumer, string, error)

	Plan(ctx context.Context, name string) (*Plan, error)
	Plans(ctx context.Context, p ListParams) ([]*Plan, string, error)
	// PlanInUse reports whether any consumer or non-revoked key names the plan.
	PlanInUse(ctx context.Context, name string) (bool, error)

	RootKey(ctx context.Context, id string) (*RootKey, error)
	RootKeyByHash(ctx context.Context, hash []byte) (*RootKey, error)
	RootKeys(ctx context.Context, p ListParams) ([]*RootKey, string, error)

	AuditEntries(ctx context.Context, f AuditFilter) ([]*AuditEntry, string, error)
	// AuditHead returns the newest entry's seq and hash (0 and "" for an empty log).
	AuditHead(ctx context.Context) (seq int64, hash string, err error)

	// Idempotency returns the record for (scope, key) created after since, or CodeNotFound.
	Idempotency(ctx context.Context, scope, key string, since time.Time) (*IdempotencyRecord, error)

	// Usage sums the durable daily counters of a limiter (all keys of a rotation chain) over
	// the UTC days [from, to).
	UsageByLimiter(ctx context.Context, limiterID string, from, to time.Time) (int64, error)
	// UsageByConsumer sums a consumer's durable daily counters over the UTC days [from, to).
	UsageByConsumer(ctx context.Context, consumerID string, from, to time.Time) (int64, error)
	// UsageRows lists per-key, per-day counters of a consumer ("" = all) over [from, to), by day then key.
	UsageRows(ctx context.Context, consumerID string, from, to time.Time) ([]UsageRow, error)
}

// Tx is a read-write transaction. Writes of missing ids return CodeNotFound, unique violations
// CodeConflict.
type Tx interface {
	Reader

	// CreateKeys inserts keys in one statement batch.
	CreateKeys(ctx context.Context, keys ...*Key) error
	// UpdateKey writes every mutable field of k (by k.ID).
	UpdateKey(ctx context.Context, k *Key) error

	CreateConsumer(ctx context.Context, c *Consumer) error
	UpdateConsumer(ctx context.Context, c *Consumer) error
	// DeleteConsumer marks the consumer deleted; purge also erases its name and email.
	DeleteConsumer(ctx context.Context, id string, at time.Time, purge bool) error

	CreatePlan(ctx context.Context, p *Plan) error
	UpdatePlan(ctx context.Context, p *Plan) error
	DeletePlan(ctx context.Context, name string) error

	CreateRootKey(ctx context.Context, r *RootKey) error
	// RevokeRootKey sets revoked_at.
	RevokeRootKey(ctx context.Context, id string, at time.Time) error
	// SetRootKeyPermissions replaces a root key's permissions.
	SetRootKeyPermissions(ctx context.Context, id string, perms []string) error

	// AppendAudit assigns e.Seq and e.Hash (chained on the previous entry through the store's
	// AuditHasher) and inserts e. Entries are appended strictly in order across all nodes.
	AppendAudit(ctx context.Context, e *AuditEntry) error

	// PutIdempotency stores r; a live record (under 24 h old) with the same scope and key is
	// CodeConflict. A record with Status 0 is a claim: the request is being processed.
	PutIdempotency(ctx context.Context, r *IdempotencyRecord) error
	// DeleteIdempotency removes the record of (scope, key), if any.
	DeleteIdempotency(ctx context.Context, scope, key string) error

	// Lock takes a transaction-scoped lock named name, held until the transaction ends; nodes
	// sharing one database serialize on it (PostgreSQL advisory lock).
	Lock(ctx context.Context, name string) error
}

// AuditHasher computes an entry's chain hash from the previous entry's hash.
type AuditHasher func(prevHash string, e *AuditEntry) (string, error)

// Store is a keygate database.
type Store interface {
	Reader
	// Update runs fn in one read-write transaction: it commits when fn returns nil and rolls back
	// otherwise. fn may be retried on serialization failures, so it must not have side effects
	// outside the transaction.
	Update(ctx context.Context, fn func(Tx) error) error

	// ScanAudit calls fn for every audit entry in ascending seq order.
	ScanAudit(ctx context.Context, fn func(*AuditEntry) error) error

	// AddUsage adds to the durable daily counters (upsert, one transaction for the batch).
	AddUsage(ctx context.Context, deltas []UsageDelta) error
	// TouchKeys records last_used_at for keys (batched by the caller).
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error
	// PurgeIdempotency deletes records created before t.
	PurgeIdempotency(ctx context.Context, before time.Time) error

	// Ping checks that the database answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}
