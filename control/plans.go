package control

import (
	"context"

	"github.com/keygate/keygate"
)

// plansLock serializes the transactions that read a plan and write it back (UpdatePlan,
// DeletePlan, SyncConfigPlans). Without it, on PostgreSQL two concurrent patches of one plan
// lose one of the changes, and a patch racing a config sync writes managed_by back to "api".
// Plan changes are rare: one lock for all of them is enough.
const plansLock = "plans"

// lockPlan takes the lock that DeletePlan and every new reference to plan name (requirePlan)
// serialize on.
func lockPlan(ctx context.Context, tx keygate.Tx, name string) error {
	return tx.Lock(ctx, "plan:"+name)
}

// CreatePlan creates a plan managed by the API (audit plan.create).
func (s *Service) CreatePlan(ctx context.Context, a Actor, in PlanCreate) (*keygate.Plan, error) {
	p := planFrom(in, keygate.ManagedByAPI)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		p.CreatedAt, p.UpdatedAt = r.now, r.now
		if err := r.tx.CreatePlan(ctx, p); err != nil {
			if keygate.ErrorCode(err) == keygate.CodeConflict {
				return keygate.Errorf(keygate.CodeConflict, "plan %q already exists", p.Name)
			}
			return err
		}
		return r.audit(ctx, "plan.create", "plan", p.Name, planDetails(p))
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func planFrom(in PlanCreate, managedBy string) *keygate.Plan {
	return &keygate.Plan{
		Name: in.Name, RateLimits: in.RateLimits, Quota: storedQuota(in.Quota),
		ScopesAllowed: in.ScopesAllowed, MaxAge: in.MaxAge, ManagedBy: managedBy,
	}
}

func planDetails(p *keygate.Plan) map[string]any {
	d := map[string]any{"rate_limits": p.RateLimits, "scopes_allowed": p.ScopesAllowed, "managed_by": p.ManagedBy}
	if p.Quota != nil {
		d["quota"] = map[string]any{"limit": p.Quota.Limit, "period": p.Quota.Period}
	}
	if p.MaxAge != nil {
		d["max_age"] = p.MaxAge.String()
	}
	return d
}

// Plan returns a plan or CodeNotFound.
func (s *Service) Plan(ctx context.Context, name string) (*keygate.Plan, error) {
	p, err := s.store.Plan(ctx, name)
	return p, s.readError(err)
}

// Plans lists plans.
func (s *Service) Plans(ctx context.Context, lp keygate.ListParams) ([]*keygate.Plan, string, error) {
	ps, next, err := s.store.Plans(ctx, lp)
	return ps, next, s.readError(err)
}

// UpdatePlan applies a patch; config-managed plans are CodeConflict (audit plan.update).
func (s *Service) UpdatePlan(ctx context.Context, a Actor, name string, pp PlanPatch) (*keygate.Plan, error) {
	var p *keygate.Plan
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		if err := r.tx.Lock(ctx, plansLock); err != nil {
			return err
		}
		var err error
		if p, err = r.tx.Plan(ctx, name); err != nil {
			return err
		}
		if p.ManagedBy == keygate.ManagedByConfig {
			return keygate.Errorf(keygate.CodeConflict, "plan %q is managed by the config file; change it there", name)
		}
		var changed []string
		set(&changed, "rate_limits", pp.RateLimits, &p.RateLimits)
		if pp.Quota.Set {
			p.Quota = storedQuota(pp.Quota.Value)
			changed = append(changed, "quota")
		}
		set(&changed, "scopes_allowed", pp.ScopesAllowed, &p.ScopesAllowed)
		set(&changed, "max_age", pp.MaxAge, &p.MaxAge)
		if err := p.Validate(); err != nil {
			return err
		}
		p.UpdatedAt = r.now
		if err := r.tx.UpdatePlan(ctx, p); err != nil {
			return err
		}
		r.then(func() { s.inv.PlanChanged(name) })
		d := planDetails(p)
		d["fields"] = changed
		return r.audit(ctx, "plan.update", "plan", name, d)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// DeletePlan deletes an unused plan; in use or config-managed is CodeConflict (audit plan.delete).
func (s *Service) DeletePlan(ctx context.Context, a Actor, name string) error {
	return s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		if err := r.tx.Lock(ctx, plansLock); err != nil {
			return err
		}
		if err := lockPlan(ctx, r.tx, name); err != nil {
			return err
		}
		p, err := r.tx.Plan(ctx, name)
		if err != nil {
			return err
		}
		if p.ManagedBy == keygate.ManagedByConfig {
			return keygate.Errorf(keygate.CodeConflict, "plan %q is managed by the config file; remove it there", name)
		}
		inUse, err := r.tx.PlanInUse(ctx, name)
		if err != nil {
			return err
		}
		if inUse {
			return keygate.Errorf(keygate.CodeConflict, "plan %q is in use by a consumer or key", name)
		}
		if err := r.tx.DeletePlan(ctx, name); err != nil {
			return err
		}
		r.then(func() { s.inv.PlanChanged(name) })
		return r.audit(ctx, "plan.delete", "plan", name, nil)
	})
}

