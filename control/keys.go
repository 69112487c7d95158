package control

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
)

// MaxLeakedPerCall bounds POST /v1/keys/leaked.
const MaxLeakedPerCall = 1000

func kindTag(kind string) string {
	if kind == keygate.KindPublishable {
		return keys.TagPublishable
	}
	return keys.TagSecret
}

// CreateKey issues a key and returns it with its plaintext, shown once (audit key.create, event
// key.created).
func (s *Service) CreateKey(ctx context.Context, a Actor, in KeyCreate) (*keygate.Key, string, error) {
	if in.ConsumerID == "" {
		return nil, "", keygate.Errorf(keygate.CodeBadRequest, "consumer_id is required: every key has an owner")
	}
	k := &keygate.Key{
		ID: keys.NewID("key"), ConsumerID: in.ConsumerID, Name: in.Name, Kind: in.Kind, Env: in.Env,
		Scopes: in.Scopes, Plan: in.Plan, RateLimits: in.RateLimits, Quota: storedQuota(in.Quota),
		IPAllow: in.IPAllow, ReferrerAllow: in.ReferrerAllow, ExpiresAt: storedTime(in.ExpiresAt), MaxAge: in.MaxAge,
		Metadata: in.Metadata, State: keygate.StateActive,
	}
	if k.Kind == "" {
		k.Kind = keygate.KindSecret
	}
	if k.Env == "" {
		k.Env = keygate.EnvLive
	}
	now := s.clock()
	if in.TTL != nil {
		if in.ExpiresAt != nil {
			return nil, "", keygate.Errorf(keygate.CodeBadRequest, "give ttl or expires_at, not both")
		}
		if in.TTL.D() <= 0 {
			return nil, "", keygate.Errorf(keygate.CodeBadRequest, "ttl must be positive")
		}
		t := now.Add(in.TTL.D())
		k.ExpiresAt = &t
	}
	if err := checkExpiry(k.ExpiresAt, now); err != nil {
		return nil, "", err
	}
	if err := k.Validate(); err != nil {
		return nil, "", err
	}
	plaintext, err := keys.Generate(s.prefix, kindTag(k.Kind), k.Env)
	if err != nil {
		return nil, "", err
	}
	s.seal(k, plaintext)
	err = s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		k.CreatedAt, k.UpdatedAt = r.now, r.now
		if err := lockConsumer(ctx, r.tx, k.ConsumerID); err != nil {
			return err
		}
		c, err := r.tx.Consumer(ctx, k.ConsumerID)
		if err != nil {
			if keygate.ErrorCode(err) == keygate.CodeNotFound {
				return keygate.Errorf(keygate.CodeNotFound, "consumer %q not found", k.ConsumerID)
			}
			return err
		}
		if err := checkPlan(ctx, r.tx, k, c); err != nil {
			return err
		}
		if err := r.tx.CreateKeys(ctx, k); err != nil {
			return err
		}
		r.then(func() {
			s.inv.KeyChanged(k.ID, k.Hash)
			s.events.Emit(ctx, keygate.EventKeyCreated, keyEvent(k, nil))
		})
		return r.audit(ctx, "key.create", "key", k.ID, map[string]any{
			"consumer_id": k.ConsumerID, "start": k.Start, "kind": k.Kind, "env": k.Env,
			"scopes": k.Scopes, "plan": k.Plan, "expires_at": k.ExpiresAt,
		})
	})
	if err != nil {
		return nil, "", err
	}
	v, err := s.view(ctx, k, newLookups(s.store))
	return v, plaintext, err
}

// seal fills the fields derived from the plaintext: hash, start and limiter id.
func (s *Service) seal(k *keygate.Key, plaintext string) {
	p, _ := keys.Parse(plaintext, s.prefix)
	h := keys.Hash(plaintext)
	k.Hash = h[:]
	k.Start = keys.Start(plaintext, p)
	if k.LimiterID == "" {
		k.LimiterID = k.ID
	}
}

