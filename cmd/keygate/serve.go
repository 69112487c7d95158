package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/audit"
	"github.com/keygate/keygate/cluster"
	"github.com/keygate/keygate/config"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/gateway"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/secretkey"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
	"github.com/keygate/keygate/usage"
	"github.com/keygate/keygate/verify"
)

// Addrs are the bound addresses of the listeners ("" when disabled).
type Addrs struct {
	Proxy, Admin, Portal string
}

// settingsError is a bad setting: one line, exit code 2, nothing listening.
func settingsError(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

// configFlags registers the flags that override settings and returns a function that reads
// the ones given on the command line.
func configFlags(cmd *cobra.Command) func() config.Flags {
	f := cmd.Flags()
	f.String("config", "", "YAML config file (env KEYGATE_CONFIG)")
	f.String("database-url", "", "sqlite:PATH or postgres:// URL (env KEYGATE_DATABASE_URL)")
	f.String("redis-url", "", "redis:// URL (env KEYGATE_REDIS_URL)")
	f.String("proxy-addr", "", "gateway listener, empty disables (env KEYGATE_PROXY_ADDR)")
	f.String("admin-addr", "", "admin listener, empty disables (env KEYGATE_ADMIN_ADDR)")
	f.String("portal-addr", "", "portal listener, empty disables (env KEYGATE_PORTAL_ADDR)")
	f.String("key-prefix", "", "key prefix (env KEYGATE_KEY_PREFIX)")
	f.String("log-format", "", "text or json (env KEYGATE_LOG_FORMAT)")
	return func() config.Flags {
		get := func(name string) *string {
			if !f.Changed(name) {
				return nil
			}
			v, _ := f.GetString(name)
			return &v
		}
		return config.Flags{
			Config: get("config"), DatabaseURL: get("database-url"), RedisURL: get("redis-url"),
			ProxyAddr: get("proxy-addr"), AdminAddr: get("admin-addr"), PortalAddr: get("portal-addr"),
			KeyPrefix: get("key-prefix"), LogFormat: get("log-format"),
		}
	}
}

func loadConfig(flags config.Flags, lookupEnv func(string) (string, bool)) (*config.Config, error) {
	cfg, err := config.Load(flags, lookupEnv)
	if err != nil {
		return nil, settingsError("%v", err)
	}
	return cfg, nil
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	o := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// openStore opens the configured database and applies pending migrations.
func openStore(ctx context.Context, cfg *config.Config, opts ...sqlstore.Option) (*sqlstore.Store, error) {
	driver, dsn, err := cfg.DatabaseDriver()
	if err != nil {
		return nil, settingsError("%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var s *sqlstore.Store
	if driver == "sqlite" {
		s, err = sqlite.Open(ctx, dsn, opts...)
	} else {
		s, err = postgres.Open(ctx, dsn, opts...)
	}
	if err != nil {
		return nil, settingsError("database (KEYGATE_DATABASE_URL): %s", oneLine(err))
	}
	return s, nil
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

// loadSecretKey reads KEYGATE_SECRET_KEY, or the key file beside the SQLite database.
func loadSecretKey(cfg *config.Config, log *slog.Logger) (secretkey.Key, error) {
	if cfg.SecretKey != "" {
		k, err := secretkey.Parse(cfg.SecretKey)
		if err != nil {
			return secretkey.Key{}, settingsError("KEYGATE_SECRET_KEY: %v", err)
		}
		return k, nil
	}
	driver, _, _ := cfg.DatabaseDriver()
	if driver != "sqlite" {
		return secretkey.Key{}, settingsError("KEYGATE_SECRET_KEY: required with PostgreSQL (32+ random bytes, base64 or hex; e.g. openssl rand -hex 32)")
	}
	dir := cfg.Dir()
	k, created, err := secretkey.LoadOrCreate(dir)
	if err != nil {
		return secretkey.Key{}, settingsError("KEYGATE_SECRET_KEY unset and the key file in %s is unusable: %v", dir, err)
	}
	if created {
		log.Info("created a new secret key file", "dir", dir)
	}
	return k, nil
}

func migrateCommand(lookupEnv func(string) (string, bool)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations and exit",
		Args:  cobra.NoArgs,
	}
	flags := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(flags(), lookupEnv)
		if err != nil {
			return err
		}
		driver, dsn, _ := cfg.DatabaseDriver()
		ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
		defer cancel()
		if driver == "sqlite" {
			err = sqlite.Migrate(ctx, dsn)
		} else {
			err = postgres.Migrate(ctx, dsn)
		}
		if err != nil {
			return settingsError("database (KEYGATE_DATABASE_URL): %s", oneLine(err))
		}
		fmt.Fprintln(cmd.OutOrStdout(), "migrations applied")
		return nil
	}
	return cmd
}

func serveCommand(lookupEnv func(string) (string, bool), stderr io.Writer, ready chan<- Addrs) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway, the admin API and the portal",
		Args:  cobra.NoArgs,
	}
	flags := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		fl := flags()
		cfg, err := loadConfig(fl, lookupEnv)
		if err != nil {
			return err
		}
		return serve(cmd.Context(), cfg, fl, lookupEnv, stderr, ready)
	}
	return cmd
}

