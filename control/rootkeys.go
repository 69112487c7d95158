package control

import (
	"context"
	"sync"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/keys"
)

// CreateRootKey creates a root key; creator must hold every permission it grants (else
// CodeForbidden). Returns the plaintext once (audit root_key.create).
func (s *Service) CreateRootKey(ctx context.Context, a Actor, creator *keygate.RootKey, in RootKeyCreate) (*keygate.RootKey, string, error) {
	if err := keygate.ValidateText("name", in.Name, keygate.MaxNameLen); err != nil {
		return nil, "", err
	}
	if len(in.Permissions) == 0 {
		return nil, "", keygate.Errorf(keygate.CodeBadRequest, "permissions must list at least one permission")
	}
	seen := map[string]bool{}
	var perms []string
	for _, p := range in.Permissions {
		if !validPermission(p) {
			return nil, "", keygate.Errorf(keygate.CodeBadRequest, "unknown permission %q", p)
		}
		if creator != nil && !creator.Has(p) {
			return nil, "", keygate.Errorf(keygate.CodeForbidden, "a root key cannot grant %q, which it lacks itself", p)
		}
		if !seen[p] {
			seen[p] = true
			perms = append(perms, p)
		}
	}
	rk, plaintext, err := s.newRootKey(in.Name, perms)
	if err != nil {
		return nil, "", err
	}
	if creator != nil {
		rk.CreatedBy = creator.ID
	}
	err = s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		rk.CreatedAt = r.now
		if err := r.tx.CreateRootKey(ctx, rk); err != nil {
			return err
		}
		return r.audit(ctx, "root_key.create", "root_key", rk.ID, map[string]any{
			"name": rk.Name, "permissions": rk.Permissions, "start": rk.Start})
	})
	if err != nil {
		return nil, "", err
	}
	return rk, plaintext, nil
}

func validPermission(p string) bool {
	for _, q := range keygate.Permissions {
		if p == q {
			return true
		}
	}
	return false
}

func (s *Service) newRootKey(name string, perms []string) (*keygate.RootKey, string, error) {
	plaintext, err := keys.GenerateRoot(s.prefix)
	if err != nil {
		return nil, "", err
	}
	p, _ := keys.Parse(plaintext, s.prefix)
	h := keys.Hash(plaintext)
	return &keygate.RootKey{ID: keys.NewID("rk"), Name: name, Start: keys.Start(plaintext, p),
		Permissions: perms, Hash: h[:]}, plaintext, nil
}

// RootKeys lists root keys.
func (s *Service) RootKeys(ctx context.Context, p keygate.ListParams) ([]*keygate.RootKey, string, error) {
	rs, next, err := s.store.RootKeys(ctx, p)
	return rs, next, s.readError(err)
}

// RevokeRootKey revokes a root key (audit root_key.revoke).
func (s *Service) RevokeRootKey(ctx context.Context, a Actor, id string) (*keygate.RootKey, error) {
	var rk *keygate.RootKey
	err := s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		var err error
		if rk, err = r.tx.RootKey(ctx, id); err != nil {
			return err
		}
		if rk.RevokedAt != nil {
			return keygate.Errorf(keygate.CodeConflict, "root key %s is already revoked", id)
		}
		if err := r.tx.RevokeRootKey(ctx, id, r.now); err != nil {
			return err
		}
		now := r.now
		rk.RevokedAt = &now
		r.then(func() {
			s.roots.drop(rk.Hash)
			s.inv.RootKeyChanged(id, rk.Hash)
		})
		return r.audit(ctx, "root_key.revoke", "root_key", id, nil)
	})
	if err != nil {
		return nil, err
	}
	return rk, nil
}

// AuthenticateRoot returns the active root key whose plaintext is token, or CodeUnauthorized.
// Results are cached for RootKeyTTL; revocation on this node takes effect at once.
func (s *Service) AuthenticateRoot(ctx context.Context, token string) (*keygate.RootKey, error) {
	p, err := keys.Parse(token, s.prefix)
	if err != nil || !p.Root() {
		return nil, keygate.Errorf(keygate.CodeUnauthorized, "a valid root key is required")
	}
	h := keys.Hash(token)
	now := s.now()
	rk, ok, gen := s.roots.get(h, now)
	if !ok {
		rk, err = s.store.RootKeyByHash(ctx, h[:])
		if err != nil {
			if keygate.ErrorCode(err) == keygate.CodeNotFound {
				return nil, keygate.Errorf(keygate.CodeUnauthorized, "a valid root key is required")
			}
			return nil, s.readError(err)
		}
		s.roots.put(h, rk, now, gen)
	}
	if rk.RevokedAt != nil {
		return nil, keygate.Errorf(keygate.CodeUnauthorized, "this root key was revoked")
	}
	return rk, nil
}

// ErrRootKeyRevoked is returned by EnsureRootKey when KEYGATE_ROOT_KEY names a revoked key.
var ErrRootKeyRevoked = &keygate.Error{Code: keygate.CodeConflict,
	Message: "KEYGATE_ROOT_KEY is a revoked root key: start refused; set another one (keygate root-key generate)"}

