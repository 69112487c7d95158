// Package storetest is the contract every keygate.Store must pass. store/sqlite and
// store/postgres run it against a fresh database:
//
//	storetest.Run(t, func(t *testing.T) keygate.Store { … open an empty store with
//		sqlstore.WithAuditHasher(storetest.Hasher), register its Close with t.Cleanup … })
//
// It also holds SeedKeys and the benchmark bodies shared by both databases.
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

// Hasher is the AuditHasher the stores under test must be opened with: a SHA-256 over the
// previous hash and the entry's fields, so the suite can check the chain.
func Hasher(prev string, e *keygate.AuditEntry) (string, error) {
	if e.Hash != "" {
		return "", errors.New("entry passed to the hasher already has a hash")
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d|%s|%s|%s|%s|%s|%s|%s|%v", prev, e.Seq, e.TS.Format(time.RFC3339Nano), e.Actor,
		e.Action, e.TargetType, e.TargetID, e.IP, e.Result, e.Details)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Run runs the contract suite. open returns an empty, migrated store opened with
// sqlstore.WithAuditHasher(Hasher) and closes it when the test ends. Subtests run in parallel,
// each on its own store.
func Run(t *testing.T, open func(t *testing.T) keygate.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s keygate.Store)
	}{
		{"Ping", testPing},
		{"Consumers", testConsumers},
		{"ConsumerDelete", testConsumerDelete},
		{"Plans", testPlans},
		{"PlanInUse", testPlanInUse},
		{"Keys", testKeys},
		{"KeyPaging", testKeyPaging},
		{"ListLimits", testListLimits},
		{"KeyStatusFilter", testKeyStatusFilter},
		{"RootKeys", testRootKeys},
		{"Audit", testAudit},
		{"AuditConcurrent", testAuditConcurrent},
		{"ScanAuditPages", testScanAuditPages},
		{"UpdateRollback", testUpdateRollback},
		{"UpdateContext", testUpdateContext},
		{"Lock", testLock},
		{"Idempotency", testIdempotency},
		{"Usage", testUsage},
		{"TouchKeys", testTouchKeys},
		{"Unicode", testUnicode},
		{"LargeMetadata", testLargeMetadata},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// now is a time as stores keep it: UTC, truncated to microseconds.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newID returns prefix_ and 24 random hex characters.
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

func randomHash() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

func ptr[T any](v T) *T { return &v }

func update(t *testing.T, s keygate.Store, fn func(keygate.Tx) error) {
	t.Helper()
	if err := s.Update(ctxT(t), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := keygate.ErrorCode(err); got != code {
		t.Errorf("%s: error %v (code %q); want code %q", what, err, got, code)
	}
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, deref(got), deref(want))
	}
}

func deref(v any) any {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		return rv.Elem().Interface()
	}
	return v
}

func newConsumer(at time.Time) *keygate.Consumer {
	return &keygate.Consumer{
		ID: newID("con"), Name: "Acme", Email: "dev@acme.example", Plan: "",
		RateLimits: []keygate.Window{{Name: "minute", Limit: 100, Period: keygate.Duration(time.Minute)}},
		Quota:      &keygate.Quota{Limit: 5000, Period: keygate.PeriodMonth},
		Metadata:   map[string]any{"tier": "gold", "seats": float64(3)},
		CreatedAt:  at, UpdatedAt: at,
	}
}

func createConsumer(t *testing.T, s keygate.Store) *keygate.Consumer {
	t.Helper()
	c := newConsumer(now())
	update(t, s, func(tx keygate.Tx) error { return tx.CreateConsumer(ctxT(t), c) })
	return c
}

func newKey(consumerID string, at time.Time) *keygate.Key {
	id := newID("key")
	return &keygate.Key{
		ID: id, ConsumerID: consumerID, Name: "mobile app", Kind: keygate.KindSecret, Env: keygate.EnvLive,
		Start: "kg_sk_live_" + id[4:8], Scopes: []string{"products:read"},
		RateLimits:    []keygate.Window{{Name: "burst", Limit: 5, Period: keygate.Duration(time.Second)}},
		IPAllow:       []string{"203.0.113.0/24"},
		ReferrerAllow: []string{},
		State:         keygate.StateActive, Status: keygate.StateActive,
		CreatedAt: at, UpdatedAt: at, Metadata: map[string]any{},
		Hash: randomHash(), LimiterID: id,
	}
}

