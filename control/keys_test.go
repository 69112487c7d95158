package control_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/keys"
)

func w(name string, limit int64, period time.Duration) keygate.Window {
	return keygate.Window{Name: name, Limit: limit, Period: keygate.Duration(period)}
}

// gold and silver are the plans of the effective-settings tests.
var (
	gold = control.PlanCreate{Name: "gold",
		RateLimits:    []keygate.Window{w("burst", 5, time.Second), w("minute", 100, time.Minute)},
		Quota:         &keygate.Quota{Limit: 5000, Period: keygate.PeriodMonth},
		ScopesAllowed: []string{"products:read", "orders:*"},
		MaxAge:        dur(30 * keygate.Day)}
	silver = control.PlanCreate{Name: "silver", RateLimits: []keygate.Window{w("minute", 50, time.Minute)}}
)

func testEffectiveSettings(t *testing.T, e *env) {
	e.plan(gold)
	e.plan(silver)
	onGold := e.consumer("gold")
	noPlan := e.consumer("")
	tests := []struct {
		name      string
		in        control.KeyCreate
		wantPlan  string
		wantWins  []keygate.Window
		wantQuota *keygate.Quota // Limit and Period only
		due       time.Duration  // rotation_due becomes true this long after creation; 0: never
	}{
		{"consumer's plan", control.KeyCreate{ConsumerID: onGold.ID},
			"gold", gold.RateLimits, gold.Quota, 30 * keygate.Day},
		{"key's plan before consumer's", control.KeyCreate{ConsumerID: onGold.ID, Plan: "silver"},
			"silver", silver.RateLimits, nil, 0},
		{"key windows replace by name and add", control.KeyCreate{ConsumerID: onGold.ID,
			RateLimits: []keygate.Window{w("hour", 1000, time.Hour), w("minute", 200, time.Minute)}},
			"gold", []keygate.Window{w("burst", 5, time.Second), w("minute", 200, time.Minute), w("hour", 1000, time.Hour)},
			gold.Quota, 30 * keygate.Day},
		{"key quota before plan's", control.KeyCreate{ConsumerID: onGold.ID, Quota: &keygate.Quota{Limit: 10, Period: keygate.PeriodDay}},
			"gold", gold.RateLimits, &keygate.Quota{Limit: 10, Period: keygate.PeriodDay}, 30 * keygate.Day},
		{"key max_age before plan's", control.KeyCreate{ConsumerID: onGold.ID, MaxAge: dur(keygate.Day)},
			"gold", gold.RateLimits, gold.Quota, keygate.Day},
		{"key's plan on a consumer without one", control.KeyCreate{ConsumerID: noPlan.ID, Plan: "gold"},
			"gold", gold.RateLimits, gold.Quota, 30 * keygate.Day},
		{"no plan", control.KeyCreate{ConsumerID: noPlan.ID, RateLimits: []keygate.Window{w("burst", 1, time.Second)}},
			"", []keygate.Window{w("burst", 1, time.Second)}, nil, 0},
		{"no plan, key max_age", control.KeyCreate{ConsumerID: noPlan.ID, MaxAge: dur(2 * time.Hour)},
			"", nil, nil, 2 * time.Hour},
	}
	for _, tc := range tests {
		e.clock.Set(base)
		created, _ := e.key(tc.in)
		k := e.get(created.ID)
		for _, v := range []*keygate.Key{created, k} {
			if v.Plan != tc.wantPlan {
				t.Errorf("%s: plan = %q; want %q", tc.name, v.Plan, tc.wantPlan)
			}
			if len(v.RateLimits) != 0 || len(tc.wantWins) != 0 {
				if !reflect.DeepEqual(v.RateLimits, tc.wantWins) {
					t.Errorf("%s: rate_limits = %v; want %v", tc.name, v.RateLimits, tc.wantWins)
				}
			}
			switch {
			case tc.wantQuota == nil && v.Quota != nil:
				t.Errorf("%s: quota = %+v; want none", tc.name, *v.Quota)
			case tc.wantQuota != nil && (v.Quota == nil || v.Quota.Limit != tc.wantQuota.Limit || v.Quota.Period != tc.wantQuota.Period):
				t.Errorf("%s: quota = %+v; want %d/%s", tc.name, v.Quota, tc.wantQuota.Limit, tc.wantQuota.Period)
			case v.Quota != nil && (v.Quota.Used == nil || *v.Quota.Used != 0 || v.Quota.ResetsAt == nil):
				t.Errorf("%s: quota used/resets_at = %v/%v; want 0 and a reset time", tc.name, v.Quota.Used, v.Quota.ResetsAt)
			}
			if v.RotationDue {
				t.Errorf("%s: rotation_due at creation", tc.name)
			}
		}
		if tc.due > 0 {
			e.clock.Set(base.Add(tc.due - time.Second))
			if e.get(k.ID).RotationDue {
				t.Errorf("%s: rotation_due one second before max_age", tc.name)
			}
			e.clock.Set(base.Add(tc.due))
			if !e.get(k.ID).RotationDue {
				t.Errorf("%s: rotation_due false at max_age", tc.name)
			}
			// Only active keys are due.
			if _, err := e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Status: keygate.Some(keygate.StateDisabled)}); err != nil {
				t.Fatal(err)
			}
			if e.get(k.ID).RotationDue {
				t.Errorf("%s: a disabled key is rotation_due", tc.name)
			}
		} else {
			e.clock.Set(base.Add(3650 * keygate.Day))
			if e.get(k.ID).RotationDue {
				t.Errorf("%s: rotation_due without any max_age", tc.name)
			}
		}
	}

	// The stored key keeps only its own settings: the plan's are applied when it is shown.
	e.clock.Set(base)
	k, _ := e.key(control.KeyCreate{ConsumerID: onGold.ID})
	stored, err := e.raw.Key(e.ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Plan != "" || stored.RateLimits != nil || stored.Quota != nil {
		t.Errorf("stored key has plan %q, windows %v, quota %v; want its own (none)", stored.Plan, stored.RateLimits, stored.Quota)
	}
	// A plan change shows at once on its keys.
	if _, err := e.svc.UpdatePlan(e.ctx, e.actor, "gold", control.PlanPatch{
		RateLimits: keygate.Some([]keygate.Window{w("second", 9, time.Second)})}); err != nil {
		t.Fatal(err)
	}
	if got := e.get(k.ID).RateLimits; !reflect.DeepEqual(got, []keygate.Window{w("second", 9, time.Second)}) {
		t.Errorf("after the plan change, rate_limits = %v", got)
	}

	// Quota usage is the durable usage of the key's limiter in the current period.
	if err := e.raw.AddUsage(e.ctx, []keygate.UsageDelta{
		{KeyID: k.ID, ConsumerID: onGold.ID, LimiterID: k.ID, Day: base.Truncate(24 * time.Hour), Requests: 12},
		{KeyID: k.ID, ConsumerID: onGold.ID, LimiterID: k.ID, Day: base.AddDate(0, -1, 0), Requests: 99}, // last month
	}); err != nil {
		t.Fatal(err)
	}
	q := e.get(k.ID).Quota
	if q == nil || q.Used == nil || *q.Used != 12 || !q.ResetsAt.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("quota = %+v; want used 12, resets_at 2026-12-01", q)
	}
}

