package control_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

const (
	secretName  = "Zelda Quintessa-Marlowe"
	secretEmail = "zelda.quintessa@private.example"
)

// rawNameEmail reads a consumer's name and email from its row, deleted or not.
func (e *env) rawNameEmail(id string) (name, email string) {
	e.t.Helper()
	if err := e.raw.DB().QueryRowContext(e.ctx, e.q(`SELECT name, email FROM consumers WHERE id = ?`), id).Scan(&name, &email); err != nil {
		e.t.Fatalf("read consumer %s: %v", id, err)
	}
	return name, email
}

// noPersonalData fails if any audit entry mentions the secret name or email.
func (e *env) noPersonalData() {
	e.t.Helper()
	for _, a := range e.entriesAfter(0) {
		b, _ := json.Marshal(a)
		for _, s := range []string{secretName, secretEmail, "Quintessa", "zelda"} {
			if strings.Contains(strings.ToLower(string(b)), strings.ToLower(s)) {
				e.t.Errorf("audit entry %d (%s) holds %q: %s", a.Seq, a.Action, s, b)
			}
		}
	}
}

func testDeleteConsumer(t *testing.T, e *env) {
	e.plan(silver)
	c, err := e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: secretName, Email: secretEmail, Plan: "silver",
		Metadata: map[string]any{"crm": "42"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.UpdateConsumer(e.ctx, e.actor, c.ID, control.ConsumerPatch{Name: keygate.Some(secretName + " Jr"),
		Email: keygate.Some("jr." + secretEmail)}); err != nil {
		t.Fatal(err)
	}
	var live []*keygate.Key
	for range 3 {
		k, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
		live = append(live, k)
	}
	gone, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
	if _, err := e.svc.RevokeKey(e.ctx, e.actor, gone.ID, ""); err != nil {
		t.Fatal(err)
	}
	other := e.consumer("")
	otherKey, _ := e.key(control.KeyCreate{ConsumerID: other.ID})

	before := e.head()
	m := e.rec.snapshot()
	if err := e.svc.DeleteConsumer(e.ctx, e.actor, c.ID, true); err != nil {
		t.Fatalf("DeleteConsumer: %v", err)
	}
	// One key.revoke per live key, then consumer.delete, all by the caller.
	entries := e.entriesAfter(before)
	if len(entries) != len(live)+1 {
		t.Fatalf("DeleteConsumer wrote %d audit entries; want %d", len(entries), len(live)+1)
	}
	revoked := map[string]bool{}
	for i, a := range entries {
		if a.Actor != e.actor.ID || a.IP != e.actor.IP || a.Result != keygate.ResultSuccess {
			t.Errorf("entry %d: actor %q ip %q result %q", a.Seq, a.Actor, a.IP, a.Result)
		}
		if i < len(live) {
			if a.Action != "key.revoke" || a.TargetType != "key" {
				t.Errorf("entry %d: %s %s; want key.revoke", a.Seq, a.Action, a.TargetType)
			}
			revoked[a.TargetID] = true
			continue
		}
		if a.Action != "consumer.delete" || a.TargetID != c.ID || a.Details["purge"] != true {
			t.Errorf("last entry: %s %s %v; want consumer.delete of %s with purge", a.Action, a.TargetID, a.Details, c.ID)
		}
	}
	for _, k := range live {
		if !revoked[k.ID] {
			t.Errorf("no key.revoke entry for %s", k.ID)
		}
		got := e.get(k.ID)
		if got.Status != keygate.StateRevoked || got.RevokeReason == nil {
			t.Errorf("key %s of the deleted consumer: status %s", k.ID, got.Status)
		}
	}
	if revoked[gone.ID] {
		t.Errorf("the already revoked key was revoked again")
	}
	if got := e.get(otherKey.ID).Status; got != keygate.StateActive {
		t.Errorf("another consumer's key: %s", got)
	}
	if inv := e.rec.keysSince(m); len(inv) != len(live) {
		t.Errorf("DeleteConsumer invalidated %d keys; want %d", len(inv), len(live))
	}
	if ev := e.rec.eventsSince(m); len(ev) != len(live) || ev[0].typ != keygate.EventKeyRevoked {
		t.Errorf("DeleteConsumer events = %v; want %d key.revoked", ev, len(live))
	}

	// The consumer is gone for every call.
	_, err = e.svc.Consumer(e.ctx, c.ID)
	wantErr(t, "Consumer(deleted)", err, keygate.CodeNotFound)
	_, err = e.svc.UpdateConsumer(e.ctx, e.actor, c.ID, control.ConsumerPatch{Name: keygate.Some("x")})
	wantErr(t, "UpdateConsumer(deleted)", err, keygate.CodeNotFound)
	_, _, err = e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID})
	wantErr(t, "CreateKey(deleted consumer)", err, keygate.CodeNotFound)
	err = e.svc.DeleteConsumer(e.ctx, e.actor, c.ID, false)
	wantErr(t, "DeleteConsumer twice", err, keygate.CodeNotFound)
	cs, _, err := e.svc.Consumers(e.ctx, keygate.ListParams{})
	if err != nil || len(cs) != 1 || cs[0].ID != other.ID {
		t.Errorf("Consumers after delete = %v, %v; want only %s", cs, err, other.ID)
	}
	// The plan is free again.
	if err := e.svc.DeletePlan(e.ctx, e.actor, "silver"); err != nil {
		t.Errorf("DeletePlan after its only consumer was deleted: %v", err)
	}

	// Purged: name and email are erased from storage; the audit log holds ids only.
	if name, email := e.rawNameEmail(c.ID); name != "" || email != "" {
		t.Errorf("purged consumer row: name %q email %q", name, email)
	}
	e.noPersonalData()

	// Without purge, the row keeps them.
	d, err := e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: "Kept", Email: "kept@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteConsumer(e.ctx, e.actor, d.ID, false); err != nil {
		t.Fatal(err)
	}
	if name, email := e.rawNameEmail(d.ID); name != "Kept" || email != "kept@example.com" {
		t.Errorf("deleted (not purged) consumer row: %q %q", name, email)
	}
	_, err = e.svc.Consumer(e.ctx, d.ID)
	wantErr(t, "Consumer(deleted, not purged)", err, keygate.CodeNotFound)
	err = e.svc.DeleteConsumer(e.ctx, e.actor, "con_missing", true)
	wantErr(t, "DeleteConsumer(missing)", err, keygate.CodeNotFound)
}

