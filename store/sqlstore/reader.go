package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/keygate/keygate"
)

// queryer is what a *sql.DB and a *sql.Tx have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// reader implements keygate.Reader on a database or inside a transaction.
type reader struct {
	q  queryer
	sq *sqlText
}

type scanner interface{ Scan(dest ...any) error }

const keyColumns = `id, consumer_id, name, kind, env, start, scopes, plan, rate_limits, quota, ip_allow,
	referrer_allow, expires_at, state, revoked_at, revoke_reason, rotated_from, rotated_to, max_age,
	last_used_at, created_at, updated_at, metadata, hash, limiter_id`

const keyColumnCount = 25

func scanKey(r scanner, now time.Time) (*keygate.Key, error) {
	var (
		k                                           keygate.Key
		scopes, limits, ipAllow, refAllow, metadata string
		quota, revokeReason, rotatedFrom, rotatedTo sql.NullString
		expiresAt, revokedAt, maxAge, lastUsed      sql.NullInt64
		createdAt, updatedAt                        int64
	)
	err := r.Scan(&k.ID, &k.ConsumerID, &k.Name, &k.Kind, &k.Env, &k.Start, &scopes, &k.Plan, &limits,
		&quota, &ipAllow, &refAllow, &expiresAt, &k.State, &revokedAt, &revokeReason, &rotatedFrom,
		&rotatedTo, &maxAge, &lastUsed, &createdAt, &updatedAt, &metadata, &k.Hash, &k.LimiterID)
	if err != nil {
		return nil, err
	}
	if err := decodeAll(
		func() error { return fromJSON(scopes, &k.Scopes) },
		func() error { return fromJSON(limits, &k.RateLimits) },
		func() error { return fromJSON(ipAllow, &k.IPAllow) },
		func() error { return fromJSON(refAllow, &k.ReferrerAllow) },
		func() error { return fromJSON(metadata, &k.Metadata) },
		func() (err error) { k.Quota, err = quotaOf(quota); return err },
	); err != nil {
		return nil, fmt.Errorf("key %s: %w", k.ID, err)
	}
	k.ExpiresAt, k.RevokedAt, k.LastUsedAt = timePtr(expiresAt), timePtr(revokedAt), timePtr(lastUsed)
	k.RevokeReason, k.RotatedFrom, k.RotatedTo = stringPtr(revokeReason), stringPtr(rotatedFrom), stringPtr(rotatedTo)
	k.MaxAge = durationPtr(maxAge)
	k.CreatedAt, k.UpdatedAt = fromMicros(createdAt), fromMicros(updatedAt)
	k.Status = k.StatusAt(now)
	return &k, nil
}

func decodeAll(fns ...func() error) error {
	for _, fn := range fns {
		if err := fn(); err != nil {
			return err
		}
	}
	return nil
}

// KeyByHash finds a key by the SHA-256 of its plaintext (one read of the unique hash index).
// Status is computed against the current time.
func (r reader) KeyByHash(ctx context.Context, hash []byte) (*keygate.Key, error) {
	row := r.q.QueryRowContext(ctx, r.sq.get(`SELECT `+keyColumns+` FROM api_keys WHERE hash = ?`), hash)
	k, err := scanKey(row, time.Now())
	return k, r.sq.mapErr(err, "key")
}

// Key finds a key by id. Status is computed against the current time.
func (r reader) Key(ctx context.Context, id string) (*keygate.Key, error) {
	row := r.q.QueryRowContext(ctx, r.sq.get(`SELECT `+keyColumns+` FROM api_keys WHERE id = ?`), id)
	k, err := scanKey(row, time.Now())
	return k, r.sq.mapErr(err, "key")
}