// storedTime returns t as storage keeps it and answers show it: UTC, truncated to microseconds.
// Without this, the object returned by a change would differ from the one read back later (and
// show the caller's time zone, where SPEC §3 wants UTC).
func storedTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}

func checkExpiry(t *time.Time, now time.Time) error {
	if t != nil && !t.After(now) {
		return keygate.Errorf(keygate.CodeBadRequest, "expires_at must be in the future")
	}
	return nil
}

// checkPlan checks that the key's plan exists and its scopes are within the plan's ceiling.
func checkPlan(ctx context.Context, tx keygate.Tx, k *keygate.Key, c *keygate.Consumer) error {
	if err := requirePlan(ctx, tx, k.Plan); err != nil {
		return err
	}
	name := keygate.PlanName(k, c)
	if name == "" {
		return nil
	}
	p, err := tx.Plan(ctx, name)
	if err != nil {
		if keygate.ErrorCode(err) == keygate.CodeNotFound {
			return nil // the consumer's plan vanished: no ceiling to apply
		}
		return err
	}
	return keygate.CheckCeiling(k.Scopes, p)
}

func keyEvent(k *keygate.Key, extra map[string]any) map[string]any {
	d := map[string]any{"key_id": k.ID, "consumer_id": k.ConsumerID, "start": k.Start, "env": k.Env}
	for n, v := range extra {
		d[n] = v
	}
	return d
}

// Key returns a key object with status, quota usage and rotation_due filled in.
func (s *Service) Key(ctx context.Context, id string) (*keygate.Key, error) {
	k, err := s.store.Key(ctx, id)
	if err != nil {
		return nil, s.readError(err)
	}
	return s.view(ctx, k, newLookups(s.store))
}

// Keys lists key objects newest first.
func (s *Service) Keys(ctx context.Context, f keygate.KeyFilter) ([]*keygate.Key, string, error) {
	if f.Now.IsZero() {
		f.Now = s.clock()
	}
	ks, next, err := s.store.Keys(ctx, f)
	if err != nil {
		return nil, "", s.readError(err)
	}
	l := newLookups(s.store)
	out := make([]*keygate.Key, 0, len(ks))
	for _, k := range ks {
		v, err := s.view(ctx, k, l)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	return out, next, nil
}

// UpdateKey applies a patch (audit key.update). Revoked keys are CodeConflict.
func (s *Service) UpdateKey(ctx context.Context, a Actor, id string, p KeyPatch) (*keygate.Key, error) {
	var k *keygate.Key
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		var err error
		if k, err = lockKey(ctx, r.tx, id); err != nil {
			return err
		}
		if k.State == keygate.StateRevoked {
			return keygate.Errorf(keygate.CodeConflict, "key %s is revoked; revoked keys cannot change", id)
		}
		var changed []string
		set(&changed, "name", p.Name, &k.Name)
		set(&changed, "scopes", p.Scopes, &k.Scopes)
		set(&changed, "plan", p.Plan, &k.Plan)
		set(&changed, "rate_limits", p.RateLimits, &k.RateLimits)
		if p.Quota.Set {
			k.Quota = storedQuota(p.Quota.Value)
			changed = append(changed, "quota")
		}
		set(&changed, "ip_allow", p.IPAllow, &k.IPAllow)
		set(&changed, "referrer_allow", p.ReferrerAllow, &k.ReferrerAllow)
		set(&changed, "expires_at", p.ExpiresAt, &k.ExpiresAt)
		k.ExpiresAt = storedTime(k.ExpiresAt)
		set(&changed, "max_age", p.MaxAge, &k.MaxAge)
		set(&changed, "metadata", p.Metadata, &k.Metadata)
		if p.Status.Set {
			switch p.Status.Value {
			case keygate.StateActive, keygate.StateDisabled:
				k.State = p.Status.Value
				changed = append(changed, "status")
			default:
				return keygate.Errorf(keygate.CodeBadRequest, "status may be set to \"active\" or \"disabled\"; use POST /v1/keys/{id}/revoke to revoke")
			}
		}
		if p.ExpiresAt.Set {
			if err := checkExpiry(k.ExpiresAt, r.now); err != nil {
				return err
			}
		}
		if err := k.Validate(); err != nil {
			return err
		}
		c, err := r.tx.Consumer(ctx, k.ConsumerID)
		if err != nil && keygate.ErrorCode(err) != keygate.CodeNotFound {
			return err
		}
		if err := checkPlan(ctx, r.tx, k, c); err != nil {
			return err
		}
		k.UpdatedAt = r.now
		if err := r.tx.UpdateKey(ctx, k); err != nil {
			return err
		}
		r.then(func() { s.inv.KeyChanged(k.ID, k.Hash) })
		return r.audit(ctx, "key.update", "key", id, map[string]any{"fields": changed, "status": k.State})
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, k, newLookups(s.store))
}

