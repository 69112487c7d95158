package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/audit"
	"github.com/keygate/keygate/cli"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
)

type server struct {
	url, token string
}

func startServer(t *testing.T) *server {
	t.Helper()
	ctx := context.Background()
	auditKey := bytes.Repeat([]byte{9}, 32)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "keygate.db"), sqlstore.WithAuditHasher(audit.Hasher(auditKey)))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	ctl := control.New(control.Options{Store: st, AuditKey: auditKey})
	token, err := ctl.BootstrapRootKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.New(admin.Options{Control: ctl}))
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &server{url: srv.URL, token: token}
}

// run runs keygate with args like cmd/keygate does and returns stdout, stderr and the error.
func run(t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := &cobra.Command{Use: "keygate", SilenceUsage: true, SilenceErrors: true}
	root.SetArgs(args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	cli.AddCommands(root, &stdout, &stderr, func(k string) string { return env[k] })
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func TestRootKeyGenerateOffline(t *testing.T) {
	out, _, err := run(t, nil, "root-key", "generate")
	if err != nil {
		t.Fatal(err)
	}
	k := strings.TrimSpace(out)
	if p, err := keys.Parse(k, "kg"); err != nil || !p.Root() {
		t.Fatalf("root-key generate = %q (%v)", k, err)
	}
	out, _, err = run(t, map[string]string{"KEYGATE_KEY_PREFIX": "acme"}, "root-key", "generate", "--json")
	var m map[string]string
	if err != nil || json.Unmarshal([]byte(out), &m) != nil || !strings.HasPrefix(m["key"], "acme_root_") {
		t.Fatalf("root-key generate --json with prefix = %q, %v", out, err)
	}
	if _, _, err := run(t, map[string]string{"KEYGATE_KEY_PREFIX": "Bad!"}, "root-key", "generate"); err == nil {
		t.Fatal("a bad prefix was accepted")
	}
}

func TestClientCommands(t *testing.T) {
	s := startServer(t)
	env := map[string]string{"KEYGATE_SERVER": s.url, "KEYGATE_TOKEN": s.token}
	mustJSON := func(args ...string) map[string]any {
		t.Helper()
		out, stderr, err := run(t, env, append(args, "--json")...)
		if err != nil {
			t.Fatalf("%v: %v (stderr %s)", args, err, stderr)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%v: output is not JSON: %q", args, out)
		}
		return m
	}
	mustText := func(args ...string) string {
		t.Helper()
		out, stderr, err := run(t, env, args...)
		if err != nil {
			t.Fatalf("%v: %v (stderr %s)", args, err, stderr)
		}
		return out
	}

	mustJSON("plans", "create", "gold", "--rate-limit", "minute=100/1m", "--quota", "5000/month", "--scopes-allowed", "products:*", "--max-age", "90d")
	if out := mustText("plans", "list"); !strings.Contains(out, "gold") || !strings.Contains(out, "minute=100/1m") {
		t.Fatalf("plans list = %q", out)
	}
	mustJSON("plans", "update", "gold", "--quota", "none")
	if p := mustJSON("plans", "get", "gold"); p["quota"] != nil {
		t.Fatalf("plan quota after none = %v", p["quota"])
	}

	con := mustJSON("consumers", "create", "--name", "Acme", "--email", "dev@acme.test", "--plan", "gold", "--metadata", `{"team":"x"}`)
	cid := con["id"].(string)
	if out := mustText("consumers", "list"); !strings.Contains(out, cid) || !strings.HasPrefix(out, "ID") {
		t.Fatalf("consumers list = %q", out)
	}
	if c := mustJSON("consumers", "update", cid, "--name", "Acme 2"); c["name"] != "Acme 2" {
		t.Fatalf("consumers update = %v", c)
	}
	if out := mustText("consumers", "get", cid); !strings.Contains(out, "Acme 2") {
		t.Fatalf("consumers get = %q", out)
	}

	k := mustJSON("keys", "create", "--consumer", cid, "--name", "mobile", "--scope", "products:read", "--ttl", "48h", "--ip-allow", "10.0.0.0/8")
	kid, plaintext := k["id"].(string), k["key"].(string)
	if !strings.HasPrefix(plaintext, "kg_sk_live_") {
		t.Fatalf("keys create = %v", k)
	}
	out, stderr, err := run(t, env, "keys", "create", "--consumer", cid)
	if err != nil || !strings.Contains(out, "kg_sk_live_") || !strings.Contains(stderr, "not shown again") {
		t.Fatalf("keys create (table) = %q %q %v", out, stderr, err)
	}
	if out := mustText("keys", "list", "--consumer", cid); strings.Count(out, "\n") != 3 || strings.Contains(out, plaintext) {
		t.Fatalf("keys list = %q", out)
	}
	if out := mustText("keys", "get", kid); !strings.Contains(out, "mobile") || strings.Contains(out, plaintext) {
		t.Fatalf("keys get = %q", out)
	}
	if u := mustJSON("keys", "update", kid, "--status", "disabled", "--name", "m2"); u["status"] != "disabled" || u["name"] != "m2" {
		t.Fatalf("keys update = %v", u)
	}
	rot := mustJSON("keys", "rotate", kid, "--grace-period", "1h")
	if rot["key"] == "" || rot["rotated_from"] != kid {
		t.Fatalf("keys rotate = %v", rot)
	}
	if r := mustJSON("keys", "revoke", rot["id"].(string), "--reason", "test"); r["status"] != "revoked" {
		t.Fatalf("keys revoke = %v", r)
	}

	rk := mustJSON("root-keys", "create", "--name", "ci", "--permission", "keys:read")
	if !strings.HasPrefix(rk["key"].(string), "kg_root_") {
		t.Fatalf("root-keys create = %v", rk)
	}
	if out := mustText("root-keys", "list"); !strings.Contains(out, rk["id"].(string)) {
		t.Fatalf("root-keys list = %q", out)
	}
	mustJSON("root-keys", "revoke", rk["id"].(string))

	if v := mustJSON("audit", "verify"); v["ok"] != true {
		t.Fatalf("audit verify = %v", v)
	}
	if out := mustText("audit", "verify"); !strings.Contains(out, "true") {
		t.Fatalf("audit verify (table) = %q", out)
	}
	mustJSON("consumers", "delete", cid, "--purge")
	mustJSON("plans", "delete", "gold")

	// Errors: one line, no usage, non-nil error.
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"not found", env, []string{"keys", "get", "key_missing"}, "NOT_FOUND"},
		{"bad request", env, []string{"plans", "create", "Bad Name"}, "BAD_REQUEST"},
		{"no token", map[string]string{"KEYGATE_SERVER": s.url}, []string{"keys", "list"}, "KEYGATE_TOKEN"},
		{"bad token", map[string]string{"KEYGATE_SERVER": s.url, "KEYGATE_TOKEN": "x"}, []string{"keys", "list"}, "UNAUTHORIZED"},
		{"unreachable", map[string]string{"KEYGATE_TOKEN": "x"}, []string{"keys", "list", "--server", "http://127.0.0.1:1"}, "UNAVAILABLE"},
		{"bad rate limit", env, []string{"keys", "create", "--consumer", "c", "--rate-limit", "fast"}, "name=limit/period"},
		{"nothing to change", env, []string{"keys", "update", kid}, "nothing to change"},
		{"missing consumer", env, []string{"keys", "create"}, "--consumer"},
	} {
		out, stderr, err := run(t, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v; want one line with %q", tc.name, err, tc.want)
		}
		if strings.Contains(stderr, "Usage:") || strings.Contains(out, "Usage:") {
			t.Errorf("%s: usage printed for an API error", tc.name)
		}
	}
}