func testPing(t *testing.T, s keygate.Store) {
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testConsumers(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	c := createConsumer(t, s)
	got, err := s.Consumer(ctx, c.ID)
	if err != nil {
		t.Fatalf("Consumer(%q): %v", c.ID, err)
	}
	equal(t, "Consumer after create", got, c)

	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateConsumer(ctx, c) })
	wantCode(t, "CreateConsumer of an existing id", err, keygate.CodeConflict)
	_, err = s.Consumer(ctx, "con_missing")
	wantCode(t, "Consumer(missing)", err, keygate.CodeNotFound)

	c.Name, c.Email, c.Plan = "Acme Inc", "ops@acme.example", "gold"
	c.Quota, c.RateLimits, c.Metadata = nil, nil, map[string]any{"k": []any{"a", true, nil}}
	c.UpdatedAt = now().Add(time.Second)
	update(t, s, func(tx keygate.Tx) error { return tx.UpdateConsumer(ctx, c) })
	got, err = s.Consumer(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "Consumer after update", got, c)

	missing := newConsumer(now())
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.UpdateConsumer(ctx, missing) })
	wantCode(t, "UpdateConsumer(missing)", err, keygate.CodeNotFound)

	// Paging: newest first, ties broken by id.
	base := now()
	want := []*keygate.Consumer{c}
	update(t, s, func(tx keygate.Tx) error {
		for i := range 9 {
			c := newConsumer(base.Add(time.Duration(i/3) * time.Hour))
			want = append(want, c)
			if err := tx.CreateConsumer(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	sortNewest(want, func(c *keygate.Consumer) (time.Time, string) { return c.CreatedAt, c.ID })
	var all []*keygate.Consumer
	cursor := ""
	for range 20 {
		page, next, err := s.Consumers(ctx, keygate.ListParams{Limit: 4, Cursor: cursor})
		if err != nil {
			t.Fatalf("Consumers: %v", err)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	equal(t, "Consumers paged", ids(all, func(c *keygate.Consumer) string { return c.ID }),
		ids(want, func(c *keygate.Consumer) string { return c.ID }))
}

func testConsumerDelete(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	c1, c2 := createConsumer(t, s), createConsumer(t, s)
	at := now()
	update(t, s, func(tx keygate.Tx) error { return tx.DeleteConsumer(ctx, c1.ID, at, false) })
	_, err := s.Consumer(ctx, c1.ID)
	wantCode(t, "Consumer(deleted)", err, keygate.CodeNotFound)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.DeleteConsumer(ctx, c1.ID, at, false) })
	wantCode(t, "DeleteConsumer(deleted)", err, keygate.CodeNotFound)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.DeleteConsumer(ctx, "con_missing", at, true) })
	wantCode(t, "DeleteConsumer(missing)", err, keygate.CodeNotFound)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.UpdateConsumer(ctx, c1) })
	wantCode(t, "UpdateConsumer(deleted)", err, keygate.CodeNotFound)

	update(t, s, func(tx keygate.Tx) error { return tx.DeleteConsumer(ctx, c2.ID, at, true) })
	list, _, err := s.Consumers(ctx, keygate.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("Consumers after deleting both = %d consumers; want none", len(list))
	}
	if raw, ok := s.(rawReader); ok {
		for _, tc := range []struct {
			id          string
			name, email string
		}{{c1.ID, c1.Name, c1.Email}, {c2.ID, "", ""}} {
			name, email := rawNameEmail(t, raw, tc.id)
			if name != tc.name || email != tc.email {
				t.Errorf("stored name, email of %s = %q, %q; want %q, %q", tc.id, name, email, tc.name, tc.email)
			}
		}
		// Purging a consumer that was deleted earlier erases it too.
		update(t, s, func(tx keygate.Tx) error { return tx.DeleteConsumer(ctx, c1.ID, at, true) })
		if name, email := rawNameEmail(t, raw, c1.ID); name != "" || email != "" {
			t.Errorf("stored name, email after later purge = %q, %q; want empty", name, email)
		}
	}
}

func testPlans(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	at := now()
	p := &keygate.Plan{
		Name:          "gold",
		RateLimits:    []keygate.Window{{Name: "minute", Limit: 1000, Period: keygate.Duration(time.Minute)}},
		Quota:         &keygate.Quota{Limit: 100000, Period: keygate.PeriodMonth},
		ScopesAllowed: []string{"products:*", "*:read"},
		MaxAge:        ptr(keygate.Duration(90 * keygate.Day)),
		ManagedBy:     keygate.ManagedByAPI, CreatedAt: at, UpdatedAt: at,
	}
	update(t, s, func(tx keygate.Tx) error { return tx.CreatePlan(ctx, p) })
	got, err := s.Plan(ctx, "gold")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "Plan", got, p)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.CreatePlan(ctx, p) })
	wantCode(t, "CreatePlan(existing)", err, keygate.CodeConflict)
	_, err = s.Plan(ctx, "silver")
	wantCode(t, "Plan(missing)", err, keygate.CodeNotFound)

	p.Quota, p.MaxAge, p.ManagedBy, p.UpdatedAt = nil, nil, keygate.ManagedByConfig, at.Add(time.Minute)
	update(t, s, func(tx keygate.Tx) error { return tx.UpdatePlan(ctx, p) })
	got, err = s.Plan(ctx, "gold")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "Plan after update", got, p)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.UpdatePlan(ctx, &keygate.Plan{Name: "silver"}) })
	wantCode(t, "UpdatePlan(missing)", err, keygate.CodeNotFound)

	update(t, s, func(tx keygate.Tx) error {
		for i, name := range []string{"a", "b", "c"} {
			if err := tx.CreatePlan(ctx, &keygate.Plan{Name: name, CreatedAt: at.Add(time.Duration(i+1) * time.Second)}); err != nil {
				return err
			}
		}
		return nil
	})
	page, next, err := s.Plans(ctx, keygate.ListParams{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	page2, next2, err := s.Plans(ctx, keygate.ListParams{Limit: 2, Cursor: next})
	if err != nil {
		t.Fatal(err)
	}
	names := ids(append(page, page2...), func(p *keygate.Plan) string { return p.Name })
	equal(t, "Plans", names, []string{"c", "b", "a", "gold"})
	if next2 != "" {
		t.Errorf("Plans last page cursor = %q; want empty", next2)
	}

	update(t, s, func(tx keygate.Tx) error { return tx.DeletePlan(ctx, "gold") })
	_, err = s.Plan(ctx, "gold")
	wantCode(t, "Plan(deleted)", err, keygate.CodeNotFound)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.DeletePlan(ctx, "gold") })
	wantCode(t, "DeletePlan(missing)", err, keygate.CodeNotFound)
}

func testPlanInUse(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	at := now()
	update(t, s, func(tx keygate.Tx) error {
		return tx.CreatePlan(ctx, &keygate.Plan{Name: "gold", CreatedAt: at, UpdatedAt: at})
	})
	inUse := func(want bool, when string) {
		t.Helper()
		got, err := s.PlanInUse(ctx, "gold")
		if err != nil || got != want {
			t.Errorf("PlanInUse(gold) %s = %v, %v; want %v", when, got, err, want)
		}
	}
	inUse(false, "unused")
	c := newConsumer(at)
	c.Plan = "gold"
	update(t, s, func(tx keygate.Tx) error { return tx.CreateConsumer(ctx, c) })
	inUse(true, "named by a consumer")
	update(t, s, func(tx keygate.Tx) error { return tx.DeleteConsumer(ctx, c.ID, at, false) })
	inUse(false, "named by a deleted consumer")

	owner := createConsumer(t, s)
	k := newKey(owner.ID, at)
	k.Plan = "gold"
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, k) })
	inUse(true, "named by a key")
	k.State, k.RevokedAt, k.RevokeReason = keygate.StateRevoked, ptr(at), ptr("test")
	update(t, s, func(tx keygate.Tx) error { return tx.UpdateKey(ctx, k) })
	inUse(false, "named by a revoked key")
}

