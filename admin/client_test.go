package admin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

func TestClient(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := NewClient(e.srv.URL+"/", e.token)

	p, err := c.CreatePlan(ctx, control.PlanCreate{Name: "gold", Quota: &keygate.Quota{Limit: 100, Period: "day"}})
	if err != nil || p.Name != "gold" {
		t.Fatalf("CreatePlan = %+v, %v", p, err)
	}
	if _, err := c.UpdatePlan(ctx, "gold", control.PlanPatch{Quota: keygate.Opt[*keygate.Quota]{Set: true, Null: true}}); err != nil {
		t.Fatalf("UpdatePlan: %v", err)
	}
	if got, err := c.Plan(ctx, "gold"); err != nil || got.Quota != nil {
		t.Fatalf("Plan after clearing quota = %+v, %v", got, err)
	}
	con, err := c.CreateConsumer(ctx, control.ConsumerCreate{Name: "Acme", Plan: "gold"})
	if err != nil {
		t.Fatalf("CreateConsumer: %v", err)
	}
	if got, err := c.UpdateConsumer(ctx, con.ID, control.ConsumerPatch{Name: keygate.Some("Acme 2")}); err != nil || got.Name != "Acme 2" {
		t.Fatalf("UpdateConsumer = %+v, %v", got, err)
	}
	k, err := c.CreateKey(ctx, control.KeyCreate{ConsumerID: con.ID, Name: "web", Scopes: []string{"a:read"}})
	if err != nil || k.Plaintext == "" || k.ID == "" {
		t.Fatalf("CreateKey = %+v, %v", k, err)
	}
	if got, err := c.Key(ctx, k.ID); err != nil || got.ID != k.ID {
		t.Fatalf("Key = %+v, %v", got, err)
	}
	if got, err := c.UpdateKey(ctx, k.ID, control.KeyPatch{Status: keygate.Some("disabled")}); err != nil || got.Status != "disabled" {
		t.Fatalf("UpdateKey = %+v, %v", got, err)
	}
	page, err := c.Keys(ctx, keygate.KeyFilter{ConsumerID: con.ID, ListParams: keygate.ListParams{Limit: 10}})
	if err != nil || len(page.Data) != 1 || page.Next() != "" {
		t.Fatalf("Keys = %+v, %v", page, err)
	}
	grace := time.Duration(0)
	rot, err := c.RotateKey(ctx, k.ID, &grace)
	if err != nil || rot.Plaintext == "" || rot.ID == k.ID {
		t.Fatalf("RotateKey = %+v, %v", rot, err)
	}
	if _, err := c.RevokeKey(ctx, rot.ID, "test"); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if res, err := c.RevokeLeaked(ctx, []string{rot.Plaintext}); err != nil || len(res.AlreadyRevoked)+len(res.Revoked) != 1 {
		t.Fatalf("RevokeLeaked = %+v, %v", res, err)
	}
	rk, err := c.CreateRootKey(ctx, control.RootKeyCreate{Name: "ci", Permissions: []string{"audit:read"}})
	if err != nil || rk.Plaintext == "" {
		t.Fatalf("CreateRootKey = %+v, %v", rk, err)
	}
	if l, err := c.RootKeys(ctx, keygate.ListParams{}); err != nil || len(l.Data) != 2 {
		t.Fatalf("RootKeys = %+v, %v", l, err)
	}
	if v, err := NewClient(e.srv.URL, rk.Plaintext).VerifyAudit(ctx); err != nil || !v.OK {
		t.Fatalf("VerifyAudit = %+v, %v", v, err)
	}
	if h, err := c.AuditHead(ctx); err != nil || h.Seq == 0 {
		t.Fatalf("AuditHead = %+v, %v", h, err)
	}
	from := time.Now().Add(-time.Hour)
	if l, err := c.AuditEntries(ctx, keygate.AuditFilter{Action: "key.create", From: &from}); err != nil || len(l.Data) == 0 {
		t.Fatalf("AuditEntries = %+v, %v", l, err)
	}
	if _, err := c.RevokeRootKey(ctx, rk.ID); err != nil {
		t.Fatalf("RevokeRootKey: %v", err)
	}
	if _, err := c.DeleteConsumer(ctx, con.ID, true); err != nil {
		t.Fatalf("DeleteConsumer: %v", err)
	}
	if _, err := c.DeletePlan(ctx, "gold"); err != nil {
		t.Fatalf("DeletePlan: %v", err)
	}

	// Errors carry the problem's code and detail.
	for _, tc := range []struct {
		name string
		call func() error
		code string
	}{
		{"not found", func() error { _, err := c.Key(ctx, "key_missing"); return err }, keygate.CodeNotFound},
		{"bad request", func() error { _, err := c.CreatePlan(ctx, control.PlanCreate{Name: "Bad Name"}); return err }, keygate.CodeBadRequest},
		{"unauthorized", func() error { _, err := NewClient(e.srv.URL, "nope").Keys(ctx, keygate.KeyFilter{}); return err }, keygate.CodeUnauthorized},
		{"forbidden", func() error {
			_, err := NewClient(e.srv.URL, rk.Plaintext).Keys(ctx, keygate.KeyFilter{})
			return err
		}, keygate.CodeUnauthorized}, // revoked above
		{"unreachable", func() error {
			_, err := NewClient("http://127.0.0.1:1", "x").Keys(ctx, keygate.KeyFilter{})
			return err
		}, keygate.CodeUnavailable},
	} {
		err := tc.call()
		var ke *keygate.Error
		if !errors.As(err, &ke) || ke.Code != tc.code || ke.Message == "" {
			t.Errorf("%s: err = %#v; want code %s", tc.name, err, tc.code)
		}
	}
}

func TestPatchBody(t *testing.T) {
	p := control.KeyPatch{Name: keygate.Some("x"), Plan: keygate.Opt[string]{Set: true, Null: true}}
	got := PatchBody(p)
	if len(got) != 2 || got["name"] != "x" || got["plan"] != nil {
		t.Fatalf("PatchBody = %v", got)
	}
	if _, ok := got["plan"]; !ok {
		t.Fatalf("PatchBody dropped a null")
	}
}
