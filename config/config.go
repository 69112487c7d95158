// Package config loads keygate's settings: defaults < the YAML file < environment < flags
// (SPEC §1). Every field documents its default; Validate runs once, before anything starts, and
// names the setting that is wrong.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/gateway"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/ratelimit"
)

// Config is the whole configuration. Field comments give defaults.
type Config struct {
	// DatabaseURL is "sqlite:PATH" or a postgres:// URL. Default "sqlite:./keygate.db".
	DatabaseURL string `yaml:"database_url"`
	// RedisURL (redis://…) makes limits, quotas and cache invalidation shared through Redis.
	// Default "": in-memory limiter, single node.
	RedisURL string `yaml:"redis_url"`
	// RootKey, when set, must be a well-formed root key; a root key with that value is ensured
	// at start with permission admin. Prefer the environment (KEYGATE_ROOT_KEY) for secrets.
	RootKey string `yaml:"root_key"`
	// SecretKey is 32+ random bytes, base64 or hex. Default: a key file beside the SQLite
	// database, created on first start (required with PostgreSQL).
	SecretKey string `yaml:"secret_key"`
	// ProxyAddr is the gateway listener. Default ":8080"; "" disables it.
	ProxyAddr *string `yaml:"proxy_addr"`
	// AdminAddr is the admin API listener. Default "127.0.0.1:8081"; "" disables it.
	AdminAddr *string `yaml:"admin_addr"`
	// PortalAddr is the developer-portal listener. Default ":8082"; "" disables it.
	PortalAddr *string `yaml:"portal_addr"`
	// KeyPrefix of generated keys: 1-16 of [a-z0-9]. Default "kg".
	KeyPrefix string `yaml:"key_prefix"`
	// LogFormat is "text" or "json". Default "text".
	LogFormat string `yaml:"log_format"`
	// LogLevel is debug, info, warn or error. Default "info".
	LogLevel string `yaml:"log_level"`
	// DataDir is where keygate writes the files it generates (the secret key and the first root
	// key). Default: the directory of the SQLite database, or the working directory with
	// PostgreSQL.
	DataDir string `yaml:"data_dir"`
	// DrainTimeout bounds how long SIGTERM waits for in-flight requests. Default 30s.
	DrainTimeout keygate.Duration `yaml:"drain_timeout"`

	Admin     AdminConfig     `yaml:"admin"`
	Import    ImportConfig    `yaml:"import"`
	RateLimit RateLimitConfig `yaml:"ratelimit"`
	Audit     AuditConfig     `yaml:"audit"`
	Cache     CacheConfig     `yaml:"cache"`
	Database  DatabaseConfig  `yaml:"database"`
	// Plans declared here are created or updated at start and on SIGHUP, managed_by "config".
	Plans []control.PlanCreate `yaml:"plans"`

	// Gateway settings live at the top level of the file: upstream_secret, trusted_proxies, routes.
	Gateway gateway.Config `yaml:",inline"`

	// File is the path the configuration was read from ("" when none).
	File string `yaml:"-"`
}

// AdminConfig configures the admin API.
type AdminConfig struct {
	// MaxBody is the largest request body in bytes. Default 1048576 (1 MiB).
	MaxBody int64 `yaml:"max_body"`
}

// ImportConfig configures keys imported from other systems.
type ImportConfig struct {
	// LegacyPrefixes: imported plaintext keys must start with one of these, and verification
	// looks up strings only under them (besides keygate's own format). Default none.
	LegacyPrefixes []string `yaml:"legacy_prefixes"`
}

// RateLimitConfig configures the limiter.
type RateLimitConfig struct {
	// OnStoreError is local, open or closed: what to do while Redis is unreachable. Default local.
	OnStoreError string `yaml:"on_store_error"`
	// Timeout bounds every Redis call of the limiter. Default 200ms: short enough that a hung
	// Redis costs one probe request that long (then on_store_error applies at once), long enough
	// that a busy node does not mistake queueing for an outage.
	Timeout keygate.Duration `yaml:"timeout"`
}

