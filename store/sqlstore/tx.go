package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/keygate/keygate"
)

// tx implements keygate.Tx.
type tx struct {
	reader
	t      *sql.Tx
	hasher keygate.AuditHasher
}

var _ keygate.Tx = (*tx)(nil)

// insertChunk is how many rows one INSERT statement of CreateKeys carries: the full-size
// statement is prepared once per connection, and 100 × 25 parameters stay far below every
// database's limit.
const insertChunk = 100

// CreateKeys inserts keys with multi-row INSERT statements. An empty State is stored as active
// and an empty LimiterID as the key's own id.
func (t *tx) CreateKeys(ctx context.Context, keys ...*keygate.Key) error {
	for len(keys) > 0 {
		n := min(len(keys), insertChunk)
		args := make([]any, 0, n*keyColumnCount)
		for _, k := range keys[:n] {
			if k.State == "" {
				k.State = keygate.StateActive
			}
			if k.LimiterID == "" {
				k.LimiterID = k.ID
			}
			a, err := keyArgs(k)
			if err != nil {
				return err
			}
			args = append(args, k.ID)
			args = append(args, a...)
		}
		q := t.sq.get(insertSQL("api_keys", keyColumns, keyColumnCount, n))
		if _, err := t.q.ExecContext(ctx, q, args...); err != nil {
			return t.sq.mapErr(err, "key")
		}
		keys = keys[n:]
	}
	return nil
}

// keyArgs returns the key's columns after id, in keyColumns order.
func keyArgs(k *keygate.Key) ([]any, error) {
	var (
		scopes, limits, ipAllow, refAllow, metadata string
		quota                                       sql.NullString
	)
	if err := decodeAll(
		func() (err error) { scopes, err = jsonText(k.Scopes); return err },
		func() (err error) { limits, err = jsonText(k.RateLimits); return err },
		func() (err error) { ipAllow, err = jsonText(k.IPAllow); return err },
		func() (err error) { refAllow, err = jsonText(k.ReferrerAllow); return err },
		func() (err error) { metadata, err = jsonText(k.Metadata); return err },
		func() (err error) { quota, err = quotaText(k.Quota); return err },
	); err != nil {
		return nil, keygate.Errorf(keygate.CodeBadRequest, "key %s: %v", k.ID, err)
	}
	hash := k.Hash
	if hash == nil {
		hash = []byte{}
	}
	return []any{k.ConsumerID, k.Name, k.Kind, k.Env, k.Start, scopes, k.Plan, limits, quota, ipAllow,
		refAllow, nullMicros(k.ExpiresAt), k.State, nullMicros(k.RevokedAt), nullString(k.RevokeReason),
		nullString(k.RotatedFrom), nullString(k.RotatedTo), nullDuration(k.MaxAge), nullMicros(k.LastUsedAt),
		micros(k.CreatedAt), micros(k.UpdatedAt), metadata, hash, k.LimiterID}, nil
}

// insertSQL returns INSERT INTO table (columns) VALUES (?, …), … with rows rows.
func insertSQL(table, columns string, ncol, rows int) string {
	one := "(" + strings.Repeat("?, ", ncol-1) + "?)"
	var b strings.Builder
	b.Grow(len(columns) + 32 + rows*(len(one)+2))
	b.WriteString("INSERT INTO " + table + " (" + columns + ") VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(one)
	}
	return b.String()
}