// RevokeKey revokes a key at once (audit key.revoke, event key.revoked). Revoking a revoked key
// is CodeConflict.
func (s *Service) RevokeKey(ctx context.Context, a Actor, id, reason string) (*keygate.Key, error) {
	if err := keygate.ValidateText("reason", reason, keygate.MaxReasonLen); err != nil {
		return nil, err
	}
	var k *keygate.Key
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		var err error
		if k, err = lockKey(ctx, r.tx, id); err != nil {
			return err
		}
		if k.State == keygate.StateRevoked {
			return keygate.Errorf(keygate.CodeConflict, "key %s is already revoked", id)
		}
		return s.revokeInTx(ctx, r, k, reason)
	})
	if err != nil {
		return nil, err
	}
	return s.view(ctx, k, newLookups(s.store))
}

// lockKey takes the key's named lock and reads the key under it. Every transaction that writes a
// key takes it first: on PostgreSQL a copy read without it may be stale, and writing it back would
// undo a concurrent revocation's revoked_at and reason (UpdateKey writes every field).
func lockKey(ctx context.Context, tx keygate.Tx, id string) (*keygate.Key, error) {
	if err := tx.Lock(ctx, "key:"+id); err != nil {
		return nil, err
	}
	return tx.Key(ctx, id)
}