// AuditConfig configures the audit log.
type AuditConfig struct {
	// Sinks copy every entry as a JSON line: "stdout" or "file:/path". Default none.
	Sinks []string `yaml:"sinks"`
}

// CacheConfig configures the verification cache.
type CacheConfig struct {
	// TTL bounds how long a cached key is trusted without an invalidation. Default 0 (until
	// invalidated) on a single node, 5s when Redis is configured but unreachable.
	TTL keygate.Duration `yaml:"ttl"`
	// NegativeTTL is how long an unknown key stays unknown, at most 5s. Default 5s.
	NegativeTTL keygate.Duration `yaml:"negative_ttl"`
	// MaxEntries bounds the cache. Default 1000000.
	MaxEntries int `yaml:"max_entries"`
}

// DatabaseConfig tunes database access.
type DatabaseConfig struct {
	// Timeout bounds every database call of a request. Default 5s.
	Timeout keygate.Duration `yaml:"timeout"`
}

// Error is a configuration error: one line naming the setting.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func errorf(format string, args ...any) error { return &Error{fmt.Sprintf(format, args...)} }

// Defaults returns the zero-config settings.
func Defaults() *Config {
	return &Config{
		DatabaseURL:  "sqlite:./keygate.db",
		ProxyAddr:    ptr(":8080"),
		AdminAddr:    ptr("127.0.0.1:8081"),
		PortalAddr:   ptr(":8082"),
		KeyPrefix:    keys.DefaultPrefix,
		LogFormat:    "text",
		LogLevel:     "info",
		DrainTimeout: keygate.Duration(30 * time.Second),
		Admin:        AdminConfig{MaxBody: 1 << 20},
		RateLimit:    RateLimitConfig{OnStoreError: "local", Timeout: keygate.Duration(200 * time.Millisecond)},
		Cache:        CacheConfig{NegativeTTL: keygate.Duration(5 * time.Second), MaxEntries: 1_000_000},
		Database:     DatabaseConfig{Timeout: keygate.Duration(5 * time.Second)},
	}
}

func ptr[T any](v T) *T { return &v }

// Flags are command-line overrides; nil fields were not given.
type Flags struct {
	Config      *string
	DatabaseURL *string
	RedisURL    *string
	ProxyAddr   *string
	AdminAddr   *string
	PortalAddr  *string
	KeyPrefix   *string
	LogFormat   *string
}