// EnsureRootKey makes sure a root key with plaintext token exists with permission admin
// (idempotent). A revoked one is ErrRootKeyRevoked.
func (s *Service) EnsureRootKey(ctx context.Context, token string) error {
	p, err := keys.Parse(token, s.prefix)
	if err != nil || !p.Root() {
		return keygate.Errorf(keygate.CodeBadRequest, "KEYGATE_ROOT_KEY is not a well-formed root key (expected %s_root_…; see keygate root-key generate)", s.prefix)
	}
	h := keys.Hash(token)
	return s.apply(ctx, Actor{ID: "system"}, func(ctx context.Context, r *recorder) error {
		if err := r.tx.Lock(ctx, "root-key-bootstrap"); err != nil {
			return err
		}
		rk, err := r.tx.RootKeyByHash(ctx, h[:])
		switch {
		case err == nil && rk.RevokedAt != nil:
			return ErrRootKeyRevoked
		case err == nil && rk.Has(keygate.PermAdmin):
			return nil
		case err == nil:
			// SPEC §1: the key exists afterwards with permission admin.
			if err := r.tx.SetRootKeyPermissions(ctx, rk.ID, []string{keygate.PermAdmin}); err != nil {
				return err
			}
			r.then(func() { s.roots.drop(rk.Hash); s.inv.RootKeyChanged(rk.ID, rk.Hash) })
			return r.audit(ctx, "root_key.update", "root_key", rk.ID, map[string]any{
				"permissions": []string{keygate.PermAdmin}, "previous": rk.Permissions, "bootstrap": "KEYGATE_ROOT_KEY"})
		case keygate.ErrorCode(err) != keygate.CodeNotFound:
			return err
		}
		rk = &keygate.RootKey{ID: keys.NewID("rk"), Name: "KEYGATE_ROOT_KEY", Start: keys.Start(token, p),
			Permissions: []string{keygate.PermAdmin}, Hash: h[:], CreatedAt: r.now}
		if err := r.tx.CreateRootKey(ctx, rk); err != nil {
			return err
		}
		return r.audit(ctx, "root_key.create", "root_key", rk.ID, map[string]any{
			"name": rk.Name, "permissions": rk.Permissions, "start": rk.Start, "bootstrap": "KEYGATE_ROOT_KEY"})
	})
}

// BootstrapRootKey creates an admin root key if no root key exists, under a cluster-wide lock, and
// returns its plaintext ("" when one existed already).
func (s *Service) BootstrapRootKey(ctx context.Context) (string, error) {
	var plaintext string
	err := s.apply(ctx, Actor{ID: "system"}, func(ctx context.Context, r *recorder) error {
		plaintext = ""
		if err := r.tx.Lock(ctx, "root-key-bootstrap"); err != nil {
			return err
		}
		existing, _, err := r.tx.RootKeys(ctx, keygate.ListParams{Limit: 1})
		if err != nil || len(existing) > 0 {
			return err
		}
		rk, pt, err := s.newRootKey("bootstrap", []string{keygate.PermAdmin})
		if err != nil {
			return err
		}
		rk.CreatedAt = r.now
		if err := r.tx.CreateRootKey(ctx, rk); err != nil {
			return err
		}
		plaintext = pt
		return r.audit(ctx, "root_key.create", "root_key", rk.ID, map[string]any{
			"name": rk.Name, "permissions": rk.Permissions, "start": rk.Start, "bootstrap": "generated"})
	})
	if err != nil {
		// The key was not stored (the transaction rolled back): never hand out its plaintext.
		return "", err
	}
	return plaintext, nil
}

// rootCache remembers authenticated root keys for a short time, so that the admin API does not
// read the database on every call, while revocations on other nodes still apply within ttl.
type rootCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[32]byte]rootSlot
	// gen counts drops. A read that started before a drop must not fill the cache: it may hold
	// the key as it was before the revocation that caused the drop.
	gen uint64
}

type rootSlot struct {
	rk      *keygate.RootKey
	expires time.Time
}

func newRootCache(ttl time.Duration) *rootCache {
	return &rootCache{ttl: ttl, m: map[[32]byte]rootSlot{}}
}

// get returns the cached key, and the generation to pass to put after a read from the store.
func (c *rootCache) get(h [32]byte, now time.Time) (*keygate.RootKey, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[h]
	if !ok || !now.Before(v.expires) {
		return nil, false, c.gen
	}
	return v.rk, true, c.gen
}

// put caches rk, read from the store after get returned gen, unless a drop happened since.
func (c *rootCache) put(h [32]byte, rk *keygate.RootKey, now time.Time, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m) > 10000 {
		clear(c.m)
	}
	c.m[h] = rootSlot{rk: rk, expires: now.Add(c.ttl)}
}

func (c *rootCache) drop(h []byte) {
	var k [32]byte
	copy(k[:], h)
	c.mu.Lock()
	delete(c.m, k)
	c.gen++
	c.mu.Unlock()
}