func testScopeCeilingAndReferences(t *testing.T, e *env) {
	e.plan(gold)
	e.plan(silver)
	onGold := e.consumer("gold")
	create := []struct {
		scopes []string
		plan   string
		ok     bool
	}{
		{[]string{"products:read"}, "", true},
		{[]string{"orders:write", "orders:read"}, "", true},
		{nil, "", true},
		{[]string{"products:write"}, "", false},
		{[]string{"products:read", "admin:read"}, "", false},
		{[]string{"*:read"}, "", false}, // a wildcard grant wider than the ceiling
		{[]string{"products:*"}, "", false},
		{[]string{"products:write"}, "silver", true}, // the key's plan has no ceiling
		{[]string{"products:write"}, "gold", false},
	}
	for _, tc := range create {
		before := e.head()
		_, _, err := e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: onGold.ID, Scopes: tc.scopes, Plan: tc.plan})
		if tc.ok && err != nil {
			t.Errorf("CreateKey(scopes %v, plan %q) = %v; want ok", tc.scopes, tc.plan, err)
		}
		if !tc.ok {
			wantErr(t, "CreateKey beyond the ceiling", err, keygate.CodeBadRequest, "scopes_allowed")
			if e.head() != before {
				t.Errorf("a refused CreateKey wrote an audit entry")
			}
		}
	}

	k, _ := e.key(control.KeyCreate{ConsumerID: onGold.ID, Scopes: []string{"products:read"}})
	_, err := e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Scopes: keygate.Some([]string{"products:write"})})
	wantErr(t, "UpdateKey beyond the ceiling", err, keygate.CodeBadRequest, "products:write", "scopes_allowed")
	if got := e.get(k.ID).Scopes; !reflect.DeepEqual(got, []string{"products:read"}) {
		t.Errorf("after a refused update, scopes = %v", got)
	}
	// Moving the key to a plan with a ceiling its scopes exceed is refused too.
	k2, _ := e.key(control.KeyCreate{ConsumerID: onGold.ID, Plan: "silver", Scopes: []string{"admin:write"}})
	_, err = e.svc.UpdateKey(e.ctx, e.actor, k2.ID, control.KeyPatch{Plan: keygate.Some("gold")})
	wantErr(t, "UpdateKey to a plan whose ceiling the scopes exceed", err, keygate.CodeBadRequest, "scopes_allowed")
	if _, err := e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Scopes: keygate.Some([]string{"orders:delete"})}); err != nil {
		t.Errorf("UpdateKey within the ceiling: %v", err)
	}

	// References to plans and consumers that do not exist.
	_, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: onGold.ID, Plan: "platinum"})
	wantErr(t, "CreateKey with an unknown plan", err, keygate.CodeBadRequest, "platinum")
	_, err = e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Plan: keygate.Some("platinum")})
	wantErr(t, "UpdateKey to an unknown plan", err, keygate.CodeBadRequest, "platinum")
	_, err = e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "x", Plan: "platinum"})
	wantErr(t, "CreateConsumer with an unknown plan", err, keygate.CodeBadRequest, "platinum")
	_, err = e.svc.UpdateConsumer(e.ctx, e.actor, onGold.ID, control.ConsumerPatch{Plan: keygate.Some("platinum")})
	wantErr(t, "UpdateConsumer to an unknown plan", err, keygate.CodeBadRequest, "platinum")
	_, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: "con_missing"})
	wantErr(t, "CreateKey for an unknown consumer", err, keygate.CodeNotFound, "con_missing")
	_, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{})
	wantErr(t, "CreateKey without consumer_id", err, keygate.CodeBadRequest, "consumer_id")
	_, err = e.svc.Key(e.ctx, "key_missing")
	wantErr(t, "Key(missing)", err, keygate.CodeNotFound)
	_, err = e.svc.UpdateKey(e.ctx, e.actor, "key_missing", control.KeyPatch{Name: keygate.Some("x")})
	wantErr(t, "UpdateKey(missing)", err, keygate.CodeNotFound)
	_, err = e.svc.RevokeKey(e.ctx, e.actor, "key_missing", "")
	wantErr(t, "RevokeKey(missing)", err, keygate.CodeNotFound)
	_, _, err = e.svc.RotateKey(e.ctx, e.actor, "key_missing", nil)
	wantErr(t, "RotateKey(missing)", err, keygate.CodeNotFound)
}