func testKeys(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	c := createConsumer(t, s)
	at := now()
	k := newKey(c.ID, at)
	k.Plan = "gold"
	k.Quota = &keygate.Quota{Limit: 10, Period: keygate.PeriodDay}
	k.ExpiresAt = ptr(at.Add(time.Hour))
	k.MaxAge = ptr(keygate.Duration(30 * keygate.Day))
	k.Metadata = map[string]any{"team": "mobile", "n": float64(1.5), "nested": map[string]any{"a": []any{"x"}}}
	k2 := newKey(c.ID, at)
	k2.Kind, k2.Env, k2.Scopes, k2.IPAllow, k2.ReferrerAllow, k2.RateLimits, k2.Metadata =
		keygate.KindPublishable, keygate.EnvTest, nil, nil, []string{"https://app.example.com"}, nil, nil
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, k, k2) })

	for _, want := range []*keygate.Key{k, k2} {
		got, err := s.Key(ctx, want.ID)
		if err != nil {
			t.Fatalf("Key(%q): %v", want.ID, err)
		}
		equal(t, "Key", got, want)
		got, err = s.KeyByHash(ctx, want.Hash)
		if err != nil {
			t.Fatalf("KeyByHash: %v", err)
		}
		equal(t, "KeyByHash", got, want)
	}
	_, err := s.Key(ctx, "key_missing")
	wantCode(t, "Key(missing)", err, keygate.CodeNotFound)
	_, err = s.KeyByHash(ctx, randomHash())
	wantCode(t, "KeyByHash(unknown)", err, keygate.CodeNotFound)

	dupID := newKey(c.ID, at)
	dupID.ID = k.ID
	dupHash := newKey(c.ID, at)
	dupHash.Hash = k.Hash
	noOwner := newKey("con_missing", at)
	for name, bad := range map[string]*keygate.Key{"existing id": dupID, "existing hash": dupHash, "missing consumer": noOwner} {
		err := s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, bad) })
		wantCode(t, "CreateKeys with "+name, err, keygate.CodeConflict)
	}

	// Update every mutable field.
	k.Name, k.Scopes, k.Plan, k.Quota = "renamed", []string{"orders:write"}, "", nil
	k.RateLimits = []keygate.Window{{Name: "day", Limit: 9, Period: keygate.Duration(keygate.Day)}}
	k.IPAllow, k.ReferrerAllow, k.ExpiresAt, k.MaxAge = []string{"::1/128"}, []string{"https://x.example"}, nil, nil
	k.State, k.Status = keygate.StateDisabled, keygate.StateDisabled
	k.RotatedTo, k.RotatedFrom = ptr("key_next"), ptr("key_prev")
	k.LimiterID, k.UpdatedAt, k.LastUsedAt = "key_prev", at.Add(time.Second), ptr(at)
	k.Metadata = map[string]any{"changed": true}
	update(t, s, func(tx keygate.Tx) error { return tx.UpdateKey(ctx, k) })
	got, err := s.Key(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "Key after UpdateKey", got, k)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.UpdateKey(ctx, newKey(c.ID, at)) })
	wantCode(t, "UpdateKey(missing)", err, keygate.CodeNotFound)

	n, err := s.CountKeys(ctx, c.ID)
	if err != nil || n != 2 {
		t.Errorf("CountKeys = %d, %v; want 2", n, err)
	}
	k2.State, k2.Status, k2.RevokedAt, k2.RevokeReason = keygate.StateRevoked, keygate.StateRevoked, ptr(at), ptr("leaked")
	update(t, s, func(tx keygate.Tx) error { return tx.UpdateKey(ctx, k2) })
	n, err = s.CountKeys(ctx, c.ID)
	if err != nil || n != 1 {
		t.Errorf("CountKeys after revoking one = %d, %v; want 1", n, err)
	}
	// Revocation is final: a later write of another state keeps it revoked.
	k2.State = keygate.StateActive
	update(t, s, func(tx keygate.Tx) error { return tx.UpdateKey(ctx, k2) })
	if got, err := s.Key(ctx, k2.ID); err != nil || got.State != keygate.StateRevoked {
		t.Errorf("Key(revoked, then written active).State = %v, %v; want revoked", got, err)
	}
	if n, err := s.CountKeys(ctx, "con_missing"); err != nil || n != 0 {
		t.Errorf("CountKeys(missing) = %d, %v; want 0", n, err)
	}
}

