package control_test

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

func testPlans(t *testing.T, e *env) {
	p := e.plan(gold)
	if p.ManagedBy != keygate.ManagedByAPI {
		t.Errorf("CreatePlan: managed_by %q; want api", p.ManagedBy)
	}
	_, err := e.svc.CreatePlan(e.ctx, e.actor, control.PlanCreate{Name: "gold"})
	wantErr(t, "CreatePlan(duplicate)", err, keygate.CodeConflict, "gold")

	m := e.rec.snapshot()
	u, err := e.svc.UpdatePlan(e.ctx, e.actor, "gold", control.PlanPatch{Quota: keygate.Opt[*keygate.Quota]{Set: true, Null: true},
		MaxAge: keygate.Some(dur(7 * keygate.Day))})
	if err != nil || u.Quota != nil || u.MaxAge == nil || u.MaxAge.D() != 7*keygate.Day || !reflect.DeepEqual(u.RateLimits, gold.RateLimits) {
		t.Errorf("UpdatePlan = %+v, %v", u, err)
	}
	if got := e.rec.plansSince(m); !reflect.DeepEqual(got, []string{"gold"}) {
		t.Errorf("PlanChanged after update = %v", got)
	}
	if got, err := e.svc.Plan(e.ctx, "gold"); err != nil || got.Quota != nil || got.MaxAge.D() != 7*keygate.Day {
		t.Errorf("Plan after update = %+v, %v", got, err)
	}
	_, err = e.svc.UpdatePlan(e.ctx, e.actor, "gold", control.PlanPatch{RateLimits: keygate.Some([]keygate.Window{w("x", 0, time.Second)})})
	wantErr(t, "UpdatePlan(bad window)", err, keygate.CodeBadRequest, "rate_limits")
	_, err = e.svc.UpdatePlan(e.ctx, e.actor, "nope", control.PlanPatch{})
	wantErr(t, "UpdatePlan(missing)", err, keygate.CodeNotFound)
	err = e.svc.DeletePlan(e.ctx, e.actor, "nope")
	wantErr(t, "DeletePlan(missing)", err, keygate.CodeNotFound)

	// In use by a consumer, then by a key: 409; free once the key is revoked.
	c := e.consumer("gold")
	err = e.svc.DeletePlan(e.ctx, e.actor, "gold")
	wantErr(t, "DeletePlan(in use by a consumer)", err, keygate.CodeConflict, "in use")
	if _, err := e.svc.UpdateConsumer(e.ctx, e.actor, c.ID, control.ConsumerPatch{Plan: keygate.Opt[string]{Set: true, Null: true}}); err != nil {
		t.Fatal(err)
	}
	k, _ := e.key(control.KeyCreate{ConsumerID: c.ID, Plan: "gold"})
	err = e.svc.DeletePlan(e.ctx, e.actor, "gold")
	wantErr(t, "DeletePlan(in use by a key)", err, keygate.CodeConflict, "in use")
	if _, err := e.svc.RevokeKey(e.ctx, e.actor, k.ID, ""); err != nil {
		t.Fatal(err)
	}
	m = e.rec.snapshot()
	if err := e.svc.DeletePlan(e.ctx, e.actor, "gold"); err != nil {
		t.Fatalf("DeletePlan(unused): %v", err)
	}
	if got := e.rec.plansSince(m); !reflect.DeepEqual(got, []string{"gold"}) {
		t.Errorf("PlanChanged after delete = %v", got)
	}
	_, err = e.svc.Plan(e.ctx, "gold")
	wantErr(t, "Plan(deleted)", err, keygate.CodeNotFound)
	// The revoked key that named it still shows.
	if got := e.get(k.ID); got.Plan != "gold" || got.Status != keygate.StateRevoked {
		t.Errorf("revoked key of a deleted plan: plan %q status %s", got.Plan, got.Status)
	}
}