func testKeyStates(t *testing.T, e *env) {
	c := e.consumer("")
	m := e.rec.snapshot()
	k, plaintext := e.key(control.KeyCreate{ConsumerID: c.ID, Name: "mobile app", Scopes: []string{"products:read"}})
	if k.Status != keygate.StateActive || k.Kind != keygate.KindSecret || k.Env != keygate.EnvLive {
		t.Errorf("new key: status %s, kind %s, env %s; want active, secret, live", k.Status, k.Kind, k.Env)
	}
	p, err := keys.Parse(plaintext, "kg")
	if err != nil || p.Kind != keys.TagSecret || p.Env != keygate.EnvLive || !strings.HasPrefix(plaintext, k.Start) || k.Start != plaintext[:len("kg_sk_live_")+4] {
		t.Errorf("plaintext %q (start %q) does not parse as kg_sk_live: %v", k.Start, k.Start, err)
	}
	h := keys.Hash(plaintext)
	if got := e.rec.keysSince(m); len(got) != 1 || got[0] != (keyChange{k.ID, string(h[:])}) {
		t.Errorf("invalidations after create = %v; want the new key and its hash", got)
	}
	if ev := e.rec.eventsSince(m); len(ev) != 1 || ev[0].typ != keygate.EventKeyCreated || ev[0].data["key_id"] != k.ID {
		t.Errorf("events after create = %v; want key.created", ev)
	}

	setStatus := func(s string) (*keygate.Key, error) {
		return e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Status: keygate.Some(s)})
	}
	for _, s := range []string{keygate.StateDisabled, keygate.StateActive, keygate.StateDisabled, keygate.StateActive} {
		got, err := setStatus(s)
		if err != nil || got.Status != s || e.get(k.ID).Status != s {
			t.Fatalf("UpdateKey(status %s) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{keygate.StateRevoked, keygate.StatusExpired, "bogus", ""} {
		_, err := setStatus(s)
		wantErr(t, "UpdateKey(status "+s+")", err, keygate.CodeBadRequest, "status")
	}

	// ttl and expires_at: expiry is judged with the injected clock.
	e.clock.Set(base)
	temp, _ := e.key(control.KeyCreate{ConsumerID: c.ID, TTL: dur(15 * time.Minute)})
	if temp.ExpiresAt == nil || !temp.ExpiresAt.Equal(base.Add(15*time.Minute)) {
		t.Fatalf("ttl 15m: expires_at = %v; want %v", temp.ExpiresAt, base.Add(15*time.Minute))
	}
	at := base.Add(time.Hour)
	dated, _ := e.key(control.KeyCreate{ConsumerID: c.ID, ExpiresAt: &at})
	e.clock.Set(base.Add(15*time.Minute - time.Microsecond))
	if s := e.get(temp.ID).Status; s != keygate.StateActive {
		t.Errorf("ttl key just before expiry: status %s", s)
	}
	e.clock.Set(base.Add(15 * time.Minute))
	if s := e.get(temp.ID).Status; s != keygate.StatusExpired {
		t.Errorf("ttl key at expiry: status %s; want expired", s)
	}
	if s := e.get(dated.ID).Status; s != keygate.StateActive {
		t.Errorf("expires_at key before expiry: status %s", s)
	}
	e.clock.Set(at)
	if s := e.get(dated.ID).Status; s != keygate.StatusExpired {
		t.Errorf("expires_at key at expiry: status %s; want expired", s)
	}
	// Extending expires_at revives it; a past one is refused.
	later := at.Add(time.Hour)
	if got, err := e.svc.UpdateKey(e.ctx, e.actor, dated.ID, control.KeyPatch{ExpiresAt: keygate.Some(&later)}); err != nil || got.Status != keygate.StateActive {
		t.Errorf("UpdateKey(expires_at later) = %v, %v", got, err)
	}
	past := at.Add(-time.Minute)
	_, err = e.svc.UpdateKey(e.ctx, e.actor, dated.ID, control.KeyPatch{ExpiresAt: keygate.Some(&past)})
	wantErr(t, "UpdateKey(expires_at in the past)", err, keygate.CodeBadRequest, "expires_at")
	_, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID, ExpiresAt: &past})
	wantErr(t, "CreateKey(expires_at in the past)", err, keygate.CodeBadRequest, "expires_at")
	_, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID, ExpiresAt: &later, TTL: dur(time.Hour)})
	wantErr(t, "CreateKey(ttl and expires_at)", err, keygate.CodeBadRequest, "ttl")

	// Revocation is final.
	m = e.rec.snapshot()
	r, err := e.svc.RevokeKey(e.ctx, e.actor, k.ID, "compromised laptop")
	if err != nil || r.Status != keygate.StateRevoked || r.RevokedAt == nil || r.RevokeReason == nil || *r.RevokeReason != "compromised laptop" {
		t.Fatalf("RevokeKey = %+v, %v", r, err)
	}
	if got := e.rec.keysSince(m); len(got) != 1 || got[0].id != k.ID || got[0].hash != string(h[:]) {
		t.Errorf("invalidations after revoke = %v", got)
	}
	if ev := e.rec.eventsSince(m); len(ev) != 1 || ev[0].typ != keygate.EventKeyRevoked || ev[0].data["key_id"] != k.ID {
		t.Errorf("events after revoke = %v; want key.revoked", ev)
	}
	before := e.head()
	_, err = e.svc.RevokeKey(e.ctx, e.actor, k.ID, "again")
	wantErr(t, "RevokeKey twice", err, keygate.CodeConflict)
	_, err = setStatus(keygate.StateActive)
	wantErr(t, "UpdateKey(status active) of a revoked key", err, keygate.CodeConflict)
	_, err = e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Name: keygate.Some("renamed")})
	wantErr(t, "UpdateKey(name) of a revoked key", err, keygate.CodeConflict)
	if e.head() != before {
		t.Errorf("refused calls wrote audit entries")
	}
	if got := e.get(k.ID); got.Status != keygate.StateRevoked || got.Name != "mobile app" {
		t.Errorf("revoked key after refused changes: status %s, name %q", got.Status, got.Name)
	}
}