func testKeyPaging(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	c1, c2 := createConsumer(t, s), createConsumer(t, s)
	base := now()
	var all, ofC1 []*keygate.Key
	for i := range 120 {
		owner := c1
		if i%3 == 0 {
			owner = c2
		}
		// Groups of four keys share a creation time, so ids break ties.
		k := newKey(owner.ID, base.Add(time.Duration(i/4)*time.Millisecond))
		all = append(all, k)
		if owner == c1 {
			ofC1 = append(ofC1, k)
		}
	}
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, all...) })
	key := func(k *keygate.Key) (time.Time, string) { return k.CreatedAt, k.ID }
	sortNewest(all, key)
	sortNewest(ofC1, key)
	keyID := func(k *keygate.Key) string { return k.ID }
	for _, tc := range []struct {
		name     string
		consumer string
		want     []*keygate.Key
	}{{"all", "", all}, {"one consumer", c1.ID, ofC1}} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 40 {
				t.Fatalf("%s: paging does not end", tc.name)
			}
			page, next, err := s.Keys(ctx, keygate.KeyFilter{ConsumerID: tc.consumer, ListParams: keygate.ListParams{Limit: 7, Cursor: cursor}})
			if err != nil {
				t.Fatalf("Keys: %v", err)
			}
			if len(page) > 7 {
				t.Fatalf("%s: page of %d keys; want at most 7", tc.name, len(page))
			}
			got = append(got, ids(page, keyID)...)
			if next == "" {
				break
			}
			cursor = next
		}
		equal(t, tc.name+": ids paged with limit 7", got, ids(tc.want, keyID))
	}
	_, _, err := s.Keys(ctx, keygate.KeyFilter{ListParams: keygate.ListParams{Cursor: "not a cursor!"}})
	wantCode(t, "Keys with a bad cursor", err, keygate.CodeBadRequest)
}

func testListLimits(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	c := createConsumer(t, s)
	at := now()
	ks := make([]*keygate.Key, 1003)
	for i := range ks {
		ks[i] = newKey(c.ID, at.Add(time.Duration(i)*time.Microsecond))
	}
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, ks...) })
	for _, tc := range []struct{ limit, want int }{{0, 50}, {-1, 50}, {1, 1}, {1000, 1000}, {5000, 1000}} {
		page, next, err := s.Keys(ctx, keygate.KeyFilter{ListParams: keygate.ListParams{Limit: tc.limit}})
		if err != nil || len(page) != tc.want || next == "" {
			t.Errorf("Keys(limit %d) = %d keys, cursor %q, %v; want %d keys and a cursor", tc.limit, len(page), next, err, tc.want)
		}
	}
	page, next, err := s.Keys(ctx, keygate.KeyFilter{ListParams: keygate.ListParams{Limit: 1003}})
	if err != nil || len(page) != 1000 {
		t.Fatalf("Keys(limit 1003) = %d, %v", len(page), err)
	}
	rest, next, err := s.Keys(ctx, keygate.KeyFilter{ListParams: keygate.ListParams{Limit: 1000, Cursor: next}})
	if err != nil || len(rest) != 3 || next != "" {
		t.Errorf("Keys(second page) = %d keys, cursor %q, %v; want 3 keys and no cursor", len(rest), next, err)
	}
	if n, err := s.CountKeys(ctx, c.ID); err != nil || n != 1003 {
		t.Errorf("CountKeys = %d, %v; want 1003", n, err)
	}
}

func testKeyStatusFilter(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	c := createConsumer(t, s)
	at := now()
	nowT := at.Add(time.Hour)
	mk := func(name, state string, expires *time.Time) *keygate.Key {
		k := newKey(c.ID, at)
		k.Name, k.State, k.ExpiresAt = name, state, expires
		if state == keygate.StateRevoked {
			k.RevokedAt = ptr(at)
		}
		return k
	}
	past, future, exact := ptr(at), ptr(nowT.Add(time.Minute)), ptr(nowT)
	list := []*keygate.Key{
		mk("active", keygate.StateActive, nil),
		mk("active-future", keygate.StateActive, future),
		mk("expired", keygate.StateActive, past),
		mk("expired-now", keygate.StateActive, exact),
		mk("disabled", keygate.StateDisabled, nil),
		mk("disabled-expired", keygate.StateDisabled, past),
		mk("revoked", keygate.StateRevoked, nil),
		mk("revoked-expired", keygate.StateRevoked, past),
	}
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, list...) })
	for _, tc := range []struct {
		status string
		want   []string
	}{
		{keygate.StateActive, []string{"active", "active-future"}},
		{keygate.StatusExpired, []string{"disabled-expired", "expired", "expired-now"}},
		{keygate.StateDisabled, []string{"disabled"}},
		{keygate.StateRevoked, []string{"revoked", "revoked-expired"}},
		{"", []string{"active", "active-future", "disabled", "disabled-expired", "expired", "expired-now", "revoked", "revoked-expired"}},
	} {
		got, _, err := s.Keys(ctx, keygate.KeyFilter{Status: tc.status, Now: nowT})
		if err != nil {
			t.Fatalf("Keys(status %q): %v", tc.status, err)
		}
		var names []string
		for _, k := range got {
			names = append(names, k.Name)
			if want := k.StatusAt(nowT); k.Status != want {
				t.Errorf("Keys(status %q): key %q has Status %q; want %q", tc.status, k.Name, k.Status, want)
			}
			if tc.status != "" && k.Status != tc.status {
				t.Errorf("Keys(status %q) returned key %q of status %q", tc.status, k.Name, k.Status)
			}
		}
		sort.Strings(names)
		equal(t, fmt.Sprintf("Keys(status %q)", tc.status), names, tc.want)
	}
	_, _, err := s.Keys(ctx, keygate.KeyFilter{Status: "bogus"})
	wantCode(t, "Keys(status bogus)", err, keygate.CodeBadRequest)
}