// UpdateKey writes every mutable field of k. The hash, owner and creation time never change; a
// revoked key stays revoked (revocation is final), an empty State keeps the stored one, and
// last_used_at never moves backwards (TouchKeys may have written a newer time).
func (t *tx) UpdateKey(ctx context.Context, k *keygate.Key) error {
	a, err := keyArgs(k)
	if err != nil {
		return err
	}
	// a: consumer_id, name, kind, env, start, scopes, plan, rate_limits, quota, ip_allow,
	// referrer_allow, expires_at, state, revoked_at, revoke_reason, rotated_from, rotated_to,
	// max_age, last_used_at, created_at, updated_at, metadata, hash, limiter_id
	res, err := t.q.ExecContext(ctx, t.sq.get(`UPDATE api_keys SET name = ?, kind = ?, env = ?, start = ?,
		scopes = ?, plan = ?, rate_limits = ?, quota = ?, ip_allow = ?, referrer_allow = ?, expires_at = ?,
		state = CASE WHEN state = 'revoked' OR ? = '' THEN state ELSE ? END,
		revoked_at = ?, revoke_reason = ?, rotated_from = ?, rotated_to = ?, max_age = ?,
		last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END,
		updated_at = ?, metadata = ?, limiter_id = ? WHERE id = ?`),
		a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[12], a[13], a[14], a[15],
		a[16], a[17], a[18], a[18], a[20], a[21], a[23], k.ID)
	return t.affected(res, err, "key "+k.ID)
}

// affected maps the result of a write to a single row: no row is NotFound.
func (t *tx) affected(res sql.Result, err error, what string) error {
	if err != nil {
		return t.sq.mapErr(err, what)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return t.sq.mapErr(err, what)
	}
	if n == 0 {
		return keygate.Errorf(keygate.CodeNotFound, "%s not found", what)
	}
	return nil
}

func consumerArgs(c *keygate.Consumer) (limits string, quota sql.NullString, metadata string, err error) {
	err = decodeAll(
		func() (err error) { limits, err = jsonText(c.RateLimits); return err },
		func() (err error) { metadata, err = jsonText(c.Metadata); return err },
		func() (err error) { quota, err = quotaText(c.Quota); return err },
	)
	if err != nil {
		err = keygate.Errorf(keygate.CodeBadRequest, "consumer %s: %v", c.ID, err)
	}
	return limits, quota, metadata, err
}