func testKeyListing(t *testing.T, e *env) {
	c := e.consumer("")
	other := e.consumer("")
	ids := map[string]string{}
	step := func(name string, in control.KeyCreate, after func(id string)) {
		e.clock.Advance(time.Second)
		in.ConsumerID = c.ID
		k, _ := e.key(in)
		ids[name] = k.ID
		if after != nil {
			after(k.ID)
		}
	}
	disable := func(id string) {
		if _, err := e.svc.UpdateKey(e.ctx, e.actor, id, control.KeyPatch{Status: keygate.Some(keygate.StateDisabled)}); err != nil {
			t.Fatal(err)
		}
	}
	step("k1", control.KeyCreate{}, nil)
	step("k2", control.KeyCreate{}, disable)
	step("k3", control.KeyCreate{TTL: dur(time.Hour)}, nil)
	step("k4", control.KeyCreate{}, func(id string) {
		if _, err := e.svc.RevokeKey(e.ctx, e.actor, id, ""); err != nil {
			t.Fatal(err)
		}
	})
	step("k5", control.KeyCreate{}, nil)
	far := base.Add(10 * keygate.Day)
	step("k6", control.KeyCreate{ExpiresAt: &far}, nil)
	step("k7", control.KeyCreate{}, disable)
	step("k8", control.KeyCreate{TTL: dur(time.Hour)}, disable) // expired wins over disabled
	e.clock.Advance(time.Second)
	e.key(control.KeyCreate{ConsumerID: other.ID})
	e.clock.Advance(2 * time.Hour)

	tests := []struct {
		status string
		want   []string
	}{
		{"", []string{"k8", "k7", "k6", "k5", "k4", "k3", "k2", "k1"}},
		{keygate.StateActive, []string{"k6", "k5", "k1"}},
		{keygate.StateDisabled, []string{"k7", "k2"}},
		{keygate.StatusExpired, []string{"k8", "k3"}},
		{keygate.StateRevoked, []string{"k4"}},
	}
	for _, tc := range tests {
		for _, limit := range []int{1, 2, 3, 50} {
			var got []string
			f := keygate.KeyFilter{ConsumerID: c.ID, Status: tc.status, ListParams: keygate.ListParams{Limit: limit}}
			for page := 0; ; page++ {
				ks, next, err := e.svc.Keys(e.ctx, f)
				if err != nil {
					t.Fatalf("Keys(%q, limit %d): %v", tc.status, limit, err)
				}
				if len(ks) > limit {
					t.Errorf("Keys(limit %d) returned %d", limit, len(ks))
				}
				for _, k := range ks {
					for name, id := range ids {
						if id == k.ID {
							got = append(got, name)
						}
					}
					if tc.status != "" && k.Status != tc.status {
						t.Errorf("Keys(status %q) listed %s with status %s", tc.status, k.ID, k.Status)
					}
				}
				if next == "" {
					break
				}
				if page > 20 {
					t.Fatal("paging does not end")
				}
				f.Cursor = next
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Keys(status %q, limit %d) = %v; want %v", tc.status, limit, got, tc.want)
			}
		}
	}
	_, _, err := e.svc.Keys(e.ctx, keygate.KeyFilter{Status: "bogus"})
	wantErr(t, "Keys(status bogus)", err, keygate.CodeBadRequest, "bogus")
}