func testRootKeys(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	at := now()
	r := &keygate.RootKey{ID: newID("root"), Name: "bootstrap", Start: "kg_root_abcd",
		Permissions: []string{keygate.PermAdmin}, CreatedAt: at, Hash: randomHash()}
	r2 := &keygate.RootKey{ID: newID("root"), Name: "ci", Start: "kg_root_efgh",
		Permissions: []string{keygate.PermKeysRead, keygate.PermKeysWrite}, CreatedAt: at.Add(time.Second),
		CreatedBy: r.ID, Hash: randomHash()}
	update(t, s, func(tx keygate.Tx) error {
		if err := tx.CreateRootKey(ctx, r); err != nil {
			return err
		}
		return tx.CreateRootKey(ctx, r2)
	})
	for _, want := range []*keygate.RootKey{r, r2} {
		got, err := s.RootKey(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "RootKey", got, want)
		got, err = s.RootKeyByHash(ctx, want.Hash)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "RootKeyByHash", got, want)
	}
	_, err := s.RootKey(ctx, "root_missing")
	wantCode(t, "RootKey(missing)", err, keygate.CodeNotFound)
	_, err = s.RootKeyByHash(ctx, randomHash())
	wantCode(t, "RootKeyByHash(unknown)", err, keygate.CodeNotFound)
	dup := *r2
	dup.ID = newID("root")
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.CreateRootKey(ctx, &dup) })
	wantCode(t, "CreateRootKey(existing hash)", err, keygate.CodeConflict)

	revokedAt := at.Add(time.Minute)
	update(t, s, func(tx keygate.Tx) error { return tx.RevokeRootKey(ctx, r2.ID, revokedAt) })
	got, err := s.RootKey(ctx, r2.ID)
	if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(revokedAt) {
		t.Errorf("RootKey after revoke = %+v, %v; want revoked_at %v", got, err, revokedAt)
	}
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.RevokeRootKey(ctx, "root_missing", at) })
	wantCode(t, "RevokeRootKey(missing)", err, keygate.CodeNotFound)

	update(t, s, func(tx keygate.Tx) error {
		return tx.SetRootKeyPermissions(ctx, r.ID, []string{keygate.PermAdmin, keygate.PermAuditRead})
	})
	if got, err := s.RootKey(ctx, r.ID); err != nil || len(got.Permissions) != 2 || got.Permissions[0] != keygate.PermAdmin {
		t.Errorf("RootKey after SetRootKeyPermissions = %+v, %v", got, err)
	}
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.SetRootKeyPermissions(ctx, "root_missing", nil) })
	wantCode(t, "SetRootKeyPermissions(missing)", err, keygate.CodeNotFound)

	list, next, err := s.RootKeys(ctx, keygate.ListParams{})
	if err != nil || next != "" {
		t.Fatalf("RootKeys: %v, cursor %q", err, next)
	}
	equal(t, "RootKeys", ids(list, func(r *keygate.RootKey) string { return r.ID }), []string{r2.ID, r.ID})
}

func newEntry(i int, at time.Time) *keygate.AuditEntry {
	actions := []string{"key.create", "key.revoke", "consumer.create"}
	return &keygate.AuditEntry{
		TS:    at.Add(time.Duration(i) * time.Second),
		Actor: fmt.Sprintf("root_%d", i%2), Action: actions[i%3], TargetType: "key",
		TargetID: fmt.Sprintf("key_%d", i%5), IP: "203.0.113.7", Result: keygate.ResultSuccess,
		Details: map[string]any{"i": float64(i), "reason": "ünïcode ✓"},
	}
}

// checkChain checks that entries are seq 1..n, each hash chained on its predecessor's.
func checkChain(t *testing.T, entries []*keygate.AuditEntry) {
	t.Helper()
	prev := ""
	for i, e := range entries {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d; want %d", i, e.Seq, i+1)
		}
		c := *e
		c.Hash = ""
		want, _ := Hasher(prev, &c)
		if e.Hash != want {
			t.Fatalf("entry seq %d: hash %q; want %q (chained on %q)", e.Seq, e.Hash, want, prev)
		}
		prev = e.Hash
	}
}

func scanAll(t *testing.T, s keygate.Store) []*keygate.AuditEntry {
	t.Helper()
	var out []*keygate.AuditEntry
	if err := s.ScanAudit(ctxT(t), func(e *keygate.AuditEntry) error { out = append(out, e); return nil }); err != nil {
		t.Fatalf("ScanAudit: %v", err)
	}
	return out
}

func testAudit(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	if seq, hash, err := s.AuditHead(ctx); err != nil || seq != 0 || hash != "" {
		t.Errorf("AuditHead of an empty log = %d, %q, %v; want 0, \"\"", seq, hash, err)
	}
	at := now()
	var appended []*keygate.AuditEntry
	for i := range 30 {
		e := newEntry(i, at)
		// The hasher sees the entry with its seq and without a hash (Hasher refuses one).
		e.Hash = ""
		update(t, s, func(tx keygate.Tx) error { return tx.AppendAudit(ctx, e) })
		appended = append(appended, e)
	}
	checkChain(t, appended)
	all := scanAll(t, s)
	equal(t, "ScanAudit", all, appended)
	seq, hash, err := s.AuditHead(ctx)
	if err != nil || seq != 30 || hash != appended[29].Hash {
		t.Errorf("AuditHead = %d, %q, %v; want 30, %q", seq, hash, err, appended[29].Hash)
	}

	from, to := at.Add(10*time.Second), at.Add(20*time.Second)
	for _, tc := range []struct {
		name string
		f    keygate.AuditFilter
		keep func(e *keygate.AuditEntry) bool
	}{
		{"all", keygate.AuditFilter{}, func(*keygate.AuditEntry) bool { return true }},
		{"actor", keygate.AuditFilter{Actor: "root_1"}, func(e *keygate.AuditEntry) bool { return e.Actor == "root_1" }},
		{"action", keygate.AuditFilter{Action: "key.revoke"}, func(e *keygate.AuditEntry) bool { return e.Action == "key.revoke" }},
		{"target", keygate.AuditFilter{Target: "key_3"}, func(e *keygate.AuditEntry) bool { return e.TargetID == "key_3" }},
		{"from-to", keygate.AuditFilter{From: &from, To: &to}, func(e *keygate.AuditEntry) bool {
			return !e.TS.Before(from) && e.TS.Before(to)
		}},
		{"combined", keygate.AuditFilter{Actor: "root_0", Action: "key.create", From: &from}, func(e *keygate.AuditEntry) bool {
			return e.Actor == "root_0" && e.Action == "key.create" && !e.TS.Before(from)
		}},
		{"none", keygate.AuditFilter{Actor: "nobody"}, func(*keygate.AuditEntry) bool { return false }},
	} {
		var want []*keygate.AuditEntry
		for i := len(appended) - 1; i >= 0; i-- {
			if tc.keep(appended[i]) {
				want = append(want, appended[i])
			}
		}
		var got []*keygate.AuditEntry
		f := tc.f
		f.Limit = 4
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatalf("%s: paging does not end", tc.name)
			}
			page, next, err := s.AuditEntries(ctx, f)
			if err != nil {
				t.Fatalf("AuditEntries(%s): %v", tc.name, err)
			}
			got = append(got, page...)
			if next == "" {
				break
			}
			f.Cursor = next
		}
		seqs := func(es []*keygate.AuditEntry) []int64 {
			out := []int64{}
			for _, e := range es {
				out = append(out, e.Seq)
			}
			return out
		}
		equal(t, "AuditEntries("+tc.name+") seqs", seqs(got), seqs(want))
	}
	_, _, err = s.AuditEntries(ctx, keygate.AuditFilter{ListParams: keygate.ListParams{Cursor: "%%%"}})
	wantCode(t, "AuditEntries(bad cursor)", err, keygate.CodeBadRequest)

	// A failing hasher fails the append, and nothing is written.
	stop := errors.New("stop")
	err = s.ScanAudit(ctx, func(*keygate.AuditEntry) error { return stop })
	if !errors.Is(err, stop) {
		t.Errorf("ScanAudit with a failing fn = %v; want its error", err)
	}
}

