package control_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/keys"
)

func testRootKeys(t *testing.T, e *env) {
	plaintext, err := e.svc.BootstrapRootKey(e.ctx)
	if err != nil || plaintext == "" {
		t.Fatalf("BootstrapRootKey = %v, %v", plaintext != "", err)
	}
	admin, err := e.svc.AuthenticateRoot(e.ctx, plaintext)
	if err != nil || !admin.Has(keygate.PermAdmin) {
		t.Fatalf("AuthenticateRoot(bootstrap key) = %+v, %v", admin, err)
	}
	a := control.Actor{ID: "root_key:" + admin.ID, IP: "198.51.100.1"}

	limited, limitedPlain, err := e.svc.CreateRootKey(e.ctx, a, admin, control.RootKeyCreate{Name: "ops",
		Permissions: []string{keygate.PermKeysRead, keygate.PermRootKeysWrite, keygate.PermKeysRead}})
	if err != nil {
		t.Fatalf("CreateRootKey: %v", err)
	}
	if len(limited.Permissions) != 2 || limited.CreatedBy != admin.ID || !strings.HasPrefix(limitedPlain, "kg_root_") || limited.Start != limitedPlain[:len("kg_root_")+4] {
		t.Errorf("created root key %+v (duplicate permission not folded, or wrong creator/start)", limited)
	}
	ops, err := e.svc.AuthenticateRoot(e.ctx, limitedPlain)
	if err != nil || ops.ID != limited.ID {
		t.Fatalf("AuthenticateRoot(ops) = %v, %v", ops, err)
	}
	opsActor := control.Actor{ID: "root_key:" + ops.ID}
	tests := []struct {
		name  string
		perms []string
		code  string
	}{
		{"a permission it holds", []string{keygate.PermKeysRead}, ""},
		{"a permission it lacks", []string{keygate.PermKeysRead, keygate.PermKeysWrite}, keygate.CodeForbidden},
		{"admin", []string{keygate.PermAdmin}, keygate.CodeForbidden},
		{"an unknown permission", []string{"keys:delete"}, keygate.CodeBadRequest},
		{"no permissions", nil, keygate.CodeBadRequest},
	}
	for _, tc := range tests {
		before := e.head()
		_, _, err := e.svc.CreateRootKey(e.ctx, opsActor, ops, control.RootKeyCreate{Name: tc.name, Permissions: tc.perms})
		if tc.code == "" {
			if err != nil {
				t.Errorf("CreateRootKey(%s) = %v", tc.name, err)
			}
			continue
		}
		wantErr(t, "CreateRootKey("+tc.name+")", err, tc.code)
		if e.head() != before {
			t.Errorf("CreateRootKey(%s) refused but audited", tc.name)
		}
	}
	_, _, err = e.svc.CreateRootKey(e.ctx, a, admin, control.RootKeyCreate{Name: "bad\x00name", Permissions: []string{keygate.PermKeysRead}})
	wantErr(t, "CreateRootKey(name with NUL)", err, keygate.CodeBadRequest, "name")

	// Garbage never reaches the store.
	reads := e.spy.rootReads.Load()
	c := e.consumer("")
	_, consumerKey := e.key(control.KeyCreate{ConsumerID: c.ID})
	for _, garbage := range []string{"", "Bearer x", "kg_root_" + strings.Repeat("A", 49), flipLast(limitedPlain),
		strings.Replace(limitedPlain, "kg_", "xx_", 1), consumerKey, limitedPlain + " "} {
		_, err := e.svc.AuthenticateRoot(e.ctx, garbage)
		wantErr(t, "AuthenticateRoot(garbage)", err, keygate.CodeUnauthorized)
	}
	if n := e.spy.rootReads.Load() - reads; n != 0 {
		t.Errorf("garbage root keys caused %d store reads", n)
	}
	// A well-formed root key that does not exist is read once and refused.
	unknown, _ := keys.GenerateRoot("kg")
	_, err = e.svc.AuthenticateRoot(e.ctx, unknown)
	wantErr(t, "AuthenticateRoot(unknown)", err, keygate.CodeUnauthorized)

	// Authenticated keys are served from memory...
	reads = e.spy.rootReads.Load()
	for range 5 {
		if _, err := e.svc.AuthenticateRoot(e.ctx, limitedPlain); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.spy.rootReads.Load() - reads; n != 0 {
		t.Errorf("a cached root key was read %d times", n)
	}
	// ...and revocation on this node takes effect at once, without waiting for the cache.
	m := e.rec.snapshot()
	r, err := e.svc.RevokeRootKey(e.ctx, a, ops.ID)
	if err != nil || r.RevokedAt == nil {
		t.Fatalf("RevokeRootKey = %+v, %v", r, err)
	}
	_, err = e.svc.AuthenticateRoot(e.ctx, limitedPlain)
	wantErr(t, "AuthenticateRoot(revoked)", err, keygate.CodeUnauthorized)
	if e.rec.snapshot().roots != m.roots+1 {
		t.Errorf("RevokeRootKey did not call RootKeyChanged")
	}
	_, err = e.svc.RevokeRootKey(e.ctx, a, ops.ID)
	wantErr(t, "RevokeRootKey twice", err, keygate.CodeConflict)
	_, err = e.svc.RevokeRootKey(e.ctx, a, "rk_missing")
	wantErr(t, "RevokeRootKey(missing)", err, keygate.CodeNotFound)

	rks, _, err := e.svc.RootKeys(e.ctx, keygate.ListParams{})
	if err != nil || len(rks) != 3 {
		t.Errorf("RootKeys = %d, %v; want 3", len(rks), err)
	}
	b, _ := json.Marshal(rks)
	if strings.Contains(string(b), plaintext) || strings.Contains(string(b), limitedPlain) {
		t.Errorf("RootKeys answer holds a plaintext")
	}
}

// A revocation that commits while an authentication of the same key is reading it must not be
// undone by that read filling the cache afterwards.
func testRootKeyRevokeDuringRead(t *testing.T, e *env) {
	plaintext, err := e.svc.BootstrapRootKey(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rks, _, err := e.svc.RootKeys(e.ctx, keygate.ListParams{})
	if err != nil || len(rks) != 1 {
		t.Fatal(rks, err)
	}
	revoke := func() {
		e.spy.afterRootRead.Store(nil)
		if _, err := e.svc.RevokeRootKey(e.ctx, e.actor, rks[0].ID); err != nil {
			t.Errorf("RevokeRootKey: %v", err)
		}
	}
	e.spy.afterRootRead.Store(&revoke)
	// This call read the key before the revocation: answering it is fine.
	if _, err := e.svc.AuthenticateRoot(e.ctx, plaintext); err != nil {
		t.Logf("authentication racing the revocation refused (fine): %v", err)
	}
	_, err = e.svc.AuthenticateRoot(e.ctx, plaintext)
	wantErr(t, "AuthenticateRoot after the revocation returned", err, keygate.CodeUnauthorized)
}

// A revocation on another node reaches this one when the cached entry ends (RootKeyTTL).
func testRootKeyAcrossNodes(t *testing.T, e *env) {
	plaintext, err := e.svc.BootstrapRootKey(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := e.svc.AuthenticateRoot(e.ctx, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	node2 := e.newService(e.open())
	if _, err := node2.RevokeRootKey(e.ctx, e.actor, rk.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := node2.AuthenticateRoot(e.ctx, plaintext); keygate.ErrorCode(err) != keygate.CodeUnauthorized {
		t.Errorf("node 2 after revoking: %v", err)
	}
	if _, err := e.svc.AuthenticateRoot(e.ctx, plaintext); err != nil {
		t.Logf("node 1 refused at once (fine): %v", err)
	}
	e.clock.Advance(time.Second)
	_, err = e.svc.AuthenticateRoot(e.ctx, plaintext)
	wantErr(t, "node 1 one RootKeyTTL after a revocation elsewhere", err, keygate.CodeUnauthorized)
}

func testEnsureRootKey(t *testing.T, e *env) {
	token, err := keys.GenerateRoot("kg")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := e.svc.EnsureRootKey(e.ctx, token); err != nil {
			t.Fatalf("EnsureRootKey #%d: %v", i+1, err)
		}
	}
	rks, _, err := e.svc.RootKeys(e.ctx, keygate.ListParams{})
	if err != nil || len(rks) != 1 || !rks[0].Has(keygate.PermAdmin) || rks[0].Start != token[:len("kg_root_")+4] {
		t.Fatalf("after EnsureRootKey ×3: %d root keys, %v", len(rks), err)
	}
	if n := len(e.entriesAfter(0)); n != 1 {
		t.Errorf("EnsureRootKey ×3 wrote %d audit entries; want 1", n)
	}
	if a := e.entriesAfter(0)[0]; a.Action != "root_key.create" || a.Actor != "system" {
		t.Errorf("entry: %s by %s", a.Action, a.Actor)
	}
	rk, err := e.svc.AuthenticateRoot(e.ctx, token)
	if err != nil || rk.ID != rks[0].ID {
		t.Fatalf("AuthenticateRoot(ensured) = %v, %v", rk, err)
	}
	// A key with that value but without admin is given admin (SPEC §1), audited once.
	limited, limitedToken, err := e.svc.CreateRootKey(e.ctx, e.actor, nil, control.RootKeyCreate{Name: "ro", Permissions: []string{keygate.PermAuditRead}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.EnsureRootKey(e.ctx, limitedToken); err != nil {
		t.Fatal(err)
	}
	if up, err := e.svc.AuthenticateRoot(e.ctx, limitedToken); err != nil || up.ID != limited.ID || !up.Has(keygate.PermAdmin) {
		t.Fatalf("after EnsureRootKey of a non-admin key: %+v, %v; want it to hold admin", up, err)
	}
	if last := e.entriesAfter(0); last[len(last)-1].Action != "root_key.update" {
		t.Errorf("upgrade audited as %q", last[len(last)-1].Action)
	}
	// Bootstrap sees it: no second key.
	if p, err := e.svc.BootstrapRootKey(e.ctx); p != "" || err != nil {
		t.Errorf("BootstrapRootKey with a key present = %v, %v", p != "", err)
	}
	if _, err := e.svc.RevokeRootKey(e.ctx, e.actor, rk.ID); err != nil {
		t.Fatal(err)
	}
	err = e.svc.EnsureRootKey(e.ctx, token)
	if !errors.Is(err, control.ErrRootKeyRevoked) {
		t.Errorf("EnsureRootKey(revoked) = %v; want ErrRootKeyRevoked", err)
	}
	if err != nil && strings.Contains(err.Error(), token) {
		t.Errorf("the error holds the key")
	}
	for _, bad := range []string{"", "kg_root_short", token + "x", strings.Replace(token, "kg_root_", "kg_sk_live_", 1)} {
		err := e.svc.EnsureRootKey(e.ctx, bad)
		wantErr(t, "EnsureRootKey(malformed)", err, keygate.CodeBadRequest, "KEYGATE_ROOT_KEY")
		if bad != "" && err != nil && strings.Contains(err.Error(), bad) {
			t.Errorf("the error echoes the value")
		}
	}
}

func testBootstrapRootKey(t *testing.T, e *env) {
	first, err := e.svc.BootstrapRootKey(e.ctx)
	if err != nil || first == "" {
		t.Fatalf("BootstrapRootKey = %v, %v", first != "", err)
	}
	if _, err := keys.Parse(first, "kg"); err != nil {
		t.Errorf("bootstrap key does not parse: %v", err)
	}
	for range 2 {
		again, err := e.svc.BootstrapRootKey(e.ctx)
		if err != nil || again != "" {
			t.Errorf("BootstrapRootKey again = %v, %v; want \"\"", again != "", err)
		}
	}
	rks, _, _ := e.svc.RootKeys(e.ctx, keygate.ListParams{})
	if len(rks) != 1 || !rks[0].Has(keygate.PermAdmin) {
		t.Errorf("root keys after bootstrap: %d", len(rks))
	}
	if n := e.head(); n != 1 {
		t.Errorf("bootstrap ×3 wrote %d audit entries; want 1", n)
	}
}

// Nodes starting together on an empty database create exactly one root key.
func testBootstrapConcurrent(t *testing.T, e *env) {
	const nodes = 8
	services := make([]*control.Service, nodes)
	for i := range services {
		services[i] = e.newService(e.open())
	}
	var wg sync.WaitGroup
	results := make([]string, nodes)
	errs := make([]error, nodes)
	start := make(chan struct{})
	for i, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = s.BootstrapRootKey(e.ctx)
		}()
	}
	close(start)
	wg.Wait()
	created := 0
	for i := range results {
		if errs[i] != nil {
			t.Errorf("node %d: %v", i, errs[i])
		}
		if results[i] != "" {
			created++
		}
	}
	rks, _, err := e.svc.RootKeys(e.ctx, keygate.ListParams{})
	if created != 1 || err != nil || len(rks) != 1 {
		t.Errorf("%d nodes bootstrapping: %d plaintexts returned, %d root keys stored (%v); want 1 and 1", nodes, created, len(rks), err)
	}
	if v := e.verifyAudit(); !v.OK || v.Entries != 1 {
		t.Errorf("audit after concurrent bootstrap: %+v", v)
	}
}

func testRevokeLeaked(t *testing.T, e *env) {
	c := e.consumer("")
	k1, p1 := e.key(control.KeyCreate{ConsumerID: c.ID})
	k2, p2 := e.key(control.KeyCreate{ConsumerID: c.ID})
	k3, p3 := e.key(control.KeyCreate{ConsumerID: c.ID})
	if _, err := e.svc.RevokeKey(e.ctx, e.actor, k2.ID, "rotated out"); err != nil {
		t.Fatal(err)
	}
	unknown, _ := keys.Generate("kg", keys.TagSecret, keygate.EnvLive)
	garbage := "not-a-key-" + strings.Repeat("z", 30)
	before := e.head()
	m := e.rec.snapshot()
	res, err := e.svc.RevokeLeaked(e.ctx, e.actor, []string{p1, p2, garbage, p1, unknown, p3, ""})
	if err != nil {
		t.Fatalf("RevokeLeaked: %v", err)
	}
	if len(res.Revoked) != 2 || !contains(res.Revoked, k1.ID) || !contains(res.Revoked, k3.ID) ||
		len(res.AlreadyRevoked) != 1 || res.AlreadyRevoked[0] != k2.ID || res.NotFound != 3 {
		t.Errorf("RevokeLeaked = %+v; want revoked [%s %s], already [%s], not_found 3", res, k1.ID, k3.ID, k2.ID)
	}
	b, _ := json.Marshal(res)
	for _, s := range []string{p1, p2, p3, unknown, garbage} {
		if strings.Contains(string(b), s) {
			t.Errorf("RevokeLeaked answer echoes a presented string: %s", b)
		}
	}
	for _, id := range []string{k1.ID, k3.ID} {
		k := e.get(id)
		if k.Status != keygate.StateRevoked || k.RevokeReason == nil || *k.RevokeReason != "leaked" {
			t.Errorf("leaked key %s: status %s reason %v", id, k.Status, k.RevokeReason)
		}
	}
	if got := e.get(k2.ID).RevokeReason; got == nil || *got != "rotated out" {
		t.Errorf("the already revoked key's reason changed to %v", got)
	}
	entries := e.entriesAfter(before)
	if len(entries) != 2 {
		t.Fatalf("RevokeLeaked wrote %d entries; want 2", len(entries))
	}
	for _, a := range entries {
		if a.Action != "key.revoke" || a.Details["reason"] != "leaked" || a.Actor != e.actor.ID || a.IP != e.actor.IP {
			t.Errorf("entry %d: %s %v by %s", a.Seq, a.Action, a.Details, a.Actor)
		}
	}
	leaked := 0
	for _, ev := range e.rec.eventsSince(m) {
		if ev.typ == keygate.EventKeyLeaked {
			leaked++
			if ev.data["key_id"] != k1.ID && ev.data["key_id"] != k3.ID {
				t.Errorf("key.leaked for %v", ev.data["key_id"])
			}
		}
		d, _ := json.Marshal(ev.data)
		if strings.Contains(string(d), p1) || strings.Contains(string(d), p3) {
			t.Errorf("event %s holds a key", ev.typ)
		}
	}
	if leaked != 2 {
		t.Errorf("%d key.leaked events; want 2", leaked)
	}
	if n := len(e.rec.keysSince(m)); n != 2 {
		t.Errorf("%d invalidations; want 2", n)
	}

	_, err = e.svc.RevokeLeaked(e.ctx, e.actor, nil)
	wantErr(t, "RevokeLeaked(none)", err, keygate.CodeBadRequest)
	_, err = e.svc.RevokeLeaked(e.ctx, e.actor, make([]string, control.MaxLeakedPerCall+1))
	wantErr(t, "RevokeLeaked(too many)", err, keygate.CodeBadRequest)
	// Nothing found: no audit entry, a count only.
	before = e.head()
	res, err = e.svc.RevokeLeaked(e.ctx, e.actor, []string{unknown, p1})
	if err != nil || res.NotFound != 1 || len(res.Revoked) != 0 || len(res.AlreadyRevoked) != 1 || e.head() != before {
		t.Errorf("RevokeLeaked(nothing new) = %+v, %v; audit +%d", res, err, e.head()-before)
	}
}

// flipLast changes the last character of a key, breaking its checksum.
func flipLast(s string) string {
	c := byte('x')
	if s[len(s)-1] == c {
		c = 'y'
	}
	return s[:len(s)-1] + string(c)
}