// CreateConsumer inserts c.
func (t *tx) CreateConsumer(ctx context.Context, c *keygate.Consumer) error {
	limits, quota, metadata, err := consumerArgs(c)
	if err != nil {
		return err
	}
	_, err = t.q.ExecContext(ctx, t.sq.get(`INSERT INTO consumers (`+consumerColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		c.ID, c.Name, c.Email, c.Plan, limits, quota, metadata, micros(c.CreatedAt), micros(c.UpdatedAt), nullMicros(c.DeletedAt))
	return t.sq.mapErr(err, "consumer "+c.ID)
}

// UpdateConsumer writes every mutable field of a consumer that is not deleted.
func (t *tx) UpdateConsumer(ctx context.Context, c *keygate.Consumer) error {
	limits, quota, metadata, err := consumerArgs(c)
	if err != nil {
		return err
	}
	res, err := t.q.ExecContext(ctx, t.sq.get(`UPDATE consumers SET name = ?, email = ?, plan = ?, rate_limits = ?,
		quota = ?, metadata = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL`),
		c.Name, c.Email, c.Plan, limits, quota, metadata, micros(c.UpdatedAt), c.ID)
	return t.affected(res, err, "consumer "+c.ID)
}

// DeleteConsumer marks a consumer deleted; purge also erases its name and email. Purging a
// consumer that is already deleted erases them too (a later erasure request).
func (t *tx) DeleteConsumer(ctx context.Context, id string, at time.Time, purge bool) error {
	var res sql.Result
	var err error
	if purge {
		res, err = t.q.ExecContext(ctx, t.sq.get(`UPDATE consumers SET name = '', email = '',
			deleted_at = COALESCE(deleted_at, ?), updated_at = ? WHERE id = ?`), micros(at), micros(at), id)
	} else {
		res, err = t.q.ExecContext(ctx, t.sq.get(`UPDATE consumers SET deleted_at = ?, updated_at = ?
			WHERE id = ? AND deleted_at IS NULL`), micros(at), micros(at), id)
	}
	return t.affected(res, err, "consumer "+id)
}

func planArgs(p *keygate.Plan) (limits string, quota sql.NullString, scopes string, err error) {
	err = decodeAll(
		func() (err error) { limits, err = jsonText(p.RateLimits); return err },
		func() (err error) { scopes, err = jsonText(p.ScopesAllowed); return err },
		func() (err error) { quota, err = quotaText(p.Quota); return err },
	)
	if err != nil {
		err = keygate.Errorf(keygate.CodeBadRequest, "plan %s: %v", p.Name, err)
	}
	return limits, quota, scopes, err
}

// CreatePlan inserts p.
func (t *tx) CreatePlan(ctx context.Context, p *keygate.Plan) error {
	limits, quota, scopes, err := planArgs(p)
	if err != nil {
		return err
	}
	_, err = t.q.ExecContext(ctx, t.sq.get(`INSERT INTO plans (`+planColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		p.Name, limits, quota, scopes, nullDuration(p.MaxAge), p.ManagedBy, micros(p.CreatedAt), micros(p.UpdatedAt))
	return t.sq.mapErr(err, "plan "+p.Name)
}

// UpdatePlan writes every mutable field of p.
func (t *tx) UpdatePlan(ctx context.Context, p *keygate.Plan) error {
	limits, quota, scopes, err := planArgs(p)
	if err != nil {
		return err
	}
	res, err := t.q.ExecContext(ctx, t.sq.get(`UPDATE plans SET rate_limits = ?, quota = ?, scopes_allowed = ?,
		max_age = ?, managed_by = ?, updated_at = ? WHERE name = ?`),
		limits, quota, scopes, nullDuration(p.MaxAge), p.ManagedBy, micros(p.UpdatedAt), p.Name)
	return t.affected(res, err, "plan "+p.Name)
}

// DeletePlan deletes a plan. Whether it is in use is the caller's check (PlanInUse).
func (t *tx) DeletePlan(ctx context.Context, name string) error {
	res, err := t.q.ExecContext(ctx, t.sq.get(`DELETE FROM plans WHERE name = ?`), name)
	return t.affected(res, err, "plan "+name)
}

// CreateRootKey inserts r.
func (t *tx) CreateRootKey(ctx context.Context, r *keygate.RootKey) error {
	perms, err := jsonText(r.Permissions)
	if err != nil {
		return keygate.Errorf(keygate.CodeBadRequest, "root key %s: %v", r.ID, err)
	}
	hash := r.Hash
	if hash == nil {
		hash = []byte{}
	}
	_, err = t.q.ExecContext(ctx, t.sq.get(`INSERT INTO root_keys (`+rootKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		r.ID, r.Name, r.Start, perms, micros(r.CreatedAt), nullMicros(r.RevokedAt), nullMicros(r.LastUsedAt), r.CreatedBy, hash)
	return t.sq.mapErr(err, "root key "+r.ID)
}

// RevokeRootKey sets revoked_at (once: revoking again keeps the first time).
func (t *tx) RevokeRootKey(ctx context.Context, id string, at time.Time) error {
	res, err := t.q.ExecContext(ctx, t.sq.get(`UPDATE root_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`), micros(at), id)
	return t.affected(res, err, "root key "+id)
}

// SetRootKeyPermissions replaces a root key's permissions.
func (t *tx) SetRootKeyPermissions(ctx context.Context, id string, perms []string) error {
	text, err := jsonText(perms)
	if err != nil {
		return keygate.Errorf(keygate.CodeBadRequest, "root key %s: %v", id, err)
	}
	res, err := t.q.ExecContext(ctx, t.sq.get(`UPDATE root_keys SET permissions = ? WHERE id = ?`), text, id)
	return t.affected(res, err, "root key "+id)
}

// AppendAudit chains e on the head of the log and inserts it. The head row is locked (FOR UPDATE
// on PostgreSQL; SQLite's write transactions are serialised), so appends of every node are
// strictly ordered. e.TS is normalised to UTC microseconds first, so that the hashed entry is
// exactly the one read back.
func (t *tx) AppendAudit(ctx context.Context, e *keygate.AuditEntry) error {
	q := `SELECT seq, hash FROM audit_head WHERE id = 1`
	if t.sq.d.ForUpdate {
		q += ` FOR UPDATE`
	}
	var prevSeq int64
	var prevHash string
	if err := t.q.QueryRowContext(ctx, q).Scan(&prevSeq, &prevHash); err != nil {
		return t.sq.mapErr(err, "audit head")
	}
	e.TS = e.TS.UTC().Truncate(time.Microsecond)
	e.Seq = prevSeq + 1
	e.Hash = ""
	h, err := t.hasher(prevHash, e)
	if err != nil {
		e.Seq = 0
		return fmt.Errorf("audit hash: %w", err)
	}
	e.Hash = h
	details, err := jsonText(e.Details)
	if err != nil {
		return keygate.Errorf(keygate.CodeBadRequest, "audit entry: %v", err)
	}
	if _, err := t.q.ExecContext(ctx, t.sq.get(`INSERT INTO audit_log (`+auditColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		e.Seq, micros(e.TS), e.Actor, e.Action, e.TargetType, e.TargetID, e.IP, e.Result, details, e.Hash); err != nil {
		return t.sq.mapErr(err, "audit entry")
	}
	if _, err := t.q.ExecContext(ctx, t.sq.get(`UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`), e.Seq, e.Hash); err != nil {
		return t.sq.mapErr(err, "audit head")
	}
	return nil
}

// idempotencyTTL is how long an idempotency record blocks its key: an older record with the same
// scope and key is replaced (SPEC §3: a repeat within 24 h returns the first answer).
const idempotencyTTL = 24 * time.Hour

// PutIdempotency stores r. A live record with the same scope and key (a concurrent request that
// won the race) is a Conflict; one older than 24 h is replaced.
func (t *tx) PutIdempotency(ctx context.Context, r *keygate.IdempotencyRecord) error {
	body, reqHash := r.Body, r.RequestHash
	if body == nil {
		body = []byte{}
	}
	if reqHash == nil {
		reqHash = []byte{}
	}
	res, err := t.q.ExecContext(ctx, t.sq.get(`INSERT INTO idempotency (scope, idem_key, request_hash, status, body, created_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (scope, idem_key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status,
			body = excluded.body, created_at = excluded.created_at
		WHERE idempotency.created_at < ?`),
		r.Scope, r.Key, reqHash, r.Status, body, micros(r.CreatedAt), micros(r.CreatedAt.Add(-idempotencyTTL)))
	if err != nil {
		return t.sq.mapErr(err, "idempotency record")
	}
	if n, err := res.RowsAffected(); err != nil {
		return t.sq.mapErr(err, "idempotency record")
	} else if n == 0 {
		return keygate.Errorf(keygate.CodeConflict, "idempotency key %q is already in use", r.Key)
	}
	return nil
}

// DeleteIdempotency removes the record of (scope, key), if any.
func (t *tx) DeleteIdempotency(ctx context.Context, scope, key string) error {
	_, err := t.q.ExecContext(ctx, t.sq.get(`DELETE FROM idempotency WHERE scope = ? AND idem_key = ?`), scope, key)
	if err != nil {
		return t.sq.mapErr(err, "idempotency record")
	}
	return nil
}

// Lock takes a transaction-scoped named lock (PostgreSQL advisory lock; a no-op where write
// transactions are serialised anyway).
func (t *tx) Lock(ctx context.Context, name string) error {
	if t.sq.d.LockSQL == "" {
		return nil
	}
	_, err := t.q.ExecContext(ctx, t.sq.get(t.sq.d.LockSQL), name)
	return t.sq.mapErr(err, "lock "+name)
}