// SyncConfigPlans creates or updates the plans declared in the config file, marked managed_by
// config (audit plan.create / plan.update with actor "config"). Plans no longer declared stay,
// handed back to the API (managed_by api). Unchanged plans write nothing.
func (s *Service) SyncConfigPlans(ctx context.Context, plans []PlanCreate) error {
	declared := make(map[string]*keygate.Plan, len(plans))
	for _, in := range plans {
		p := planFrom(in, keygate.ManagedByConfig)
		if err := p.Validate(); err != nil {
			return keygate.Errorf(keygate.CodeBadRequest, "plans: %s: %s", in.Name, keygate.ErrorMessage(err))
		}
		if declared[p.Name] != nil {
			return keygate.Errorf(keygate.CodeBadRequest, "plans: %s is declared twice", p.Name)
		}
		declared[p.Name] = p
	}
	var changed []string
	err := s.apply(ctx, Actor{ID: "config"}, func(ctx context.Context, r *recorder) error {
		changed = changed[:0]
		// Nodes starting or reloading together sync the same config: one at a time, so that the
		// later ones see the plans the first created instead of failing on a duplicate.
		if err := r.tx.Lock(ctx, plansLock); err != nil {
			return err
		}
		existing, err := allPlans(ctx, r.tx)
		if err != nil {
			return err
		}
		byName := make(map[string]*keygate.Plan, len(existing))
		for _, p := range existing {
			byName[p.Name] = p
		}
		for _, in := range plans {
			p := declared[in.Name]
			old := byName[p.Name]
			switch {
			case old == nil:
				p.CreatedAt, p.UpdatedAt = r.now, r.now
				if err := r.tx.CreatePlan(ctx, p); err != nil {
					return err
				}
				if err := r.audit(ctx, "plan.create", "plan", p.Name, planDetails(p)); err != nil {
					return err
				}
			case !samePlan(old, p):
				p.CreatedAt, p.UpdatedAt = old.CreatedAt, r.now
				if err := r.tx.UpdatePlan(ctx, p); err != nil {
					return err
				}
				if err := r.audit(ctx, "plan.update", "plan", p.Name, planDetails(p)); err != nil {
					return err
				}
			default:
				continue
			}
			changed = append(changed, p.Name)
		}
		for _, old := range existing {
			if old.ManagedBy == keygate.ManagedByConfig && declared[old.Name] == nil {
				old.ManagedBy, old.UpdatedAt = keygate.ManagedByAPI, r.now
				if err := r.tx.UpdatePlan(ctx, old); err != nil {
					return err
				}
				if err := r.audit(ctx, "plan.update", "plan", old.Name, map[string]any{"managed_by": keygate.ManagedByAPI}); err != nil {
					return err
				}
				changed = append(changed, old.Name)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range changed {
		s.inv.PlanChanged(name)
	}
	return nil
}

func allPlans(ctx context.Context, tx keygate.Reader) ([]*keygate.Plan, error) {
	var out []*keygate.Plan
	lp := keygate.ListParams{Limit: 1000}
	for {
		ps, next, err := tx.Plans(ctx, lp)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
		if next == "" {
			return out, nil
		}
		lp.Cursor = next
	}
}

func samePlan(a, b *keygate.Plan) bool {
	return a.ManagedBy == b.ManagedBy && jsonEqual(a.RateLimits, b.RateLimits) && jsonEqual(a.Quota, b.Quota) &&
		jsonEqual(a.ScopesAllowed, b.ScopesAllowed) && jsonEqual(a.MaxAge, b.MaxAge)
}