// server is a running keygate node: everything serve starts, and what stops it in order.
type server struct {
	cfg      *config.Config
	log      *slog.Logger
	store    *sqlstore.Store
	control  *control.Service
	verifier *verify.Verifier
	gateway  *gateway.Gateway
	limiter  interface{ Close() error }
	rdb      *redis.Client
	bus      *cluster.Bus
	usage    *usage.Recorder
	sinks    audit.Sink
	reloads  *prometheus.CounterVec
	registry *prometheus.Registry
}

func serve(ctx context.Context, cfg *config.Config, fl config.Flags, lookupEnv func(string) (string, bool), stderr io.Writer, ready chan<- Addrs) (err error) {
	log := newLogger(cfg, stderr)
	s := &server{cfg: cfg, log: log}
	defer func() {
		if cerr := s.close(context.Background()); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := s.start(ctx); err != nil {
		return err
	}

	// Bind every listener before serving any, so that a bad address leaves nothing listening.
	type listener struct {
		name string
		ln   net.Listener
		h    http.Handler
	}
	var lns []listener
	bind := func(name, addr string, h http.Handler) error {
		if addr == "" || h == nil {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.ln.Close()
			}
			return settingsError("%s_addr: cannot listen on %s: %v", name, addr, errors.Unwrap(err))
		}
		lns = append(lns, listener{name, ln, h})
		return nil
	}
	if err := bind("proxy", config.Addr(cfg.ProxyAddr), s.gateway); err != nil {
		return err
	}
	if err := bind("admin", config.Addr(cfg.AdminAddr), s.adminHandler()); err != nil {
		return err
	}
	if p := config.Addr(cfg.PortalAddr); p != "" {
		log.Info("the developer portal is not part of this build; portal_addr is not served", "portal_addr", p)
	}

	var servers []*http.Server
	var wg sync.WaitGroup
	var addrs Addrs
	serveErr := make(chan error, len(lns))
	for _, l := range lns {
		srv := &http.Server{
			Handler:           l.h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		servers = append(servers, srv)
		switch l.name {
		case "proxy":
			addrs.Proxy = l.ln.Addr().String()
		case "admin":
			addrs.Admin = l.ln.Addr().String()
		}
		log.Info("listening", "listener", l.name, "addr", l.ln.Addr().String())
		wg.Add(1)
		go func(ln net.Listener) {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}(l.ln)
	}
	if ready != nil {
		ready <- addrs
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case err := <-serveErr:
			log.Error("listener failed", "err", err)
			running = false
		case <-hup:
			s.reload(ctx, fl, lookupEnv)
		}
	}

	log.Info("shutting down: draining in-flight requests", "timeout", cfg.DrainTimeout.D().String())
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout.D())
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(drainCtx); err != nil {
			log.Warn("drain timed out; closing remaining connections", "err", err)
			srv.Close()
		}
	}
	wg.Wait()
	return nil
}

