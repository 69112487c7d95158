package gateway

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/audit"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
	"github.com/keygate/keygate/verify"
)

var _ Authenticator = (*verify.Verifier)(nil)

// countingReader counts KeyByHash calls: the hot path must not reach storage for a known key.
type countingReader struct {
	keygate.Store
	byHash atomic.Int64
}

func (c *countingReader) KeyByHash(ctx context.Context, h []byte) (*keygate.Key, error) {
	c.byHash.Add(1)
	return c.Store.KeyByHash(ctx, h)
}

func TestWithRealVerifier(t *testing.T) {
	ctx := context.Background()
	auditKey := bytes.Repeat([]byte{7}, 32)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "k.db"), sqlstore.WithAuditHasher(audit.Hasher(auditKey)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	counted := &countingReader{Store: st}
	lim := ratelimit.NewMemory()
	t.Cleanup(func() { lim.Close() })
	v := verify.New(verify.Options{Store: counted, Limiter: lim})
	ctl := control.New(control.Options{Store: st, AuditKey: auditKey, Invalidator: v, Logger: quietLogger()})
	actor := control.Actor{ID: "system"}
	con, err := ctl.CreateConsumer(ctx, actor, control.ConsumerCreate{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	k, plain, err := ctl.CreateKey(ctx, actor, control.KeyCreate{ConsumerID: con.ID, Scopes: []string{"products:read"},
		RateLimits: []keygate.Window{{Name: "minute", Limit: 1000, Period: keygate.Duration(60e9)}}})
	if err != nil {
		t.Fatal(err)
	}

	up := newUpstream(t, nil)
	r := keyedRoute("products", "/v1/products", up.URL)
	r.Auth.Scopes = map[string][]string{"GET": {"products:read"}}
	_, srv := newTestGateway(t, &Config{Routes: []Route{r}}, v)
	get := func(key string) *http.Response {
		resp, _ := do(t, "GET", srv.URL+"/v1/products", map[string]string{"X-API-Key": key}, nil)
		return resp
	}

	if resp := get(plain); resp.StatusCode != 200 || resp.Header.Get("RateLimit") == "" {
		t.Fatalf("first request: %d %v", resp.StatusCode, resp.Header)
	}
	warm := counted.byHash.Load()
	for i := 0; i < 20; i++ {
		get(plain)
	}
	if n := counted.byHash.Load() - warm; n != 0 {
		t.Errorf("a warm key reached storage %d times", n)
	}
	if got := up.last().Header.Get("X-Keygate-Key-Id"); got != k.ID {
		t.Errorf("X-Keygate-Key-Id = %q; want %s", got, k.ID)
	}

	// Malformed strings never reach storage; unknown well-formed keys are cached negatively.
	before := counted.byHash.Load()
	last := "0"
	if plain[len(plain)-1] == '0' {
		last = "1"
	}
	for _, bad := range []string{"kg_sk_live_short", plain[:len(plain)-1] + last, "notakey"} {
		if resp := get(bad); resp.StatusCode != 401 {
			t.Errorf("%q: %d", bad, resp.StatusCode)
		}
	}
	if n := counted.byHash.Load() - before; n != 0 {
		t.Errorf("malformed keys reached storage %d times", n)
	}

	unknown, _ := keys.Generate("kg", keys.TagSecret, "live")
	before = counted.byHash.Load()
	for i := 0; i < 5; i++ {
		if resp := get(unknown); resp.StatusCode != 401 {
			t.Errorf("unknown key: %d", resp.StatusCode)
		}
	}
	if n := counted.byHash.Load() - before; n != 1 {
		t.Errorf("an unknown key reached storage %d times in a row; want 1 (negative cache)", n)
	}

	// Disable, enable, update and revoke take effect on the very next request.
	if _, err := ctl.UpdateKey(ctx, actor, k.ID, control.KeyPatch{Status: keygate.Some(keygate.StateDisabled)}); err != nil {
		t.Fatal(err)
	}
	if resp := get(plain); resp.StatusCode != 401 {
		t.Errorf("after disable: %d", resp.StatusCode)
	}
	if _, err := ctl.UpdateKey(ctx, actor, k.ID, control.KeyPatch{Status: keygate.Some(keygate.StateActive)}); err != nil {
		t.Fatal(err)
	}
	if resp := get(plain); resp.StatusCode != 200 {
		t.Errorf("after enable: %d", resp.StatusCode)
	}
	if _, err := ctl.UpdateKey(ctx, actor, k.ID, control.KeyPatch{Scopes: keygate.Some([]string{"orders:read"})}); err != nil {
		t.Fatal(err)
	}
	if resp := get(plain); resp.StatusCode != 403 {
		t.Errorf("after removing the scope: %d", resp.StatusCode)
	}
	if _, err := ctl.RevokeKey(ctx, actor, k.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if resp := get(plain); resp.StatusCode != 401 {
		t.Errorf("after revoke: %d", resp.StatusCode)
	}

	// A key created on this node works at once.
	_, plain2, err := ctl.CreateKey(ctx, actor, control.KeyCreate{ConsumerID: con.ID, Scopes: []string{"products:read"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp := get(plain2); resp.StatusCode != 200 {
		t.Errorf("new key: %d", resp.StatusCode)
	}
}