// Times in answers are UTC, at the precision storage keeps, so the object returned by a
// change is the one read back later.
func testExpiryNormalised(t *testing.T, e *env) {
	c := e.consumer("")
	zone := time.FixedZone("CEST", 2*3600)
	at := base.Add(48*time.Hour + 123456789*time.Nanosecond).In(zone)
	k, _ := e.key(control.KeyCreate{ConsumerID: c.ID, ExpiresAt: &at})
	want := at.UTC().Truncate(time.Microsecond)
	check := func(what string, got *time.Time) {
		t.Helper()
		if got == nil || got.Location() != time.UTC || !got.Equal(want) {
			t.Errorf("%s: expires_at = %v; want %v in UTC", what, got, want)
		}
	}
	check("CreateKey", k.ExpiresAt)
	check("Key", e.get(k.ID).ExpiresAt)
	at2 := at.Add(time.Hour)
	want = at2.UTC().Truncate(time.Microsecond)
	u, err := e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{ExpiresAt: keygate.Some(&at2)})
	if err != nil {
		t.Fatal(err)
	}
	check("UpdateKey", u.ExpiresAt)
	check("Key after update", e.get(k.ID).ExpiresAt)
	b1, _ := json.Marshal(u)
	b2, _ := json.Marshal(e.get(k.ID))
	if string(b1) != string(b2) {
		t.Errorf("UpdateKey answered\n%s\nbut the key reads back as\n%s", b1, b2)
	}
}