// start opens the store and builds every component.
func (s *server) start(ctx context.Context) error {
	cfg, log := s.cfg, s.log
	sk, err := loadSecretKey(cfg, log)
	if err != nil {
		return err
	}
	auditKey := sk.Derive("audit")
	s.store, err = openStore(ctx, cfg, sqlstore.WithAuditHasher(audit.Hasher(auditKey)))
	if err != nil {
		return err
	}
	sinks, err := audit.ParseSinks(cfg.Audit.Sinks)
	if err != nil {
		return settingsError("audit.sinks: %v", err)
	}
	s.sinks = audit.MultiSink(sinks...)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_config_reloads_total", Help: "SIGHUP reloads by result.",
	}, []string{"result"})
	reg.MustRegister(s.reloads)
	s.registry = reg

	// The limiter: Redis when configured, else memory. Quota counters are refilled from the
	// durable daily usage, so a restart or an emptied Redis never resets a quota.
	seed := func(ctx context.Context, limitKey string, kind ratelimit.Kind, start time.Time) (int64, error) {
		return seedQuota(ctx, s.store, limitKey, kind, start)
	}
	mode, _ := ratelimit.ParseStoreErrorMode(cfg.RateLimit.OnStoreError)
	var lim ratelimit.Limiter
	if cfg.RedisURL != "" {
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return settingsError("KEYGATE_REDIS_URL: %v", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = time.Second, time.Second, time.Second
		// Per-call deadlines come from the context (the limiter's short timeout); warm connections
		// keep a dial out of the request path.
		opt.ContextTimeoutEnabled, opt.MinIdleConns = true, 4
		if !strings.Contains(cfg.RedisURL, "pool_size=") {
			// Every proxied request makes one limiter call: go-redis's default pool (10 per CPU)
			// makes concurrent requests queue for a connection.
			opt.PoolSize = 64
		}
		s.rdb = redis.NewClient(opt)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := s.rdb.Ping(pctx).Err(); err != nil {
			log.Warn("redis is unreachable; ratelimit.on_store_error applies until it answers", "mode", mode.String(), "err", err)
		}
		cancel()
		r, err := ratelimit.NewRedis(s.rdb, ratelimit.WithSeed(seed), ratelimit.WithOnStoreError(mode),
			ratelimit.WithTimeout(cfg.RateLimit.Timeout.D()), ratelimit.WithRegisterer(reg))
		if err != nil {
			return settingsError("KEYGATE_REDIS_URL: %v", err)
		}
		lim, s.limiter = r, r
	} else {
		m := ratelimit.NewMemory(ratelimit.WithSeed(seed))
		lim, s.limiter = m, m
	}

	s.usage = usage.New(s.store, usage.Options{Logger: log})
	// Events go to the log until webhooks deliver them; their data never holds a secret.
	events := logEvents{log}
	var claim func(ctx context.Context, name string, ttl time.Duration) bool
	if s.rdb != nil {
		claim = func(ctx context.Context, name string, ttl time.Duration) bool {
			ok, err := s.rdb.SetNX(ctx, name, 1, ttl).Result()
			return ok || err != nil // with Redis down, a duplicate beats a lost event
		}
	}
	quotaEvents := usage.NewQuotaWatcher(events, nil, claim)
	cacheTTL := cfg.Cache.TTL.D()
	s.verifier = verify.New(verify.Options{
		Store: s.store, Limiter: lim, Prefix: cfg.KeyPrefix, LegacyPrefixes: cfg.Import.LegacyPrefixes,
		TTL: cacheTTL, NegativeTTL: cfg.Cache.NegativeTTL.D(), MaxEntries: cfg.Cache.MaxEntries,
		OnAllowed: func(e *verify.Entry, cost int64) {
			s.usage.Add(e.Key.ID, e.ConsumerID, e.Key.LimiterID, cost)
		},
		OnLimits: quotaEvents.Observe,
	})
	// With Redis, changes reach the other nodes' caches through pub/sub; while that channel is
	// down, cached keys are trusted for 5s at most (SPEC §10).
	var inv control.Invalidator = s.verifier
	if s.rdb != nil {
		degradedTTL := 5 * time.Second
		if t := cacheTTL; t > 0 && t < degradedTTL {
			degradedTTL = t
		}
		s.verifier.SetTTL(degradedTTL) // until the channel is subscribed
		s.bus = cluster.New(s.rdb, s.verifier, nodeID(), cluster.Hooks{
			Degraded:  func() { s.verifier.SetTTL(degradedTTL); s.verifier.Purge() },
			Recovered: func() { s.verifier.Purge(); s.verifier.SetTTL(cacheTTL) },
		}, log)
		inv = s.bus
	}
	s.control = control.New(control.Options{
		Store: s.store, Prefix: cfg.KeyPrefix, LegacyPrefixes: cfg.Import.LegacyPrefixes,
		Invalidator: inv, AuditKey: auditKey, Logger: log, Events: events,
		AuditSink: func(e *keygate.AuditEntry) {
			if err := s.sinks.Write(e); err != nil {
				log.Error("audit sink write failed", "err", err)
			}
		},
	})

	bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := s.bootstrapRootKey(bctx); err != nil {
		return err
	}
	if err := s.control.SyncConfigPlans(bctx, cfg.Plans); err != nil {
		return settingsError("plans: %s", keygate.ErrorMessage(err))
	}

	s.gateway, err = gateway.New(gateway.Options{
		Config: &cfg.Gateway, Auth: s.verifier, Limiter: lim, Registerer: reg, Logger: log,
	})
	if err != nil {
		return settingsError("%v", err)
	}
	return nil
}