// Keys lists keys newest first. Status is computed against f.Now (default: the current time).
func (r reader) Keys(ctx context.Context, f keygate.KeyFilter) ([]*keygate.Key, string, error) {
	now := f.Now
	if now.IsZero() {
		now = time.Now()
	}
	var where []string
	var args []any
	if f.ConsumerID != "" {
		where, args = append(where, "consumer_id = ?"), append(args, f.ConsumerID)
	}
	nowUS := micros(now)
	switch f.Status {
	case "":
	case keygate.StateRevoked:
		where = append(where, "state = 'revoked'")
	case keygate.StatusExpired:
		where, args = append(where, "state <> 'revoked' AND expires_at <= ?"), append(args, nowUS)
	case keygate.StateDisabled, keygate.StateActive:
		where = append(where, "state = ? AND (expires_at IS NULL OR expires_at > ?)")
		args = append(args, f.Status, nowUS)
	default:
		return nil, "", keygate.Errorf(keygate.CodeBadRequest, "unknown key status %q", f.Status)
	}
	var keys []*keygate.Key
	next, err := r.listByTime(ctx, "api_keys", keyColumns, "id", where, args, f.ListParams,
		func(rows *sql.Rows) (time.Time, string, error) {
			k, err := scanKey(rows, now)
			if err != nil {
				return time.Time{}, "", err
			}
			keys = append(keys, k)
			return k.CreatedAt, k.ID, nil
		})
	if err != nil {
		return nil, "", err
	}
	return keys, next, nil
}