// An erasure request can come after the consumer was deleted: purge must still erase.
func testPurgeAfterDelete(t *testing.T, e *env) {
	c, err := e.svc.CreateConsumer(e.ctx, e.actor, control.ConsumerCreate{Name: secretName, Email: secretEmail})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
	if err := e.svc.DeleteConsumer(e.ctx, e.actor, c.ID, false); err != nil {
		t.Fatal(err)
	}
	before := e.head()
	if err := e.svc.DeleteConsumer(e.ctx, e.actor, c.ID, true); err != nil {
		t.Fatalf("DeleteConsumer(purge) of a deleted consumer: %v", err)
	}
	if name, email := e.rawNameEmail(c.ID); name != "" || email != "" {
		t.Errorf("purged consumer row: name %q email %q", name, email)
	}
	entries := e.entriesAfter(before)
	if len(entries) != 1 || entries[0].Action != "consumer.delete" || entries[0].TargetID != c.ID || entries[0].Details["purge"] != true {
		t.Errorf("purge after delete wrote %d entries; want one consumer.delete with purge", len(entries))
	}
	if got := e.get(k.ID).Status; got != keygate.StateRevoked {
		t.Errorf("key: %s", got)
	}
	_, err = e.svc.Consumer(e.ctx, c.ID)
	wantErr(t, "Consumer(purged)", err, keygate.CodeNotFound)
	e.noPersonalData()
}

// Keys created or rotated while their consumer is being deleted must not outlive it: once
// DeleteConsumer returns, the consumer has no live key.
func testDeleteConsumerRace(t *testing.T, e *env) {
	for round := range 6 {
		c := e.consumer("")
		seed, _ := e.key(control.KeyCreate{ConsumerID: c.ID})
		_, p1 := e.key(control.KeyCreate{ConsumerID: c.ID})
		_, p2 := e.key(control.KeyCreate{ConsumerID: c.ID})
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, err := e.svc.CreateKey(e.ctx, e.actor, control.KeyCreate{ConsumerID: c.ID})
				if err != nil && keygate.ErrorCode(err) != keygate.CodeNotFound {
					t.Errorf("CreateKey: %v", err)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, _, err := e.svc.RotateKey(e.ctx, e.actor, seed.ID, nil)
			if code := keygate.ErrorCode(err); err != nil && code != keygate.CodeConflict && code != keygate.CodeNotFound {
				t.Errorf("RotateKey: %v", err)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Locks several keys, in an order unlike DeleteConsumer's.
			if _, err := e.svc.RevokeLeaked(e.ctx, e.actor, []string{p2, p1}); err != nil {
				t.Errorf("RevokeLeaked: %v", err)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := e.svc.DeleteConsumer(e.ctx, e.actor, c.ID, false); err != nil {
				t.Errorf("DeleteConsumer: %v", err)
			}
		}()
		close(start)
		wg.Wait()
		ks, _, err := e.svc.Keys(e.ctx, keygate.KeyFilter{ConsumerID: c.ID, Status: keygate.StateActive})
		if err != nil {
			t.Fatal(err)
		}
		if len(ks) != 0 {
			t.Fatalf("round %d: the deleted consumer has %d active keys", round, len(ks))
		}
	}
}

// Concurrent patches of one consumer each keep their field.
func testConsumerPatchRace(t *testing.T, e *env) {
	for round := range 5 {
		c := e.consumer("")
		var wg sync.WaitGroup
		start := make(chan struct{})
		patches := []control.ConsumerPatch{
			{Name: keygate.Some("new name")},
			{Email: keygate.Some("new@example.com")},
			{Metadata: keygate.Some(map[string]any{"tier": "x"})},
		}
		for _, p := range patches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := e.svc.UpdateConsumer(e.ctx, e.actor, c.ID, p); err != nil {
					t.Errorf("UpdateConsumer: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		got, err := e.svc.Consumer(e.ctx, c.ID)
		if err != nil || got.Name != "new name" || got.Email != "new@example.com" || got.Metadata["tier"] != "x" {
			t.Fatalf("round %d: after concurrent patches: %+v, %v; want all three changes", round, got, err)
		}
	}
}