// lockKeys locks the keys ks, in the order of their ids so that two transactions locking several
// keys cannot deadlock, and returns them read again under their locks, by id. Callers lock every
// key before their first audit append, keeping the order UpdateKey follows (key, then audit head).
func lockKeys(ctx context.Context, tx keygate.Tx, ks []*keygate.Key) (map[string]*keygate.Key, error) {
	ids := make([]string, 0, len(ks))
	for _, k := range ks {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	out := make(map[string]*keygate.Key, len(ids))
	for _, id := range ids {
		k, err := lockKey(ctx, tx, id)
		if err != nil {
			return nil, err
		}
		out[id] = k
	}
	return out, nil
}

// revokeInTx revokes k, read under lockKey, inside r's transaction and schedules invalidation and
// the event.
func (s *Service) revokeInTx(ctx context.Context, r *recorder, k *keygate.Key, reason string) error {
	now := r.now
	k.State, k.RevokedAt, k.UpdatedAt = keygate.StateRevoked, &now, now
	if reason != "" {
		k.RevokeReason = &reason
	}
	if err := r.tx.UpdateKey(ctx, k); err != nil {
		return err
	}
	r.then(func() {
		s.inv.KeyChanged(k.ID, k.Hash)
		s.events.Emit(ctx, keygate.EventKeyRevoked, keyEvent(k, map[string]any{"reason": reason}))
	})
	return r.audit(ctx, "key.revoke", "key", k.ID, map[string]any{"consumer_id": k.ConsumerID, "reason": reason})
}

// RotateKey issues a successor with the same settings, owner and limiter state, and makes the old
// key expire after grace (nil: the default 24h; 0: now). Returns the new key and its plaintext
// (audit key.rotate, event key.rotated).
func (s *Service) RotateKey(ctx context.Context, a Actor, id string, grace *time.Duration) (*keygate.Key, string, error) {
	g := s.grace
	if grace != nil {
		g = *grace
	}
	if g < 0 {
		return nil, "", keygate.Errorf(keygate.CodeBadRequest, "grace_period must not be negative")
	}
	var nk *keygate.Key
	var plaintext string
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		old, err := r.tx.Key(ctx, id)
		if err != nil {
			return err
		}
		// Under the owner's lock and the key's, read the key again: a DeleteConsumer or a
		// revocation that committed meanwhile has revoked it.
		if err := lockConsumer(ctx, r.tx, old.ConsumerID); err != nil {
			return err
		}
		if old, err = lockKey(ctx, r.tx, id); err != nil {
			return err
		}
		switch old.StatusAt(r.now) {
		case keygate.StateRevoked:
			return keygate.Errorf(keygate.CodeConflict, "key %s is revoked and cannot be rotated", id)
		case keygate.StatusExpired:
			return keygate.Errorf(keygate.CodeConflict, "key %s has expired and cannot be rotated", id)
		}
		if old.RotatedTo != nil {
			return keygate.Errorf(keygate.CodeConflict, "key %s was already rotated to %s; rotate that key instead", id, *old.RotatedTo)
		}
		nk = &keygate.Key{
			ID: keys.NewID("key"), ConsumerID: old.ConsumerID, Name: old.Name, Kind: old.Kind, Env: old.Env,
			Scopes: old.Scopes, Plan: old.Plan, RateLimits: old.RateLimits, Quota: old.Quota,
			IPAllow: old.IPAllow, ReferrerAllow: old.ReferrerAllow, ExpiresAt: old.ExpiresAt,
			MaxAge: old.MaxAge, Metadata: old.Metadata, State: old.State, LimiterID: old.LimiterID,
			RotatedFrom: &old.ID, CreatedAt: r.now, UpdatedAt: r.now,
		}
		if nk.LimiterID == "" {
			nk.LimiterID = old.ID
		}
		if plaintext, err = keys.Generate(s.prefix, kindTag(nk.Kind), nk.Env); err != nil {
			return err
		}
		s.seal(nk, plaintext)
		end := r.now.Add(g).Truncate(time.Microsecond)
		if old.ExpiresAt == nil || end.Before(*old.ExpiresAt) {
			old.ExpiresAt = &end
		}
		old.RotatedTo, old.UpdatedAt = &nk.ID, r.now
		if err := r.tx.CreateKeys(ctx, nk); err != nil {
			return err
		}
		if err := r.tx.UpdateKey(ctx, old); err != nil {
			return err
		}
		r.then(func() {
			s.inv.KeyChanged(old.ID, old.Hash)
			s.inv.KeyChanged(nk.ID, nk.Hash)
			s.events.Emit(ctx, keygate.EventKeyRotated, keyEvent(old, map[string]any{
				"new_key_id": nk.ID, "old_key_expires_at": old.ExpiresAt}))
		})
		return r.audit(ctx, "key.rotate", "key", old.ID, map[string]any{
			"consumer_id": old.ConsumerID, "new_key_id": nk.ID, "grace_period": keygate.FormatDuration(g),
			"old_key_expires_at": old.ExpiresAt,
		})
	})
	if err != nil {
		return nil, "", err
	}
	v, err := s.view(ctx, nk, newLookups(s.store))
	return v, plaintext, err
}

