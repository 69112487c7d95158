package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keygate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := Load(Flags{}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "sqlite:./keygate.db" || Addr(c.ProxyAddr) != ":8080" || Addr(c.AdminAddr) != "127.0.0.1:8081" ||
		Addr(c.PortalAddr) != ":8082" || c.KeyPrefix != "kg" || c.LogFormat != "text" || c.Dir() != "." {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "key_prefix: fromfile\nlog_format: json\nadmin_addr: 127.0.0.1:9001\nproxy_addr: 127.0.0.1:9000\n")
	flagPrefix := "fromflag"
	empty := ""
	tests := []struct {
		name       string
		flags      Flags
		env        map[string]string
		wantPrefix string
		wantAdmin  string
		wantProxy  string
	}{
		{"file", Flags{Config: &file}, nil, "fromfile", "127.0.0.1:9001", "127.0.0.1:9000"},
		{"env over file", Flags{Config: &file}, map[string]string{"KEYGATE_KEY_PREFIX": "fromenv", "KEYGATE_ADMIN_ADDR": ""}, "fromenv", "", "127.0.0.1:9000"},
		{"flag over env", Flags{Config: &file, KeyPrefix: &flagPrefix, ProxyAddr: &empty}, map[string]string{"KEYGATE_KEY_PREFIX": "fromenv"}, "fromflag", "127.0.0.1:9001", ""},
		{"config from env", Flags{}, map[string]string{"KEYGATE_CONFIG": file}, "fromfile", "127.0.0.1:9001", "127.0.0.1:9000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.flags, envOf(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.KeyPrefix != tt.wantPrefix || Addr(c.AdminAddr) != tt.wantAdmin || Addr(c.ProxyAddr) != tt.wantProxy {
				t.Fatalf("prefix %q admin %q proxy %q; want %q %q %q", c.KeyPrefix, Addr(c.AdminAddr), Addr(c.ProxyAddr),
					tt.wantPrefix, tt.wantAdmin, tt.wantProxy)
			}
		})
	}
}

func TestExpansionAndPlans(t *testing.T) {
	file := writeFile(t, `
upstream_secret: ${SECRET}
drain_timeout: 2d
plans:
  - name: gold
    rate_limits: [{name: burst, limit: 5, period: 1s}]
    quota: {limit: 5000, period: month}
    max_age: 90d
`)
	c, err := Load(Flags{Config: &file}, envOf(map[string]string{"SECRET": "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.UpstreamSecret == nil || *c.Gateway.UpstreamSecret != "s3cret" {
		t.Fatalf("upstream_secret = %v", c.Gateway.UpstreamSecret)
	}
	if c.DrainTimeout.D() != 48*time.Hour || len(c.Plans) != 1 || c.Plans[0].MaxAge.D() != 90*24*time.Hour {
		t.Fatalf("config = %+v", c)
	}
	// An unset variable behind a secret is an error naming it.
	_, err = Load(Flags{Config: &file}, envOf(nil))
	if err == nil || !strings.Contains(err.Error(), "upstream_secret") {
		t.Fatalf("unset ${SECRET}: %v", err)
	}
}

func TestErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"unknown field with line", "log_format: text\nbogus: 1\n", nil, "line 2"},
		{"nested unknown field", "ratelimit:\n  on_store_error: local\n  nope: x\n", nil, "line 3"},
		{"wrong type", "admin:\n  max_body: lots\n", nil, "line 2"},
		{"bad duration", "log_level: info\ndrain_timeout: soon\n", nil, "line 2: invalid duration \"soon\""},
		{"bad mode", "ratelimit: {on_store_error: maybe}\n", nil, "ratelimit.on_store_error"},
		{"bad sink", "audit: {sinks: [syslog]}\n", nil, "audit.sinks"},
		{"bad plan", "plans: [{name: Gold}]\n", nil, "plans[0]"},
		{"dup plan", "plans: [{name: a}, {name: a}]\n", nil, "declared twice"},
		{"legacy overlaps prefix", "import: {legacy_prefixes: [kg_]}\n", nil, "legacy_prefixes"},
		{"negative ttl", "cache: {negative_ttl: 10s}\n", nil, "negative_ttl"},
		{"bad address", "", map[string]string{"KEYGATE_PROXY_ADDR": "nope"}, "proxy_addr"},
		{"bad db", "", map[string]string{"KEYGATE_DATABASE_URL": "mysql://x"}, "KEYGATE_DATABASE_URL"},
		{"bad redis", "", map[string]string{"KEYGATE_REDIS_URL": "localhost:6379"}, "KEYGATE_REDIS_URL"},
		{"tab in yaml", "log_format:\ttext\n\tx: 1\n", nil, "line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, tt.file)
			_, err := Load(Flags{Config: &f}, envOf(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Load = %v; want one line naming %q", err, tt.want)
			}
		})
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	f := writeFile(t, "")
	if _, err := Load(Flags{Config: &f}, envOf(nil)); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestDir(t *testing.T) {
	c := Defaults()
	c.DatabaseURL = "sqlite:/var/lib/keygate/k.db"
	if c.Dir() != "/var/lib/keygate" {
		t.Fatalf("Dir = %q", c.Dir())
	}
	c.DatabaseURL = "postgres://u@h/db"
	if c.Dir() != "." {
		t.Fatalf("Dir with postgres = %q", c.Dir())
	}
	c.DataDir = "/data"
	if c.Dir() != "/data" {
		t.Fatalf("Dir with data_dir = %q", c.Dir())
	}
}
