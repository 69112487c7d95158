package control

import (
	"context"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
)

// CreateConsumer validates and creates a consumer (audit consumer.create).
func (s *Service) CreateConsumer(ctx context.Context, a Actor, in ConsumerCreate) (*keygate.Consumer, error) {
	c := &keygate.Consumer{
		ID: keys.NewID("con"), Name: in.Name, Email: in.Email, Plan: in.Plan,
		RateLimits: in.RateLimits, Quota: storedQuota(in.Quota), Metadata: in.Metadata,
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		c.CreatedAt, c.UpdatedAt = r.now, r.now
		if err := requirePlan(ctx, r.tx, c.Plan); err != nil {
			return err
		}
		if err := r.tx.CreateConsumer(ctx, c); err != nil {
			return err
		}
		// Name and email stay out of the audit log: a purge must be able to erase them.
		return r.audit(ctx, "consumer.create", "consumer", c.ID, map[string]any{"plan": c.Plan})
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Consumer returns a consumer or CodeNotFound.
func (s *Service) Consumer(ctx context.Context, id string) (*keygate.Consumer, error) {
	c, err := s.store.Consumer(ctx, id)
	return c, s.readError(err)
}

// Consumers lists consumers newest first.
func (s *Service) Consumers(ctx context.Context, p keygate.ListParams) ([]*keygate.Consumer, string, error) {
	cs, next, err := s.store.Consumers(ctx, p)
	return cs, next, s.readError(err)
}

// UpdateConsumer applies a patch (audit consumer.update).
func (s *Service) UpdateConsumer(ctx context.Context, a Actor, id string, p ConsumerPatch) (*keygate.Consumer, error) {
	var c *keygate.Consumer
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		if err := lockConsumer(ctx, r.tx, id); err != nil {
			return err
		}
		var err error
		if c, err = r.tx.Consumer(ctx, id); err != nil {
			return err
		}
		var changed []string
		set(&changed, "name", p.Name, &c.Name)
		set(&changed, "email", p.Email, &c.Email)
		set(&changed, "plan", p.Plan, &c.Plan)
		set(&changed, "rate_limits", p.RateLimits, &c.RateLimits)
		if p.Quota.Set {
			c.Quota = storedQuota(p.Quota.Value)
			changed = append(changed, "quota")
		}
		set(&changed, "metadata", p.Metadata, &c.Metadata)
		if err := c.Validate(); err != nil {
			return err
		}
		if p.Plan.Set {
			if err := requirePlan(ctx, r.tx, c.Plan); err != nil {
				return err
			}
		}
		c.UpdatedAt = r.now
		if err := r.tx.UpdateConsumer(ctx, c); err != nil {
			return err
		}
		r.then(func() { s.inv.ConsumerChanged(id) })
		return r.audit(ctx, "consumer.update", "consumer", id, map[string]any{"fields": changed})
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// DeleteConsumer revokes the consumer's keys and deletes it; purge erases name and email
// (audit consumer.delete, and key.revoke for each key).
func (s *Service) DeleteConsumer(ctx context.Context, a Actor, id string, purge bool) error {
	return s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		if err := lockConsumer(ctx, r.tx, id); err != nil {
			return err
		}
		if _, err := r.tx.Consumer(ctx, id); err != nil {
			if purge && keygate.ErrorCode(err) == keygate.CodeNotFound {
				return s.purgeDeleted(ctx, r, id)
			}
			return err
		}
		listed, err := liveKeys(ctx, r.tx, id)
		if err != nil {
			return err
		}
		locked, err := lockKeys(ctx, r.tx, listed)
		if err != nil {
			return err
		}
		var live []*keygate.Key
		for _, k := range listed {
			if k = locked[k.ID]; k.State != keygate.StateRevoked {
				live = append(live, k)
			}
		}
		for _, k := range live {
			if err := s.revokeInTx(ctx, r, k, "consumer deleted"); err != nil {
				return err
			}
		}
		if err := r.tx.DeleteConsumer(ctx, id, r.now, purge); err != nil {
			return err
		}
		r.then(func() { s.inv.ConsumerChanged(id) })
		return r.audit(ctx, "consumer.delete", "consumer", id, map[string]any{"purge": purge, "keys_revoked": len(live)})
	})
}

// purgeDeleted erases the name and email of a consumer deleted earlier without purge (an erasure
// request that comes after the deletion). Its keys were revoked when it was deleted. A consumer
// that never existed stays CodeNotFound.
func (s *Service) purgeDeleted(ctx context.Context, r *recorder, id string) error {
	if err := r.tx.DeleteConsumer(ctx, id, r.now, true); err != nil {
		if keygate.ErrorCode(err) == keygate.CodeNotFound {
			return keygate.Errorf(keygate.CodeNotFound, "consumer %s not found", id)
		}
		return err
	}
	r.then(func() { s.inv.ConsumerChanged(id) })
	return r.audit(ctx, "consumer.delete", "consumer", id, map[string]any{"purge": true, "keys_revoked": 0})
}

// lockConsumer serializes the transactions that add keys to a consumer (CreateKey, RotateKey) with
// the one that deletes it, and the read-modify-writes of a consumer (UpdateConsumer). Without it,
// on PostgreSQL a key inserted while DeleteConsumer runs is not among the keys it revokes, and
// stays live after its owner is gone; and of two concurrent patches, one is lost. Each must take
// the lock before reading the consumer or its keys.
func lockConsumer(ctx context.Context, tx keygate.Tx, id string) error {
	return tx.Lock(ctx, "consumer:"+id)
}

// liveKeys returns every non-revoked key of a consumer.
func liveKeys(ctx context.Context, tx keygate.Reader, consumerID string) ([]*keygate.Key, error) {
	var out []*keygate.Key
	f := keygate.KeyFilter{ConsumerID: consumerID, ListParams: keygate.ListParams{Limit: 1000}}
	for {
		ks, next, err := tx.Keys(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if k.State != keygate.StateRevoked {
				out = append(out, k)
			}
		}
		if next == "" {
			return out, nil
		}
		f.Cursor = next
	}
}

// requirePlan refuses a reference to a plan that does not exist. It holds the plan's lock until
// the transaction ends, so that a concurrent DeletePlan either sees the new reference (409) or
// has deleted the plan before it is read (400): never a key or consumer naming a deleted plan,
// which would lose the plan's limits.
func requirePlan(ctx context.Context, tx keygate.Tx, name string) error {
	if name == "" {
		return nil
	}
	if err := lockPlan(ctx, tx, name); err != nil {
		return err
	}
	if _, err := tx.Plan(ctx, name); err != nil {
		if keygate.ErrorCode(err) == keygate.CodeNotFound {
			return keygate.Errorf(keygate.CodeBadRequest, "plan %q does not exist", name)
		}
		return err
	}
	return nil
}

// set applies one PATCH field: a present value replaces, null resets to the zero value.
func set[T any](changed *[]string, name string, o keygate.Opt[T], dst *T) {
	if !o.Set {
		return
	}
	*dst = o.Value
	*changed = append(*changed, name)
}

// storedQuota keeps only the stored fields of a quota (limit and period).
func storedQuota(q *keygate.Quota) *keygate.Quota {
	if q == nil {
		return nil
	}
	return &keygate.Quota{Limit: q.Limit, Period: q.Period}
}