func testConfigPlans(t *testing.T, e *env) {
	e.plan(control.PlanCreate{Name: "legacy"})
	cfg := []control.PlanCreate{
		{Name: "free", RateLimits: []keygate.Window{w("minute", 10, time.Minute)}, Quota: &keygate.Quota{Limit: 100, Period: keygate.PeriodDay}},
		{Name: "pro", ScopesAllowed: []string{"products:*"}, MaxAge: dur(90 * keygate.Day)},
		{Name: "legacy", RateLimits: []keygate.Window{w("second", 1, time.Second)}}, // taken over from the API
	}
	before := e.head()
	m := e.rec.snapshot()
	if err := e.svc.SyncConfigPlans(e.ctx, cfg); err != nil {
		t.Fatalf("SyncConfigPlans: %v", err)
	}
	entries := e.entriesAfter(before)
	wantActions := []string{"plan.create", "plan.create", "plan.update"}
	if len(entries) != len(wantActions) {
		t.Fatalf("first sync wrote %d entries; want %d", len(entries), len(wantActions))
	}
	for i, a := range entries {
		if a.Action != wantActions[i] || a.TargetID != cfg[i].Name || a.Actor != "config" {
			t.Errorf("entry %d: %s %s by %s; want %s %s by config", a.Seq, a.Action, a.TargetID, a.Actor, wantActions[i], cfg[i].Name)
		}
	}
	if got := e.rec.plansSince(m); len(got) < 1 || !contains(got, "legacy") {
		t.Errorf("PlanChanged after the first sync = %v; want legacy among them", got)
	}
	for _, in := range cfg {
		p, err := e.svc.Plan(e.ctx, in.Name)
		if err != nil || p.ManagedBy != keygate.ManagedByConfig {
			t.Fatalf("Plan(%s) = %+v, %v; want managed_by config", in.Name, p, err)
		}
		_, err = e.svc.UpdatePlan(e.ctx, e.actor, in.Name, control.PlanPatch{MaxAge: keygate.Some(dur(time.Hour))})
		wantErr(t, "UpdatePlan(config-managed "+in.Name+")", err, keygate.CodeConflict, "config")
		err = e.svc.DeletePlan(e.ctx, e.actor, in.Name)
		wantErr(t, "DeletePlan(config-managed "+in.Name+")", err, keygate.CodeConflict, "config")
	}

	// Unchanged: nothing is written, nothing invalidated.
	before = e.head()
	m = e.rec.snapshot()
	if err := e.svc.SyncConfigPlans(e.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if e.head() != before {
		t.Errorf("an unchanged re-sync wrote %d audit entries", e.head()-before)
	}
	if got := e.rec.plansSince(m); len(got) != 0 {
		t.Errorf("an unchanged re-sync invalidated %v", got)
	}

	// Changed: free is updated, pro dropped from the config goes back to the API.
	cfg2 := []control.PlanCreate{cfg[0], cfg[2]}
	cfg2[0].Quota = &keygate.Quota{Limit: 200, Period: keygate.PeriodDay}
	m = e.rec.snapshot()
	before = e.head()
	if err := e.svc.SyncConfigPlans(e.ctx, cfg2); err != nil {
		t.Fatal(err)
	}
	free, err := e.svc.Plan(e.ctx, "free")
	if err != nil || free.Quota == nil || free.Quota.Limit != 200 || free.ManagedBy != keygate.ManagedByConfig {
		t.Errorf("free after re-sync = %+v, %v", free, err)
	}
	if got := e.rec.plansSince(m); !contains(got, "free") || !contains(got, "pro") || contains(got, "legacy") {
		t.Errorf("PlanChanged after re-sync = %v; want free and pro", got)
	}
	entries = e.entriesAfter(before)
	if len(entries) != 2 || entries[0].TargetID != "free" || entries[1].TargetID != "pro" || entries[1].Details["managed_by"] != keygate.ManagedByAPI {
		t.Errorf("re-sync entries = %d; want plan.update of free and of pro (managed_by api)", len(entries))
	}
	pro, err := e.svc.Plan(e.ctx, "pro")
	if err != nil || pro.ManagedBy != keygate.ManagedByAPI || pro.MaxAge == nil || pro.MaxAge.D() != 90*keygate.Day {
		t.Errorf("pro after being dropped = %+v, %v; want managed_by api, settings kept", pro, err)
	}
	if _, err := e.svc.UpdatePlan(e.ctx, e.actor, "pro", control.PlanPatch{MaxAge: keygate.Some(dur(time.Hour))}); err != nil {
		t.Errorf("UpdatePlan of a plan handed back to the API: %v", err)
	}
	if err := e.svc.DeletePlan(e.ctx, e.actor, "pro"); err != nil {
		t.Errorf("DeletePlan of a plan handed back to the API: %v", err)
	}

	// A bad config changes nothing.
	before = e.head()
	err = e.svc.SyncConfigPlans(e.ctx, []control.PlanCreate{{Name: "ok"}, {Name: "Bad Name"}})
	wantErr(t, "SyncConfigPlans(bad name)", err, keygate.CodeBadRequest, "Bad Name")
	err = e.svc.SyncConfigPlans(e.ctx, []control.PlanCreate{{Name: "twice"}, {Name: "twice"}})
	wantErr(t, "SyncConfigPlans(duplicate)", err, keygate.CodeBadRequest, "twice")
	if e.head() != before {
		t.Errorf("a refused sync wrote audit entries")
	}
	_, err = e.svc.Plan(e.ctx, "ok")
	wantErr(t, "Plan(ok) after a refused sync", err, keygate.CodeNotFound)
	if !e.verifyAudit().OK {
		t.Errorf("audit chain broken after syncs")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Nodes starting (or reloading) together sync the same config: every one succeeds and the plans
// are written once.
func testConfigPlansConcurrent(t *testing.T, e *env) {
	cfg := []control.PlanCreate{
		{Name: "free", RateLimits: []keygate.Window{w("minute", 10, time.Minute)}},
		{Name: "pro", ScopesAllowed: []string{"products:*"}},
	}
	const nodes = 6
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range nodes {
		svc := e.newService(e.open())
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := svc.SyncConfigPlans(e.ctx, cfg); err != nil {
				t.Errorf("node %d: SyncConfigPlans: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := e.head(); n != int64(len(cfg)) {
		t.Errorf("%d nodes syncing wrote %d audit entries; want %d", nodes, n, len(cfg))
	}
	for _, in := range cfg {
		if p, err := e.svc.Plan(e.ctx, in.Name); err != nil || p.ManagedBy != keygate.ManagedByConfig {
			t.Errorf("Plan(%s) = %+v, %v", in.Name, p, err)
		}
	}
}

// Concurrent changes of one plan each keep their field; a config sync racing an API change
// keeps the plan managed by the config.
func testPlanRace(t *testing.T, e *env) {
	for round := range 5 {
		name := fmt.Sprint("p", round)
		e.plan(control.PlanCreate{Name: name})
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
		run(func() error {
			_, err := e.svc.UpdatePlan(e.ctx, e.actor, name, control.PlanPatch{Quota: keygate.Some(&keygate.Quota{Limit: 7, Period: keygate.PeriodDay})})
			return err
		})
		run(func() error {
			_, err := e.svc.UpdatePlan(e.ctx, e.actor, name, control.PlanPatch{MaxAge: keygate.Some(dur(time.Hour))})
			return err
		})
		run(func() error {
			_, err := e.svc.UpdatePlan(e.ctx, e.actor, name, control.PlanPatch{ScopesAllowed: keygate.Some([]string{"a:read"})})
			return err
		})
		close(start)
		wg.Wait()
		p, err := e.svc.Plan(e.ctx, name)
		if err != nil || p.Quota == nil || p.MaxAge == nil || p.ScopesAllowed == nil {
			t.Fatalf("round %d: concurrent patches of different fields: %+v, %v; want all three kept", round, p, err)
		}
	}
	for round := range 5 {
		name := fmt.Sprint("c", round)
		e.plan(control.PlanCreate{Name: name})
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_, err := e.svc.UpdatePlan(e.ctx, e.actor, name, control.PlanPatch{MaxAge: keygate.Some(dur(time.Hour))})
			if err != nil && keygate.ErrorCode(err) != keygate.CodeConflict {
				t.Errorf("UpdatePlan: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			<-start
			if err := e.svc.SyncConfigPlans(e.ctx, []control.PlanCreate{{Name: name}}); err != nil {
				t.Errorf("SyncConfigPlans: %v", err)
			}
		}()
		close(start)
		wg.Wait()
		if p, err := e.svc.Plan(e.ctx, name); err != nil || p.ManagedBy != keygate.ManagedByConfig {
			t.Fatalf("round %d: plan after a sync raced an API change: managed_by %q, %v; want config", round, p.ManagedBy, err)
		}
	}
}

// A plan deleted while keys and consumers are being put on it: either the delete is refused
// (in use) or the references are (unknown plan); never a key on a plan that no longer exists,
// which would leave it without the plan's limits.
func testPlanDeleteRace(t *testing.T, e *env) {
	c := e.consumer("")
	for round := range 5 {
		name := fmt.Sprint("d", round)
		e.plan(control.PlanCreate{Name: name, RateLimits: []keygate.Window{w("second", 1, time.Second)}})
		var wg sync.WaitGroup
		start := make(chan struct{})
		run := func(fn func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := fn(); err != nil && keygate.ErrorCode(err) != keygate.CodeConflict && keygate.ErrorCode(err) != keygate.CodeBadRequest {
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		run(func() error { return e.svc.DeletePlan(e.ctx, e.actor, name) })
		run(func() error {
			_, _, err := e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID, Plan: name})
			return err
		})
		run(func() error {
			_, err := e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "late", Plan: name})
			return err
		})
		close(start)
		wg.Wait()
		if _, err := e.svc.Plan(e.ctx, name); keygate.ErrorCode(err) != keygate.CodeNotFound {
			continue // the delete was refused
		}
		if n := e.count(`SELECT COUNT(*) FROM api_keys WHERE plan = ?`, name) + e.count(`SELECT COUNT(*) FROM consumers WHERE plan = ?`, name); n != 0 {
			t.Fatalf("round %d: plan %s was deleted but %d keys or consumers name it", round, name, n)
		}
	}
}