func testRotation(t *testing.T, e *env) {
	e.plan(gold)
	c := e.consumer("gold")
	e.clock.Set(base)
	in := control.KeyCreate{ConsumerID: c.ID, Name: "server", Env: keygate.EnvTest, Scopes: []string{"products:read", "orders:write"},
		RateLimits: []keygate.Window{w("minute", 300, time.Minute)}, Quota: &keygate.Quota{Limit: 1000, Period: keygate.PeriodDay},
		IPAllow: []string{"203.0.113.0/24", "2001:db8::1"}, ReferrerAllow: []string{"https://app.example.com"},
		MaxAge: dur(90 * keygate.Day), Metadata: map[string]any{"team": "payments", "n": 3.0}}
	old, oldPlain := e.key(in)
	if err := e.raw.AddUsage(e.ctx, []keygate.UsageDelta{{KeyID: old.ID, ConsumerID: c.ID, LimiterID: old.ID, Day: base.Truncate(24 * time.Hour), Requests: 40}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	now := e.clock.Now()
	m := e.rec.snapshot()
	nk, newPlain, err := e.svc.RotateKey(e.ctx, e.actor, old.ID, nil)
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if newPlain == oldPlain || newPlain == "" || !strings.HasPrefix(newPlain, "kg_sk_test_") {
		t.Errorf("new plaintext %q", nk.Start)
	}
	if nk.ID == old.ID || nk.ConsumerID != c.ID || nk.RotatedFrom == nil || *nk.RotatedFrom != old.ID || nk.RotatedTo != nil {
		t.Errorf("new key: id %s consumer %s rotated_from %v rotated_to %v", nk.ID, nk.ConsumerID, nk.RotatedFrom, nk.RotatedTo)
	}
	if !nk.CreatedAt.Equal(now) || nk.Status != keygate.StateActive {
		t.Errorf("new key created %v status %s", nk.CreatedAt, nk.Status)
	}
	// Same settings: everything the caller set is carried over.
	same := func(k *keygate.Key) any {
		return []any{k.Name, k.Kind, k.Env, k.Scopes, k.Plan, k.RateLimits, k.Quota.Limit, k.Quota.Period, k.IPAllow,
			k.ReferrerAllow, k.ExpiresAt, k.MaxAge, k.Metadata}
	}
	if a, b := same(old), same(nk); !reflect.DeepEqual(a, b) {
		t.Errorf("settings differ after rotation:\nold %v\nnew %v", a, b)
	}
	// Same limiter: the usage carries over.
	if nk.LimiterID != old.ID || nk.Quota.Used == nil || *nk.Quota.Used != 40 {
		t.Errorf("new key limiter %q used %v; want %s and 40", nk.LimiterID, nk.Quota.Used, old.ID)
	}
	stored, err := e.raw.KeyByHash(e.ctx, hashOf(newPlain))
	if err != nil || stored.ID != nk.ID || stored.LimiterID != old.ID {
		t.Errorf("stored new key: %+v, %v", stored, err)
	}
	o := e.get(old.ID)
	if o.RotatedTo == nil || *o.RotatedTo != nk.ID || o.ExpiresAt == nil || !o.ExpiresAt.Equal(now.Add(24*time.Hour)) {
		t.Errorf("old key: rotated_to %v expires_at %v; want %s and %v", o.RotatedTo, o.ExpiresAt, nk.ID, now.Add(24*time.Hour))
	}
	// Both keys work during the grace period; then the old one expires.
	e.clock.Set(now.Add(24*time.Hour - time.Second))
	if e.get(old.ID).Status != keygate.StateActive || e.get(nk.ID).Status != keygate.StateActive {
		t.Errorf("during the grace period: old %s, new %s", e.get(old.ID).Status, e.get(nk.ID).Status)
	}
	e.clock.Set(now.Add(24 * time.Hour))
	if e.get(old.ID).Status != keygate.StatusExpired || e.get(nk.ID).Status != keygate.StateActive {
		t.Errorf("after the grace period: old %s, new %s", e.get(old.ID).Status, e.get(nk.ID).Status)
	}
	// Invalidations for both hashes, one key.rotated event naming both.
	inv := e.rec.keysSince(m)
	want := []keyChange{{old.ID, string(hashOf(oldPlain))}, {nk.ID, string(hashOf(newPlain))}}
	if !reflect.DeepEqual(inv, want) {
		t.Errorf("invalidations after rotate: %d, want both keys and hashes", len(inv))
	}
	ev := e.rec.eventsSince(m)
	if len(ev) != 1 || ev[0].typ != keygate.EventKeyRotated || ev[0].data["key_id"] != old.ID || ev[0].data["new_key_id"] != nk.ID {
		t.Errorf("events after rotate = %v; want one key.rotated", ev)
	}

	// Rotating the new key chains the limiter on.
	e.clock.Set(now.Add(48 * time.Hour))
	third, _, err := e.svc.RotateKey(e.ctx, e.actor, nk.ID, ptr(time.Duration(0)))
	if err != nil {
		t.Fatal(err)
	}
	if third.LimiterID != old.ID {
		t.Errorf("third key limiter = %s; want %s", third.LimiterID, old.ID)
	}
	if s := e.get(nk.ID).Status; s != keygate.StatusExpired {
		t.Errorf("grace 0s: rotated key status %s; want expired at once", s)
	}
}

func hashOf(plaintext string) []byte { h := keys.Hash(plaintext); return h[:] }

func testRotationConflicts(t *testing.T, e *env) {
	c := e.consumer("")
	k, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
	_, _, err := e.svc.RotateKey(e.ctx, e.actor, k.ID, ptr(-time.Second))
	wantErr(t, "RotateKey(grace -1s)", err, keygate.CodeBadRequest, "grace_period")
	if _, _, err := e.svc.RotateKey(e.ctx, e.actor, k.ID, ptr(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.svc.RotateKey(e.ctx, e.actor, k.ID, nil)
	wantErr(t, "RotateKey twice", err, keygate.CodeConflict)

	r, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
	if _, err := e.svc.RevokeKey(e.ctx, e.actor, r.ID, ""); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.svc.RotateKey(e.ctx, e.actor, r.ID, nil)
	wantErr(t, "RotateKey(revoked)", err, keygate.CodeConflict, "revoked")

	x, _ := e.key(control.KeyCreate{ConsumerID: c.ID, TTL: dur(time.Minute)})
	e.clock.Advance(time.Minute)
	_, _, err = e.svc.RotateKey(e.ctx, e.actor, x.ID, nil)
	wantErr(t, "RotateKey(expired)", err, keygate.CodeConflict, "expired")

	// A grace period longer than the key has left keeps the earlier expiry.
	soon := e.clock.Now().Add(time.Hour)
	y, _ := e.key(control.KeyCreate{ConsumerID: c.ID, ExpiresAt: &soon})
	if _, _, err := e.svc.RotateKey(e.ctx, e.actor, y.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.get(y.ID).ExpiresAt; got == nil || !got.Equal(soon) {
		t.Errorf("old key expires_at = %v; want its own earlier %v", got, soon)
	}

	// A key already rotated is no longer due for rotation (it cannot be rotated again); its
	// successor is, once old enough.
	t0 := e.clock.Now()
	d, _ := e.key(control.KeyCreate{ConsumerID: c.ID, MaxAge: dur(time.Hour)})
	e.clock.Set(t0.Add(30 * time.Minute))
	dn, _, err := e.svc.RotateKey(e.ctx, e.actor, d.ID, ptr(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Set(t0.Add(time.Hour))
	if got := e.get(d.ID); got.Status != keygate.StateActive || got.RotationDue {
		t.Errorf("rotated key in its grace period past max_age: status %s, rotation_due %v; want active, false", got.Status, got.RotationDue)
	}
	if e.get(dn.ID).RotationDue {
		t.Errorf("successor due before its max_age")
	}
	e.clock.Set(t0.Add(90 * time.Minute))
	if !e.get(dn.ID).RotationDue {
		t.Errorf("successor not due at its max_age")
	}

	// The default grace period is the Service's.
	svc := control.New(control.Options{Store: e.spy, Now: e.clock.Now, AuditKey: auditKey, DefaultGracePeriod: time.Hour})
	z, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
	if _, _, err := svc.RotateKey(e.ctx, e.actor, z.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.get(z.ID).ExpiresAt; got == nil || !got.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("DefaultGracePeriod 1h: old key expires_at = %v", got)
	}
}

func testPublishable(t *testing.T, e *env) {
	c := e.consumer("")
	refs := []string{"https://app.example.com", "https://*.example.org"}
	tests := []struct {
		name   string
		scopes []string
		refs   []string
		field  string // "" = ok
	}{
		{"read scopes and referrers", []string{"products:read", "*:read"}, refs, ""},
		{"no scopes", nil, refs, ""},
		{"a write scope", []string{"products:read", "products:write"}, refs, "products:write"},
		{"a wildcard action", []string{"products:*"}, refs, "products:*"},
		{"no referrer_allow", []string{"products:read"}, nil, "referrer_allow"},
		{"empty referrer_allow", []string{"products:read"}, []string{}, "referrer_allow"},
	}
	for _, tc := range tests {
		k, plaintext, err := e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID, Kind: keygate.KindPublishable,
			Scopes: tc.scopes, ReferrerAllow: tc.refs})
		if tc.field == "" {
			if err != nil || k.Kind != keygate.KindPublishable || !strings.HasPrefix(plaintext, "kg_pk_live_") {
				t.Errorf("%s: CreateKey = %v, %v", tc.name, k, err)
			}
			continue
		}
		wantErr(t, tc.name, err, keygate.CodeBadRequest, tc.field)
	}
	pk, _ := e.key(control.KeyCreate{ConsumerID: c.ID, Kind: keygate.KindPublishable, Scopes: []string{"products:read"}, ReferrerAllow: refs})
	_, err := e.svc.UpdateKey(e.ctx, e.actor, pk.ID, control.KeyPatch{Scopes: keygate.Some([]string{"products:write"})})
	wantErr(t, "UpdateKey(publishable, write scope)", err, keygate.CodeBadRequest, "products:write")
	_, err = e.svc.UpdateKey(e.ctx, e.actor, pk.ID, control.KeyPatch{ReferrerAllow: keygate.Opt[[]string]{Set: true, Null: true}})
	wantErr(t, "UpdateKey(publishable, referrer_allow null)", err, keygate.CodeBadRequest, "referrer_allow")
	got := e.get(pk.ID)
	if !reflect.DeepEqual(got.Scopes, []string{"products:read"}) || !reflect.DeepEqual(got.ReferrerAllow, refs) {
		t.Errorf("publishable key changed by refused updates: %v %v", got.Scopes, got.ReferrerAllow)
	}
	// A secret key may hold write scopes and needs no referrers.
	if _, _, err := e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID, Scopes: []string{"products:write"}}); err != nil {
		t.Errorf("secret key with a write scope: %v", err)
	}
}

func testValidation(t *testing.T, e *env) {
	c := e.consumer("")
	k, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
	big := map[string]any{"blob": strings.Repeat("x", 8<<10)}
	keyTests := []struct {
		name  string
		in    control.KeyCreate
		field string
	}{
		{"bad CIDR", control.KeyCreate{IPAllow: []string{"10.0.0.0/33"}}, "ip_allow"},
		{"bad address", control.KeyCreate{IPAllow: []string{"300.1.2.3"}}, "ip_allow"},
		{"not an address", control.KeyCreate{IPAllow: []string{"example.com"}}, "ip_allow"},
		{"name too long", control.KeyCreate{Name: strings.Repeat("n", keygate.MaxNameLen+1)}, "name"},
		{"name not UTF-8", control.KeyCreate{Name: "caf\xe9"}, "name"},
		{"name with NUL", control.KeyCreate{Name: "a\x00b"}, "name"},
		{"name with newline", control.KeyCreate{Name: "a\nb"}, "name"},
		{"name with DEL", control.KeyCreate{Name: "a\x7fb"}, "name"},
		{"metadata over 8 KiB", control.KeyCreate{Metadata: big}, "metadata"},
		{"bad scope", control.KeyCreate{Scopes: []string{"Products:Read"}}, "scopes"},
		{"scope without action", control.KeyCreate{Scopes: []string{"products"}}, "scopes"},
		{"zero window limit", control.KeyCreate{RateLimits: []keygate.Window{w("burst", 0, time.Second)}}, "rate_limits"},
		{"zero window period", control.KeyCreate{RateLimits: []keygate.Window{w("burst", 1, 0)}}, "rate_limits"},
		{"duplicate window", control.KeyCreate{RateLimits: []keygate.Window{w("a", 1, time.Second), w("a", 2, time.Second)}}, "rate_limits"},
		{"bad quota period", control.KeyCreate{Quota: &keygate.Quota{Limit: 1, Period: "week"}}, "quota"},
		{"zero quota", control.KeyCreate{Quota: &keygate.Quota{Limit: 0, Period: "day"}}, "quota"},
		{"bad referrer", control.KeyCreate{ReferrerAllow: []string{"ftp://files.example.com"}}, "referrer_allow"},
		{"referrer with a path", control.KeyCreate{ReferrerAllow: []string{"https://a.example.com/x"}}, "referrer_allow"},
		{"zero ttl", control.KeyCreate{TTL: dur(0)}, "ttl"},
		{"zero max_age", control.KeyCreate{MaxAge: dur(0)}, "max_age"},
		{"bad kind", control.KeyCreate{Kind: "private"}, "kind"},
		{"bad env", control.KeyCreate{Env: "prod"}, "env"},
		{"bad plan name", control.KeyCreate{Plan: "Gold!"}, "plan"},
	}
	for _, tc := range keyTests {
		before := e.head()
		tc.in.ConsumerID = c.ID
		_, _, err := e.svc.CreateKey(e.ctx, e.actor, tc.in)
		wantErr(t, "CreateKey: "+tc.name, err, keygate.CodeBadRequest, tc.field)
		if e.head() != before {
			t.Errorf("CreateKey: %s: wrote an audit entry", tc.name)
		}
	}
	patchTests := []struct {
		name  string
		p     control.KeyPatch
		field string
	}{
		{"bad CIDR", control.KeyPatch{IPAllow: keygate.Some([]string{"192.168.0.0/40"})}, "ip_allow"},
		{"name too long", control.KeyPatch{Name: keygate.Some(strings.Repeat("é", keygate.MaxNameLen))}, "name"},
		{"name with control", control.KeyPatch{Name: keygate.Some("tab\there")}, "name"},
		{"metadata over 8 KiB", control.KeyPatch{Metadata: keygate.Some(big)}, "metadata"},
		{"zero max_age", control.KeyPatch{MaxAge: keygate.Some(dur(0))}, "max_age"},
	}
	for _, tc := range patchTests {
		_, err := e.svc.UpdateKey(e.ctx, e.actor, k.ID, tc.p)
		wantErr(t, "UpdateKey: "+tc.name, err, keygate.CodeBadRequest, tc.field)
	}
	if got := e.get(k.ID); got.Name != "" || got.IPAllow != nil || got.Metadata != nil {
		t.Errorf("refused updates changed the key: %+v", got)
	}
	consumerTests := []struct {
		name  string
		in    control.ConsumerCreate
		field string
	}{
		{"name too long", control.ConsumerCreate{Name: strings.Repeat("n", keygate.MaxNameLen+1)}, "name"},
		{"name not UTF-8", control.ConsumerCreate{Name: "\xff\xfe"}, "name"},
		{"name with ESC", control.ConsumerCreate{Name: "\x1b[31mred"}, "name"},
		{"email not an address", control.ConsumerCreate{Email: "nobody"}, "email"},
		{"email not UTF-8", control.ConsumerCreate{Email: "a\xff@example.com"}, "email"},
		{"email too long", control.ConsumerCreate{Email: strings.Repeat("a", keygate.MaxEmailLen) + "@x"}, "email"},
		{"metadata over 8 KiB", control.ConsumerCreate{Metadata: big}, "metadata"},
		{"bad window", control.ConsumerCreate{RateLimits: []keygate.Window{w("quota", 1, time.Second)}}, "rate_limits"},
	}
	for _, tc := range consumerTests {
		_, err := e.svc.CreateConsumer(e.ctx, e.actor, tc.in)
		wantErr(t, "CreateConsumer: "+tc.name, err, keygate.CodeBadRequest, tc.field)
	}
	_, err := e.svc.UpdateConsumer(e.ctx, e.actor, c.ID, control.ConsumerPatch{Email: keygate.Some("x\x00@y")})
	wantErr(t, "UpdateConsumer(email with NUL)", err, keygate.CodeBadRequest, "email")
	planTests := []struct {
		name  string
		in    control.PlanCreate
		field string
	}{
		{"bad name", control.PlanCreate{Name: "Gold Plan"}, "name"},
		{"name too long", control.PlanCreate{Name: strings.Repeat("p", keygate.MaxPlanNameLen+1)}, "name"},
		{"zero max_age", control.PlanCreate{Name: "p", MaxAge: dur(0)}, "max_age"},
		{"bad scope", control.PlanCreate{Name: "p", ScopesAllowed: []string{"a:b:c"}}, "scopes_allowed"},
		{"bad quota", control.PlanCreate{Name: "p", Quota: &keygate.Quota{Limit: 5, Period: "year"}}, "quota"},
	}
	for _, tc := range planTests {
		_, err := e.svc.CreatePlan(e.ctx, e.actor, tc.in)
		wantErr(t, "CreatePlan: "+tc.name, err, keygate.CodeBadRequest, tc.field)
	}
	_, err = e.svc.RevokeKey(e.ctx, e.actor, k.ID, strings.Repeat("r", keygate.MaxReasonLen+1))
	wantErr(t, "RevokeKey(reason too long)", err, keygate.CodeBadRequest, "reason")
	_, err = e.svc.RevokeKey(e.ctx, e.actor, k.ID, "bad\x00reason")
	wantErr(t, "RevokeKey(reason with NUL)", err, keygate.CodeBadRequest, "reason")

	// Durations come in as strings; bad ones do not decode (the admin API answers 400).
	for _, body := range []string{`{"ttl":"15 minutes"}`, `{"ttl":"-5m"}`, `{"ttl":900}`, `{"max_age":"1y"}`} {
		var in control.KeyCreate
		if err := json.Unmarshal([]byte(body), &in); err == nil {
			t.Errorf("decoding %s: no error", body)
		}
	}
	var in control.KeyCreate
	if err := json.Unmarshal([]byte(`{"ttl":"1d12h","max_age":"90d"}`), &in); err != nil || in.TTL.D() != 36*time.Hour || in.MaxAge.D() != 90*keygate.Day {
		t.Errorf(`decoding {"ttl":"1d12h","max_age":"90d"} = %v, %v, %v`, in.TTL, in.MaxAge, err)
	}
}

// A change racing a revocation must not undo it: once revoked, a key keeps revoked_at and its
// reason, whatever PATCH or rotation ran at the same time.
func testRevokeRace(t *testing.T, e *env) {
	c := e.consumer("")
	for round := range 6 {
		k, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
		var wg sync.WaitGroup
		start := make(chan struct{})
		run := func(fn func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := fn(); err != nil && keygate.ErrorCode(err) != keygate.CodeConflict {
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		run(func() error { _, err := e.svc.RevokeKey(e.ctx, e.actor, k.ID, "stolen"); return err })
		for i := range 3 {
			run(func() error {
				_, err := e.svc.UpdateKey(e.ctx, e.actor, k.ID, control.KeyPatch{Name: keygate.Some(fmt.Sprint("n", i))})
				return err
			})
		}
		run(func() error { _, _, err := e.svc.RotateKey(e.ctx, e.actor, k.ID, nil); return err })
		close(start)
		wg.Wait()
		got := e.get(k.ID)
		if got.Status != keygate.StateRevoked || got.RevokedAt == nil || got.RevokeReason == nil || *got.RevokeReason != "stolen" {
			t.Fatalf("round %d: revoked key reads back with status %s, revoked_at %v, reason %v", round, got.Status, got.RevokedAt, got.RevokeReason)
		}
	}
}