func testAuditConcurrent(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	const workers, each = 8, 15
	at := now()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				e := newEntry(w*each+i, at)
				if err := s.Update(ctx, func(tx keygate.Tx) error { return tx.AppendAudit(ctx, e) }); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent AppendAudit: %v", err)
	}
	all := scanAll(t, s)
	if len(all) != workers*each {
		t.Fatalf("ScanAudit after concurrent appends = %d entries; want %d", len(all), workers*each)
	}
	checkChain(t, all)
}

func testScanAuditPages(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	const n = 1234 // more than two pages of ScanAudit
	at := now()
	update(t, s, func(tx keygate.Tx) error {
		for i := range n {
			if err := tx.AppendAudit(ctx, newEntry(i, at)); err != nil {
				return err
			}
		}
		return nil
	})
	var count int
	var prev int64
	err := s.ScanAudit(ctx, func(e *keygate.AuditEntry) error {
		count++
		if e.Seq != prev+1 {
			return fmt.Errorf("seq %d after %d", e.Seq, prev)
		}
		prev = e.Seq
		// fn may use the store while scanning.
		_, _, err := s.AuditHead(ctx)
		return err
	})
	if err != nil || count != n {
		t.Fatalf("ScanAudit = %d entries, %v; want %d", count, err, n)
	}
	checkChain(t, scanAll(t, s))
}