// Load builds the configuration from the file (flag --config, else KEYGATE_CONFIG, else none),
// then the environment, then flags, and validates it.
func Load(flags Flags, lookupEnv func(string) (string, bool)) (*Config, error) {
	path := ""
	if v, ok := lookupEnv("KEYGATE_CONFIG"); ok {
		path = v
	}
	if flags.Config != nil {
		path = *flags.Config
	}
	c := Defaults()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, errorf("config file %s: %v", path, unwrapPathError(err))
		}
		if err := Parse(b, lookupEnv, c); err != nil {
			return nil, errorf("config file %s: %v", path, err)
		}
		c.File = path
	}
	env := func(name string, dst *string) {
		if v, ok := lookupEnv(name); ok {
			*dst = v
		}
	}
	envPtr := func(name string, dst **string) {
		if v, ok := lookupEnv(name); ok {
			*dst = ptr(v)
		}
	}
	env("KEYGATE_DATABASE_URL", &c.DatabaseURL)
	env("KEYGATE_REDIS_URL", &c.RedisURL)
	env("KEYGATE_ROOT_KEY", &c.RootKey)
	env("KEYGATE_SECRET_KEY", &c.SecretKey)
	envPtr("KEYGATE_PROXY_ADDR", &c.ProxyAddr)
	envPtr("KEYGATE_ADMIN_ADDR", &c.AdminAddr)
	envPtr("KEYGATE_PORTAL_ADDR", &c.PortalAddr)
	env("KEYGATE_KEY_PREFIX", &c.KeyPrefix)
	env("KEYGATE_DATA_DIR", &c.DataDir)
	env("KEYGATE_LOG_FORMAT", &c.LogFormat)
	set := func(src *string, dst *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(flags.DatabaseURL, &c.DatabaseURL)
	set(flags.RedisURL, &c.RedisURL)
	set(flags.KeyPrefix, &c.KeyPrefix)
	set(flags.LogFormat, &c.LogFormat)
	if flags.ProxyAddr != nil {
		c.ProxyAddr = flags.ProxyAddr
	}
	if flags.AdminAddr != nil {
		c.AdminAddr = flags.AdminAddr
	}
	if flags.PortalAddr != nil {
		c.PortalAddr = flags.PortalAddr
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Parse decodes YAML into c (over its current values), expanding ${VAR} from the environment
// first. An unset or empty variable expands to "" (an explicitly empty string), so that a secret
// configured from a missing variable is caught by validation rather than silently absent.
// Unknown fields are errors with their line number.
func Parse(b []byte, lookupEnv func(string) (string, bool), c *Config) error {
	var expandErr error
	b = varRef.ReplaceAllFunc(b, func(m []byte) []byte {
		name := string(m[2 : len(m)-1])
		v, _ := lookupEnv(name)
		if v == "" {
			return []byte(`""`)
		}
		if strings.ContainsAny(v, "\n\r") {
			expandErr = fmt.Errorf("${%s} contains a line break", name)
		}
		return []byte(v)
	})
	if expandErr != nil {
		return expandErr
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, errEOF) || err.Error() == "EOF" {
			return nil // an empty file is the defaults
		}
		msg := strings.TrimPrefix(strings.ReplaceAll(err.Error(), "\n", "; "), "yaml: ")
		if !strings.Contains(msg, "line ") {
			// Errors of value parsers (durations) come without a position: find the value.
			if n := lineOf(b, msg); n > 0 {
				msg = fmt.Sprintf("line %d: %s", n, msg)
			}
		}
		return errors.New(msg)
	}
	return nil
}

var quoted = regexp.MustCompile(`"([^"]+)"`)

// lineOf returns the line of b holding the first quoted value of msg as a YAML value, or 0.
func lineOf(b []byte, msg string) int {
	m := quoted.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	for i, line := range strings.Split(string(b), "\n") {
		if j := strings.Index(line, ":"); j >= 0 && strings.Contains(line[j:], m[1]) {
			return i + 1
		}
	}
	return 0
}

var errEOF = errors.New("EOF")

// Validate checks every setting and returns the first problem, naming the setting.
func (c *Config) Validate() error {
	if _, _, err := c.DatabaseDriver(); err != nil {
		return err
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return errorf("KEYGATE_REDIS_URL / redis_url: not a redis:// URL")
		}
	}
	for name, a := range map[string]*string{"proxy_addr": c.ProxyAddr, "admin_addr": c.AdminAddr, "portal_addr": c.PortalAddr} {
		if a == nil || *a == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(*a); err != nil || !validPort(port) {
			return errorf("%s / KEYGATE_%s: %q is not a host:port address", name, strings.ToUpper(name), *a)
		}
	}
	if !keys.ValidPrefix(c.KeyPrefix) {
		return errorf("key_prefix / KEYGATE_KEY_PREFIX: %q must be 1-16 characters of [a-z0-9]", c.KeyPrefix)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return errorf("log_format / KEYGATE_LOG_FORMAT: %q must be text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return errorf("log_level: %q must be debug, info, warn or error", c.LogLevel)
	}
	if c.DrainTimeout.D() <= 0 {
		return errorf("drain_timeout must be positive")
	}
	if c.Admin.MaxBody < 1024 || c.Admin.MaxBody > 1<<30 {
		return errorf("admin.max_body must be between 1024 and 1073741824 bytes")
	}
	for i, p := range c.Import.LegacyPrefixes {
		if len(p) < 2 || len(p) > 64 || strings.TrimSpace(p) != p {
			return errorf("import.legacy_prefixes[%d]: %q must be 2-64 characters without surrounding spaces", i, p)
		}
		if strings.HasPrefix(p, c.KeyPrefix+"_") {
			return errorf("import.legacy_prefixes[%d]: %q overlaps keygate's own key prefix", i, p)
		}
	}
	if _, err := ratelimit.ParseStoreErrorMode(c.RateLimit.OnStoreError); err != nil {
		return errorf("ratelimit.on_store_error: %q must be local, open or closed", c.RateLimit.OnStoreError)
	}
	if c.RateLimit.Timeout.D() <= 0 || c.RateLimit.Timeout.D() > 10*time.Second {
		return errorf("ratelimit.timeout must be between 1ns and 10s")
	}
	for i, s := range c.Audit.Sinks {
		if s != "stdout" && !strings.HasPrefix(s, "file:") || s == "file:" {
			return errorf("audit.sinks[%d]: %q must be stdout or file:/path", i, s)
		}
	}
	if c.Cache.TTL.D() < 0 {
		return errorf("cache.ttl must not be negative")
	}
	if c.Cache.NegativeTTL.D() <= 0 || c.Cache.NegativeTTL.D() > 5*time.Second {
		return errorf("cache.negative_ttl must be between 1ns and 5s")
	}
	if c.Cache.MaxEntries < 1 {
		return errorf("cache.max_entries must be at least 1")
	}
	if c.Database.Timeout.D() <= 0 {
		return errorf("database.timeout must be positive")
	}
	seen := map[string]bool{}
	for i := range c.Plans {
		p := c.Plans[i]
		pl := keygate.Plan{Name: p.Name, RateLimits: p.RateLimits, Quota: p.Quota, ScopesAllowed: p.ScopesAllowed, MaxAge: p.MaxAge}
		if err := pl.Validate(); err != nil {
			return errorf("plans[%d] (%s): %s", i, p.Name, keygate.ErrorMessage(err))
		}
		if seen[p.Name] {
			return errorf("plans[%d]: plan %q is declared twice", i, p.Name)
		}
		seen[p.Name] = true
	}
	if err := c.Gateway.Validate(); err != nil {
		return &Error{err.Error()}
	}
	return nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// DatabaseDriver returns the driver ("sqlite" or "postgres") and its data source (a file path or URL).
func (c *Config) DatabaseDriver() (driver, dsn string, err error) {
	u := c.DatabaseURL
	switch {
	case strings.HasPrefix(u, "sqlite:"):
		p := strings.TrimPrefix(u, "sqlite:")
		p = strings.TrimPrefix(p, "//")
		if p == "" {
			return "", "", errorf("KEYGATE_DATABASE_URL / database_url: sqlite: needs a file path (sqlite:./keygate.db)")
		}
		return "sqlite", p, nil
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			return "", "", errorf("KEYGATE_DATABASE_URL / database_url: not a valid postgres:// URL")
		}
		return "postgres", u, nil
	}
	return "", "", errorf("KEYGATE_DATABASE_URL / database_url: must be sqlite:PATH or a postgres:// URL")
}

// Dir is where keygate keeps its generated files (secret key, root key): beside the SQLite
// database, or the working directory with PostgreSQL.
func (c *Config) Dir() string {
	if c.DataDir != "" {
		return c.DataDir
	}
	driver, dsn, err := c.DatabaseDriver()
	if err == nil && driver == "sqlite" {
		return filepath.Dir(dsn)
	}
	return "."
}

// Addr returns a listener address, "" when disabled.
func Addr(a *string) string {
	if a == nil {
		return ""
	}
	return *a
}