// RevokeLeaked revokes the keys among plaintexts with reason "leaked" (audit key.revoke, event
// key.leaked). Strings matching no key are counted, never echoed.
func (s *Service) RevokeLeaked(ctx context.Context, a Actor, plaintexts []string) (*LeakedResult, error) {
	if len(plaintexts) == 0 {
		return nil, keygate.Errorf(keygate.CodeBadRequest, "keys must list at least one key")
	}
	if len(plaintexts) > MaxLeakedPerCall {
		return nil, keygate.Errorf(keygate.CodeBadRequest, "keys lists more than %d keys", MaxLeakedPerCall)
	}
	res := &LeakedResult{Revoked: []string{}, AlreadyRevoked: []string{}}
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		*res = LeakedResult{Revoked: []string{}, AlreadyRevoked: []string{}}
		seen := map[[32]byte]bool{}
		var found []*keygate.Key
		for _, p := range plaintexts {
			h := keys.Hash(p)
			if seen[h] {
				continue
			}
			seen[h] = true
			k, err := r.tx.KeyByHash(ctx, h[:])
			if keygate.ErrorCode(err) == keygate.CodeNotFound {
				res.NotFound++
				continue
			} else if err != nil {
				return err
			}
			found = append(found, k)
		}
		locked, err := lockKeys(ctx, r.tx, found)
		if err != nil {
			return err
		}
		for _, k := range found {
			k = locked[k.ID]
			if k.State == keygate.StateRevoked {
				res.AlreadyRevoked = append(res.AlreadyRevoked, k.ID)
				continue
			}
			if err := s.revokeInTx(ctx, r, k, "leaked"); err != nil {
				return err
			}
			r.then(func() { s.events.Emit(ctx, keygate.EventKeyLeaked, keyEvent(k, nil)) })
			res.Revoked = append(res.Revoked, k.ID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// lookups memoises consumer and plan reads while building several key views.
type lookups struct {
	r         keygate.Reader
	consumers map[string]*keygate.Consumer
	plans     map[string]*keygate.Plan
}

func newLookups(r keygate.Reader) *lookups {
	return &lookups{r: r, consumers: map[string]*keygate.Consumer{}, plans: map[string]*keygate.Plan{}}
}

func (l *lookups) consumer(ctx context.Context, id string) (*keygate.Consumer, error) {
	return remembered(ctx, l.consumers, id, l.r.Consumer)
}

func (l *lookups) plan(ctx context.Context, name string) (*keygate.Plan, error) {
	if name == "" {
		return nil, nil
	}
	return remembered(ctx, l.plans, name, l.r.Plan)
}

// remembered reads key once per lookups: a missing row is remembered as nil.
func remembered[T any](ctx context.Context, seen map[string]*T, key string, read func(context.Context, string) (*T, error)) (*T, error) {
	if v, ok := seen[key]; ok {
		return v, nil
	}
	v, err := read(ctx, key)
	if err != nil && keygate.ErrorCode(err) != keygate.CodeNotFound {
		return nil, err
	}
	seen[key] = v
	return v, nil
}

// view returns the key object shown to callers: a copy with status, effective rate limits and
// quota (with usage), and rotation_due. The stored key is not modified.
func (s *Service) view(ctx context.Context, k *keygate.Key, l *lookups) (*keygate.Key, error) {
	now := s.clock()
	c, err := l.consumer(ctx, k.ConsumerID)
	if err != nil {
		return nil, s.readError(err)
	}
	p, err := l.plan(ctx, keygate.PlanName(k, c))
	if err != nil {
		return nil, s.readError(err)
	}
	eff := keygate.EffectiveSettings(k, c, p)
	v := *k
	v.Status = k.StatusAt(now)
	v.Plan = eff.Plan
	v.RateLimits = eff.RateLimits
	// A key already rotated is not due: its successor is the one to rotate (rotating it again is
	// a conflict).
	v.RotationDue = v.Status == keygate.StateActive && k.RotatedTo == nil && keygate.RotationDue(k.CreatedAt, eff.MaxAge, now)
	if q := eff.Quota; q != nil {
		limiterID := k.LimiterID
		if limiterID == "" {
			limiterID = k.ID
		}
		used, err := s.usage(ctx, limiterID, q, now)
		if err != nil {
			s.log.Warn("quota usage unavailable", "key_id", k.ID, "err", err)
		}
		_, end := keygate.PeriodBounds(q.Period, now)
		v.Quota = &keygate.Quota{Limit: q.Limit, Period: q.Period, Used: &used, ResetsAt: &end}
	}
	return &v, nil
}

// durableUsage reads quota usage from the durable daily counters.
func (s *Service) durableUsage(ctx context.Context, limiterID string, q *keygate.Quota, now time.Time) (int64, error) {
	start, end := keygate.PeriodBounds(q.Period, now)
	return s.store.UsageByLimiter(ctx, limiterID, start, end)
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