func testUpdateRollback(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	at := now()
	c := newConsumer(at)
	k := newKey(c.ID, at)
	p := &keygate.Plan{Name: "rollback", CreatedAt: at, UpdatedAt: at}
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx keygate.Tx) error {
		if err := tx.CreateConsumer(ctx, c); err != nil {
			return err
		}
		if err := tx.CreateKeys(ctx, k); err != nil {
			return err
		}
		if err := tx.CreatePlan(ctx, p); err != nil {
			return err
		}
		if err := tx.AppendAudit(ctx, newEntry(0, at)); err != nil {
			return err
		}
		if err := tx.PutIdempotency(ctx, &keygate.IdempotencyRecord{Scope: "root_1", Key: "k", CreatedAt: at}); err != nil {
			return err
		}
		// Reads inside the transaction see its writes.
		if _, err := tx.Key(ctx, k.ID); err != nil {
			return fmt.Errorf("read own write: %w", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v; want the error of fn", err)
	}
	_, err = s.Consumer(ctx, c.ID)
	wantCode(t, "Consumer after rollback", err, keygate.CodeNotFound)
	_, err = s.Key(ctx, k.ID)
	wantCode(t, "Key after rollback", err, keygate.CodeNotFound)
	_, err = s.Plan(ctx, p.Name)
	wantCode(t, "Plan after rollback", err, keygate.CodeNotFound)
	_, err = s.Idempotency(ctx, "root_1", "k", time.Time{})
	wantCode(t, "Idempotency after rollback", err, keygate.CodeNotFound)
	if seq, _, err := s.AuditHead(ctx); err != nil || seq != 0 {
		t.Errorf("AuditHead after rollback = %d, %v; want 0", seq, err)
	}
	if all := scanAll(t, s); len(all) != 0 {
		t.Errorf("audit entries after rollback = %d; want 0", len(all))
	}

	// A failed statement rolls back the whole transaction too.
	err = s.Update(ctx, func(tx keygate.Tx) error {
		if err := tx.CreateConsumer(ctx, c); err != nil {
			return err
		}
		return tx.CreateKeys(ctx, newKey("con_missing", at))
	})
	wantCode(t, "CreateKeys of a missing consumer", err, keygate.CodeConflict)
	_, err = s.Consumer(ctx, c.ID)
	wantCode(t, "Consumer after a failed statement", err, keygate.CodeNotFound)
}

func testUpdateContext(t *testing.T, s keygate.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	called := false
	err := s.Update(ctx, func(tx keygate.Tx) error {
		called = true
		return tx.CreateConsumer(ctx, newConsumer(now()))
	})
	if err == nil {
		t.Errorf("Update with a cancelled context = nil (fn called: %v); want an error", called)
	}
	if _, err := s.Key(ctx, "key_x"); err == nil || keygate.ErrorCode(err) == keygate.CodeNotFound {
		t.Errorf("Key with a cancelled context = %v; want a context error", err)
	}
	list, _, err := s.Consumers(ctxT(t), keygate.ListParams{})
	if err != nil || len(list) != 0 {
		t.Errorf("Consumers after a cancelled Update = %d, %v; want none", len(list), err)
	}
}

func testLock(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	// Two transactions take the same named lock; each increments a counter row that the other
	// also reads, so without the lock both could read the same value.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for range 4 {
		wg.Go(func() {
			err := s.Update(ctx, func(tx keygate.Tx) error {
				if err := tx.Lock(ctx, "bootstrap"); err != nil {
					return err
				}
				if _, err := tx.Plan(ctx, "singleton"); err == nil {
					return nil
				} else if keygate.ErrorCode(err) != keygate.CodeNotFound {
					return err
				}
				at := now()
				return tx.CreatePlan(ctx, &keygate.Plan{Name: "singleton", CreatedAt: at, UpdatedAt: at})
			})
			if err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range failed {
		t.Errorf("Update under Lock: %v", err)
	}
	if _, err := s.Plan(ctx, "singleton"); err != nil {
		t.Errorf("Plan(singleton): %v", err)
	}
}

func testIdempotency(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	at := now()
	r := &keygate.IdempotencyRecord{Scope: "root_1", Key: "abc", RequestHash: randomHash(), Status: 201,
		Body: []byte(`{"id":"key_1"}`), CreatedAt: at}
	update(t, s, func(tx keygate.Tx) error { return tx.PutIdempotency(ctx, r) })
	got, err := s.Idempotency(ctx, "root_1", "abc", at.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "Idempotency", got, r)
	_, err = s.Idempotency(ctx, "root_1", "abc", at.Add(time.Second))
	wantCode(t, "Idempotency(older than since)", err, keygate.CodeNotFound)
	_, err = s.Idempotency(ctx, "root_2", "abc", time.Time{})
	wantCode(t, "Idempotency(other scope)", err, keygate.CodeNotFound)

	again := *r
	again.Status, again.CreatedAt = 200, at.Add(time.Hour)
	err = s.Update(ctx, func(tx keygate.Tx) error { return tx.PutIdempotency(ctx, &again) })
	wantCode(t, "PutIdempotency of a live key", err, keygate.CodeConflict)
	other := again
	other.Scope = "root_2"
	update(t, s, func(tx keygate.Tx) error { return tx.PutIdempotency(ctx, &other) })

	// A record older than 24 h no longer blocks its key.
	later := *r
	later.Status, later.Body, later.CreatedAt = 202, nil, at.Add(25*time.Hour)
	update(t, s, func(tx keygate.Tx) error { return tx.PutIdempotency(ctx, &later) })
	got, err = s.Idempotency(ctx, "root_1", "abc", at)
	if err != nil || got.Status != 202 || !got.CreatedAt.Equal(later.CreatedAt) {
		t.Errorf("Idempotency after replacing a stale record = %+v, %v; want status 202", got, err)
	}

	if err := s.PurgeIdempotency(ctx, at.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Idempotency(ctx, "root_2", "abc", time.Time{})
	wantCode(t, "Idempotency after purge", err, keygate.CodeNotFound)
	if _, err := s.Idempotency(ctx, "root_1", "abc", time.Time{}); err != nil {
		t.Errorf("Idempotency of a record newer than the purge: %v", err)
	}
	// Delete frees the key at once (a claim whose request failed); deleting nothing is fine.
	update(t, s, func(tx keygate.Tx) error { return tx.DeleteIdempotency(ctx, "root_1", "abc") })
	_, err = s.Idempotency(ctx, "root_1", "abc", time.Time{})
	wantCode(t, "Idempotency after delete", err, keygate.CodeNotFound)
	update(t, s, func(tx keygate.Tx) error { return tx.DeleteIdempotency(ctx, "root_1", "abc") })
	update(t, s, func(tx keygate.Tx) error { return tx.PutIdempotency(ctx, r) })
}

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

func testUsage(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	d1, d2, d3 := day(2026, 11, 28), day(2026, 11, 29), day(2026, 11, 30)
	deltas := []keygate.UsageDelta{
		{KeyID: "key_a", ConsumerID: "con_1", LimiterID: "lim_1", Day: d1, Requests: 5},
		{KeyID: "key_a", ConsumerID: "con_1", LimiterID: "lim_1", Day: d1, Requests: 7}, // same row twice in a batch
		{KeyID: "key_b", ConsumerID: "con_1", LimiterID: "lim_1", Day: d2, Requests: 3}, // rotated successor of key_a
		{KeyID: "key_c", ConsumerID: "con_2", LimiterID: "lim_2", Day: d2, Requests: 100},
		{KeyID: "key_c", ConsumerID: "con_2", LimiterID: "lim_2", Day: d3, Requests: 1},
	}
	if err := s.AddUsage(ctx, deltas); err != nil {
		t.Fatalf("AddUsage: %v", err)
	}
	if err := s.AddUsage(ctx, deltas[:1]); err != nil {
		t.Fatalf("AddUsage: %v", err)
	}
	if err := s.AddUsage(ctx, nil); err != nil {
		t.Fatalf("AddUsage(nil): %v", err)
	}
	for _, tc := range []struct {
		name     string
		fn       func(context.Context, string, time.Time, time.Time) (int64, error)
		id       string
		from, to time.Time
		want     int64
	}{
		{"limiter all days", s.UsageByLimiter, "lim_1", d1, d3.Add(keygate.Day), 20},
		{"limiter first day", s.UsageByLimiter, "lim_1", d1, d2, 17},
		{"limiter empty range", s.UsageByLimiter, "lim_1", d3, d3.Add(keygate.Day), 0},
		{"limiter unknown", s.UsageByLimiter, "lim_x", d1, d3, 0},
		{"consumer", s.UsageByConsumer, "con_2", d1, d3.Add(keygate.Day), 101},
		{"consumer to exclusive", s.UsageByConsumer, "con_2", d1, d3, 100},
	} {
		got, err := tc.fn(ctx, tc.id, tc.from, tc.to)
		if err != nil || got != tc.want {
			t.Errorf("%s: usage(%s, %v, %v) = %d, %v; want %d", tc.name, tc.id, tc.from, tc.to, got, err, tc.want)
		}
	}
	rows, err := s.UsageRows(ctx, "", d1, d3.Add(keygate.Day))
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "UsageRows(all)", rows, []keygate.UsageRow{
		{Day: d1, ConsumerID: "con_1", KeyID: "key_a", Requests: 17},
		{Day: d2, ConsumerID: "con_1", KeyID: "key_b", Requests: 3},
		{Day: d2, ConsumerID: "con_2", KeyID: "key_c", Requests: 100},
		{Day: d3, ConsumerID: "con_2", KeyID: "key_c", Requests: 1},
	})
	rows, err = s.UsageRows(ctx, "con_1", d2, d3)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "UsageRows(con_1, one day)", rows, []keygate.UsageRow{{Day: d2, ConsumerID: "con_1", KeyID: "key_b", Requests: 3}})

	// Concurrent batches on the same rows all count.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := s.AddUsage(ctx, deltas[3:4]); err != nil {
				t.Errorf("concurrent AddUsage: %v", err)
			}
		})
	}
	wg.Wait()
	if got, err := s.UsageByLimiter(ctx, "lim_2", d2, d3); err != nil || got != 900 {
		t.Errorf("usage after 8 concurrent batches = %d, %v; want 900", got, err)
	}

	// A batch larger than one statement's rows (several chunks, and a remainder) counts whole.
	var big []keygate.UsageDelta
	for i := range 457 {
		big = append(big, keygate.UsageDelta{Day: d1, ConsumerID: "con_big", LimiterID: "lim_big",
			KeyID: fmt.Sprintf("key_big_%03d", i), Requests: int64(i%3 + 1)})
	}
	for range 2 {
		if err := s.AddUsage(ctx, big); err != nil {
			t.Fatalf("AddUsage(457 rows): %v", err)
		}
	}
	var want int64
	for _, d := range big {
		want += 2 * d.Requests
	}
	if got, err := s.UsageByConsumer(ctx, "con_big", d1, d1.AddDate(0, 0, 1)); err != nil || got != want {
		t.Errorf("usage of a 457-row batch twice = %d, %v; want %d", got, err, want)
	}
}