// listByTime runs a newest-first keyset page over table, ordered by (created_at, idCol) DESC.
// scan reads one row and returns its sort key; the rows after the page's last are not scanned.
func (r reader) listByTime(ctx context.Context, table, columns, idCol string, where []string, args []any,
	p keygate.ListParams, scan func(*sql.Rows) (time.Time, string, error)) (string, error) {
	if p.Cursor != "" {
		at, id, err := parseTimeCursor(p.Cursor)
		if err != nil {
			return "", err
		}
		// The leading created_at <= ? is an index range on both databases; the rest only filters
		// the rows of the cursor's own creation time.
		where = append(where, "created_at <= ? AND (created_at < ? OR "+idCol+" < ?)")
		args = append(args, at, at, id)
	}
	limit := limitOf(p)
	var b strings.Builder
	b.WriteString("SELECT " + columns + " FROM " + table)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY created_at DESC, " + idCol + " DESC LIMIT ?")
	args = append(args, limit+1)
	rows, err := r.q.QueryContext(ctx, r.sq.get(b.String()), args...)
	if err != nil {
		return "", r.sq.mapErr(err, "list "+table)
	}
	defer rows.Close()
	var n int
	var lastAt time.Time
	var lastID string
	more := false
	for rows.Next() {
		if n == limit {
			more = true
			break
		}
		lastAt, lastID, err = scan(rows)
		if err != nil {
			return "", r.sq.mapErr(err, "list "+table)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return "", r.sq.mapErr(err, "list "+table)
	}
	if !more {
		return "", nil
	}
	return timeCursor(lastAt, lastID), nil
}

// CountKeys counts the keys of a consumer that are not revoked.
func (r reader) CountKeys(ctx context.Context, consumerID string) (int, error) {
	var n int
	err := r.q.QueryRowContext(ctx, r.sq.get(`SELECT COUNT(*) FROM api_keys WHERE consumer_id = ? AND state <> 'revoked'`),
		consumerID).Scan(&n)
	return n, r.sq.mapErr(err, "count keys")
}

const consumerColumns = `id, name, email, plan, rate_limits, quota, metadata, created_at, updated_at, deleted_at`

func scanConsumer(r scanner) (*keygate.Consumer, error) {
	var (
		c                    keygate.Consumer
		limits, metadata     string
		quota                sql.NullString
		createdAt, updatedAt int64
		deletedAt            sql.NullInt64
	)
	if err := r.Scan(&c.ID, &c.Name, &c.Email, &c.Plan, &limits, &quota, &metadata, &createdAt, &updatedAt, &deletedAt); err != nil {
		return nil, err
	}
	if err := decodeAll(
		func() error { return fromJSON(limits, &c.RateLimits) },
		func() error { return fromJSON(metadata, &c.Metadata) },
		func() (err error) { c.Quota, err = quotaOf(quota); return err },
	); err != nil {
		return nil, fmt.Errorf("consumer %s: %w", c.ID, err)
	}
	c.CreatedAt, c.UpdatedAt, c.DeletedAt = fromMicros(createdAt), fromMicros(updatedAt), timePtr(deletedAt)
	return &c, nil
}

// Consumer finds a consumer that is not deleted.
func (r reader) Consumer(ctx context.Context, id string) (*keygate.Consumer, error) {
	row := r.q.QueryRowContext(ctx, r.sq.get(`SELECT `+consumerColumns+` FROM consumers WHERE id = ? AND deleted_at IS NULL`), id)
	c, err := scanConsumer(row)
	return c, r.sq.mapErr(err, "consumer")
}

// Consumers lists consumers that are not deleted, newest first.
func (r reader) Consumers(ctx context.Context, p keygate.ListParams) ([]*keygate.Consumer, string, error) {
	var out []*keygate.Consumer
	next, err := r.listByTime(ctx, "consumers", consumerColumns, "id", []string{"deleted_at IS NULL"}, nil, p,
		func(rows *sql.Rows) (time.Time, string, error) {
			c, err := scanConsumer(rows)
			if err != nil {
				return time.Time{}, "", err
			}
			out = append(out, c)
			return c.CreatedAt, c.ID, nil
		})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

const planColumns = `name, rate_limits, quota, scopes_allowed, max_age, managed_by, created_at, updated_at`

func scanPlan(r scanner) (*keygate.Plan, error) {
	var (
		p                    keygate.Plan
		limits, scopes       string
		quota                sql.NullString
		maxAge               sql.NullInt64
		createdAt, updatedAt int64
	)
	if err := r.Scan(&p.Name, &limits, &quota, &scopes, &maxAge, &p.ManagedBy, &createdAt, &updatedAt); err != nil {
		return nil, err
	}
	if err := decodeAll(
		func() error { return fromJSON(limits, &p.RateLimits) },
		func() error { return fromJSON(scopes, &p.ScopesAllowed) },
		func() (err error) { p.Quota, err = quotaOf(quota); return err },
	); err != nil {
		return nil, fmt.Errorf("plan %s: %w", p.Name, err)
	}
	p.MaxAge = durationPtr(maxAge)
	p.CreatedAt, p.UpdatedAt = fromMicros(createdAt), fromMicros(updatedAt)
	return &p, nil
}

// Plan finds a plan by name.
func (r reader) Plan(ctx context.Context, name string) (*keygate.Plan, error) {
	row := r.q.QueryRowContext(ctx, r.sq.get(`SELECT `+planColumns+` FROM plans WHERE name = ?`), name)
	p, err := scanPlan(row)
	return p, r.sq.mapErr(err, "plan")
}

// Plans lists plans, newest first.
func (r reader) Plans(ctx context.Context, lp keygate.ListParams) ([]*keygate.Plan, string, error) {
	var out []*keygate.Plan
	next, err := r.listByTime(ctx, "plans", planColumns, "name", nil, nil, lp,
		func(rows *sql.Rows) (time.Time, string, error) {
			p, err := scanPlan(rows)
			if err != nil {
				return time.Time{}, "", err
			}
			out = append(out, p)
			return p.CreatedAt, p.Name, nil
		})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// PlanInUse reports whether a consumer that is not deleted or a key that is not revoked names
// the plan.
func (r reader) PlanInUse(ctx context.Context, name string) (bool, error) {
	var used bool
	err := r.q.QueryRowContext(ctx, r.sq.get(`SELECT
		EXISTS (SELECT 1 FROM consumers WHERE plan = ? AND deleted_at IS NULL) OR
		EXISTS (SELECT 1 FROM api_keys WHERE plan = ? AND state <> 'revoked')`), name, name).Scan(&used)
	return used, r.sq.mapErr(err, "plan in use")
}

const rootKeyColumns = `id, name, start, permissions, created_at, revoked_at, last_used_at, created_by, hash`

func scanRootKey(r scanner) (*keygate.RootKey, error) {
	var (
		k                   keygate.RootKey
		perms               string
		createdAt           int64
		revokedAt, lastUsed sql.NullInt64
	)
	if err := r.Scan(&k.ID, &k.Name, &k.Start, &perms, &createdAt, &revokedAt, &lastUsed, &k.CreatedBy, &k.Hash); err != nil {
		return nil, err
	}
	if err := fromJSON(perms, &k.Permissions); err != nil {
		return nil, fmt.Errorf("root key %s: %w", k.ID, err)
	}
	k.CreatedAt, k.RevokedAt, k.LastUsedAt = fromMicros(createdAt), timePtr(revokedAt), timePtr(lastUsed)
	return &k, nil
}

// RootKey finds a root key by id.
func (r reader) RootKey(ctx context.Context, id string) (*keygate.RootKey, error) {
	row := r.q.QueryRowContext(ctx, r.sq.get(`SELECT `+rootKeyColumns+` FROM root_keys WHERE id = ?`), id)
	k, err := scanRootKey(row)
	return k, r.sq.mapErr(err, "root key")
}

// RootKeyByHash finds a root key by the SHA-256 of its plaintext.
func (r reader) RootKeyByHash(ctx context.Context, hash []byte) (*keygate.RootKey, error) {
	row := r.q.QueryRowContext(ctx, r.sq.get(`SELECT `+rootKeyColumns+` FROM root_keys WHERE hash = ?`), hash)
	k, err := scanRootKey(row)
	return k, r.sq.mapErr(err, "root key")
}

// RootKeys lists root keys, newest first.
func (r reader) RootKeys(ctx context.Context, p keygate.ListParams) ([]*keygate.RootKey, string, error) {
	var out []*keygate.RootKey
	next, err := r.listByTime(ctx, "root_keys", rootKeyColumns, "id", nil, nil, p,
		func(rows *sql.Rows) (time.Time, string, error) {
			k, err := scanRootKey(rows)
			if err != nil {
				return time.Time{}, "", err
			}
			out = append(out, k)
			return k.CreatedAt, k.ID, nil
		})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

const auditColumns = `seq, ts, actor, action, target_type, target_id, ip, result, details, hash`

func scanAudit(r scanner) (*keygate.AuditEntry, error) {
	var (
		e       keygate.AuditEntry
		ts      int64
		details string
	)
	if err := r.Scan(&e.Seq, &ts, &e.Actor, &e.Action, &e.TargetType, &e.TargetID, &e.IP, &e.Result, &details, &e.Hash); err != nil {
		return nil, err
	}
	if err := fromJSON(details, &e.Details); err != nil {
		return nil, fmt.Errorf("audit entry %d: %w", e.Seq, err)
	}
	e.TS = fromMicros(ts)
	return &e, nil
}

func (r reader) auditQuery(ctx context.Context, q string, args ...any) ([]*keygate.AuditEntry, error) {
	rows, err := r.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, r.sq.mapErr(err, "audit log")
	}
	defer rows.Close()
	var out []*keygate.AuditEntry
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, r.sq.mapErr(err, "audit log")
		}
		out = append(out, e)
	}
	return out, r.sq.mapErr(rows.Err(), "audit log")
}

// AuditEntries lists audit entries newest first. From and To select ts in [From, To).
func (r reader) AuditEntries(ctx context.Context, f keygate.AuditFilter) ([]*keygate.AuditEntry, string, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if f.Cursor != "" {
		seq, err := parseSeqCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		add("seq < ?", seq)
	}
	if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.Target != "" {
		add("target_id = ?", f.Target)
	}
	if f.From != nil {
		add("ts >= ?", micros(*f.From))
	}
	if f.To != nil {
		add("ts < ?", micros(*f.To))
	}
	limit := limitOf(f.ListParams)
	q := `SELECT ` + auditColumns + ` FROM audit_log`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	out, err := r.auditQuery(ctx, r.sq.get(q), append(args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	if len(out) <= limit {
		return out, "", nil
	}
	out = out[:limit]
	return out, seqCursor(out[limit-1].Seq), nil
}

// AuditHead returns the newest entry's seq and hash (0 and "" for an empty log).
func (r reader) AuditHead(ctx context.Context) (int64, string, error) {
	var seq int64
	var hash string
	err := r.q.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	return seq, hash, r.sq.mapErr(err, "audit head")
}

// Idempotency returns the record for (scope, key) created at or after since.
func (r reader) Idempotency(ctx context.Context, scope, key string, since time.Time) (*keygate.IdempotencyRecord, error) {
	rec := keygate.IdempotencyRecord{Scope: scope, Key: key}
	var createdAt int64
	err := r.q.QueryRowContext(ctx, r.sq.get(`SELECT request_hash, status, body, created_at FROM idempotency
		WHERE scope = ? AND idem_key = ? AND created_at >= ?`), scope, key, micros(since)).
		Scan(&rec.RequestHash, &rec.Status, &rec.Body, &createdAt)
	if err != nil {
		return nil, r.sq.mapErr(err, "idempotency record")
	}
	rec.CreatedAt = fromMicros(createdAt)
	return &rec, nil
}

// UsageByLimiter sums a limiter's daily counters over the UTC days [from, to).
func (r reader) UsageByLimiter(ctx context.Context, limiterID string, from, to time.Time) (int64, error) {
	return r.usageSum(ctx, "limiter_id", limiterID, from, to)
}

// UsageByConsumer sums a consumer's daily counters over the UTC days [from, to).
func (r reader) UsageByConsumer(ctx context.Context, consumerID string, from, to time.Time) (int64, error) {
	return r.usageSum(ctx, "consumer_id", consumerID, from, to)
}

func (r reader) usageSum(ctx context.Context, col, id string, from, to time.Time) (int64, error) {
	var n int64
	err := r.q.QueryRowContext(ctx, r.sq.get(`SELECT COALESCE(SUM(requests), 0) FROM usage_daily
		WHERE `+col+` = ? AND day >= ? AND day < ?`), id, micros(from), micros(to)).Scan(&n)
	return n, r.sq.mapErr(err, "usage")
}

// UsageRows lists per-key daily counters of a consumer ("" = all) over [from, to), by day then key.
func (r reader) UsageRows(ctx context.Context, consumerID string, from, to time.Time) ([]keygate.UsageRow, error) {
	q := `SELECT day, consumer_id, key_id, requests FROM usage_daily WHERE day >= ? AND day < ?`
	args := []any{micros(from), micros(to)}
	if consumerID != "" {
		q += ` AND consumer_id = ?`
		args = append(args, consumerID)
	}
	rows, err := r.q.QueryContext(ctx, r.sq.get(q+` ORDER BY day, key_id`), args...)
	if err != nil {
		return nil, r.sq.mapErr(err, "usage rows")
	}
	defer rows.Close()
	var out []keygate.UsageRow
	for rows.Next() {
		var u keygate.UsageRow
		var day int64
		if err := rows.Scan(&day, &u.ConsumerID, &u.KeyID, &u.Requests); err != nil {
			return nil, r.sq.mapErr(err, "usage rows")
		}
		u.Day = fromMicros(day)
		out = append(out, u)
	}
	return out, r.sq.mapErr(rows.Err(), "usage rows")
}