// bootstrapRootKey applies SPEC §1: KEYGATE_ROOT_KEY is ensured; without it, the first start
// writes a generated root key to a 0600 file.
func (s *server) bootstrapRootKey(ctx context.Context) error {
	if s.cfg.RootKey != "" {
		if err := s.control.EnsureRootKey(ctx, s.cfg.RootKey); err != nil {
			return settingsError("%s", keygate.ErrorMessage(err))
		}
		return nil
	}
	plaintext, err := s.control.BootstrapRootKey(ctx)
	if err != nil {
		return settingsError("root key bootstrap: %s", keygate.ErrorMessage(err))
	}
	if plaintext == "" {
		return nil
	}
	path := filepath.Join(s.cfg.Dir(), "keygate-root-key.txt")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.WriteString(plaintext + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return settingsError("cannot write the generated root key to %s: %v", path, errors.Unwrap(err))
	}
	abs, _ := filepath.Abs(path)
	s.log.Warn("generated the first root key (permission admin); it is in this file, readable only by you — move it somewhere safe", "file", abs)
	return nil
}

// logEvents writes domain events to the log (the webhook sender replaces it).
type logEvents struct{ log *slog.Logger }

func (l logEvents) Emit(_ context.Context, eventType string, data map[string]any) {
	l.log.Info("event", "type", eventType, "data", data)
}

// nodeID names this process in cluster messages.
func nodeID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), keys.NewID("n"))
}

// seedQuota reads a quota counter's usage from the durable daily counters. Limit keys are
// "k:<limiterID>:quota" (a key's rotation chain) and "c:<consumerID>:quota" (a consumer).
func seedQuota(ctx context.Context, st keygate.Store, limitKey string, kind ratelimit.Kind, start time.Time) (int64, error) {
	end := start.AddDate(0, 0, 1)
	if kind == ratelimit.QuotaMonth {
		end = start.AddDate(0, 1, 0)
	}
	owner, ok := strings.CutSuffix(limitKey, ":quota")
	if !ok || len(owner) < 3 {
		return 0, nil
	}
	switch owner[:2] {
	case "k:":
		return st.UsageByLimiter(ctx, owner[2:], start, end)
	case "c:":
		return st.UsageByConsumer(ctx, owner[2:], start, end)
	}
	return 0, nil
}

func (s *server) adminHandler() http.Handler {
	return admin.New(admin.Options{
		Control: s.control, Verifier: s.verifier, Logger: s.log,
		Metrics: promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}),
		Ready: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			return s.store.Ping(ctx)
		},
		MaxBody: s.cfg.Admin.MaxBody,
	})
}

// reload re-reads the config file on SIGHUP: routes and config-managed plans. A bad file is
// rejected, logged and counted; the running config stays.
func (s *server) reload(ctx context.Context, fl config.Flags, lookupEnv func(string) (string, bool)) {
	cfg, err := config.Load(fl, lookupEnv)
	if err == nil {
		err = s.gateway.Reload(&cfg.Gateway)
	}
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = s.control.SyncConfigPlans(rctx, cfg.Plans)
		cancel()
	}
	if err != nil {
		s.reloads.WithLabelValues("error").Inc()
		s.log.Error("config reload rejected; the running config stays", "err", err)
		return
	}
	s.reloads.WithLabelValues("ok").Inc()
	s.log.Info("config reloaded", "routes", len(cfg.Gateway.Routes), "plans", len(cfg.Plans))
}

// close stops everything in order: the gateway's health checks, the usage recorder (flushing),
// the limiter, Redis, the audit sinks, then the store.
func (s *server) close(ctx context.Context) error {
	var errs []error
	if s.gateway != nil {
		s.gateway.Close()
	}
	if s.usage != nil {
		if err := s.usage.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush usage: %w", err))
		}
	}
	if s.bus != nil {
		s.bus.Close()
	}
	if s.limiter != nil {
		s.limiter.Close()
	}
	if s.rdb != nil {
		s.rdb.Close()
	}
	if s.sinks != nil {
		s.sinks.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
	return errors.Join(errs...)
}