func testTouchKeys(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	c := createConsumer(t, s)
	at := now()
	k1, k2 := newKey(c.ID, at), newKey(c.ID, at)
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, k1, k2) })
	t1 := at.Add(time.Minute)
	if err := s.TouchKeys(ctx, map[string]time.Time{k1.ID: t1, k2.ID: t1, "key_missing": t1}); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	// An older time (a late batch of another node) does not move last_used_at back.
	if err := s.TouchKeys(ctx, map[string]time.Time{k1.ID: at, k2.ID: t1.Add(time.Second)}); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	for id, want := range map[string]time.Time{k1.ID: t1, k2.ID: t1.Add(time.Second)} {
		k, err := s.Key(ctx, id)
		if err != nil || k.LastUsedAt == nil || !k.LastUsedAt.Equal(want) {
			t.Errorf("Key(%s).LastUsedAt = %v, %v; want %v", id, k.LastUsedAt, err, want)
		}
	}
	if err := s.TouchKeys(ctx, nil); err != nil {
		t.Errorf("TouchKeys(nil) = %v", err)
	}
}

func testUnicode(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	at := now()
	c := newConsumer(at)
	c.Name, c.Email = "Zoë Ångström — 日本語 🚀", "zoë@bücher.example"
	c.Metadata = map[string]any{"clé": "välue ✓", "emoji": "👩‍💻", "nul-free \u2028": "line\u2029sep", "quote": `"\'<>&`}
	update(t, s, func(tx keygate.Tx) error { return tx.CreateConsumer(ctx, c) })
	got, err := s.Consumer(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "unicode consumer", got, c)

	k := newKey(c.ID, at)
	k.Name, k.Scopes = "アプリ 🔑", []string{"produits:lire"}
	k.RevokeReason = ptr("fuite détectée 🔥")
	k.State, k.Status, k.RevokedAt = keygate.StateRevoked, keygate.StateRevoked, ptr(at)
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, k) })
	gotK, err := s.Key(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "unicode key", gotK, k)

	e := newEntry(1, at)
	e.Actor, e.Details = "portal:zoë", map[string]any{"név": "Ödön 🎉"}
	update(t, s, func(tx keygate.Tx) error { return tx.AppendAudit(ctx, e) })
	list, _, err := s.AuditEntries(ctx, keygate.AuditFilter{Actor: "portal:zoë"})
	if err != nil || len(list) != 1 {
		t.Fatalf("AuditEntries(unicode actor) = %d, %v", len(list), err)
	}
	equal(t, "unicode audit entry", list[0], e)
}

func testLargeMetadata(t *testing.T, s keygate.Store) {
	ctx := ctxT(t)
	at := now()
	c := createConsumer(t, s)
	meta := map[string]any{"blob": strings.Repeat("x", 256<<10)}
	for i := range 2000 {
		meta[fmt.Sprintf("field_%04d", i)] = map[string]any{"n": float64(i), "s": strings.Repeat("é", i%50)}
	}
	k := newKey(c.ID, at)
	k.Metadata = meta
	k.Scopes = make([]string, 500)
	for i := range k.Scopes {
		k.Scopes[i] = fmt.Sprintf("resource_%d:read", i)
	}
	update(t, s, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, k) })
	got, err := s.Key(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, k) {
		t.Errorf("large metadata did not round-trip (%d fields read back of %d)", len(got.Metadata), len(meta))
	}
}

// sortNewest sorts items newest first: by creation time, then id, both descending.
func sortNewest[T any](items []T, key func(T) (time.Time, string)) {
	sort.Slice(items, func(i, j int) bool {
		ti, ii := key(items[i])
		tj, ij := key(items[j])
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return ii > ij
	})
}

func ids[T any](items []T, id func(T) string) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, id(it))
	}
	return out
}
