// Command proxybench is the set of processes the proxy benchmark (run.sh) starts, plus its
// report: a minimal upstream, a bare httputil.ReverseProxy with a tuned transport, and keygate's
// gateway wired to the real verify path over SQLite with seeded keys.
//
//	proxybench upstream -addr 127.0.0.1:18001
//	proxybench bare     -addr 127.0.0.1:18003 -upstream http://127.0.0.1:18001
//	proxybench keygate  -addr 127.0.0.1:18004 -upstream http://127.0.0.1:18001 -keys 10000 -keys-out DIR -pprof 127.0.0.1:18005
//	proxybench keygate  -addr 127.0.0.1:18006 -limits memory -keys 10000 -keys-out DIR
//	proxybench keygate  -addr 127.0.0.1:18007 -limits redis -redis 127.0.0.1:6379 -redis-prefix P -keys 10000 -keys-out DIR
//	proxybench report   [-limits-base keygate-10000-keys] results.tsv
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	_ "net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/audit"
	"github.com/keygate/keygate/bench/internal/benchkit"
	"github.com/keygate/keygate/gateway"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/sqlstore"
	"github.com/keygate/keygate/verify"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: proxybench upstream|bare|keygate|report [flags]")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (127.0.0.1 only)")
	upstream := fs.String("upstream", "http://127.0.0.1:18001", "upstream base URL")
	nkeys := fs.Int("keys", 10000, "keys to seed (keygate)")
	keysOut := fs.String("keys-out", "", "directory to write keys-1.txt and keys-N.txt into (keygate)")
	pprofAddr := fs.String("pprof", "", "pprof listen address (keygate, bare)")
	limits := fs.String("limits", "none", "keygate: none (keys without limits), memory or redis (each key: 2 windows and a monthly quota, never refusing)")
	redisAddr := fs.String("redis", "127.0.0.1:6379", "keygate -limits redis: Redis address (127.0.0.1 only)")
	redisPrefix := fs.String("redis-prefix", "", "keygate -limits redis: prefix of every Redis key (default proxybench:<pid>:<ns>:); its keys are deleted at exit")
	limitsBase := fs.String("limits-base", "keygate-10000-keys", "report: the keyed row without limits the limits rows are compared with")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if !strings.HasPrefix(*addr, "127.0.0.1:") {
		return errors.New("-addr must be on 127.0.0.1")
	}
	if *pprofAddr != "" {
		go http.ListenAndServe(*pprofAddr, nil) // http.DefaultServeMux has the pprof handlers
	}
	switch args[0] {
	case "upstream":
		body := []byte("hello, world\n")
		return benchkit.Serve(ctx, *addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"text/plain"}
			h["Content-Length"] = []string{"13"}
			w.Write(body)
		}))
	case "bare":
		u, err := url.Parse(*upstream)
		if err != nil {
			return err
		}
		return benchkit.Serve(ctx, *addr, &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(u)
				pr.SetXForwarded()
			},
			Transport:    gateway.NewTransport(),
			BufferPool:   gateway.BufferPool{},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) },
		})
	case "keygate":
		switch *limits {
		case "none", "memory", "redis":
		default:
			return fmt.Errorf("-limits %q: want none, memory or redis", *limits)
		}
		if *limits == "redis" && !strings.HasPrefix(*redisAddr, "127.0.0.1:") {
			return errors.New("-redis must be on 127.0.0.1")
		}
		if *redisPrefix == "" {
			*redisPrefix = fmt.Sprintf("proxybench:%d:%d:", os.Getpid(), time.Now().UnixNano())
		}
		return runKeygate(ctx, *addr, *upstream, *nkeys, *keysOut, *limits, *redisAddr, *redisPrefix)
	case "report":
		if fs.NArg() != 1 {
			return errors.New("usage: proxybench report results.tsv")
		}
		return report(fs.Arg(0), *limitsBase, stdout)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// runKeygate serves the gateway over a fresh SQLite database with n seeded keys: route /public
// (no key) and /keyed (a key; identity headers signed). With limits "none" the keys have no
// limits, so the limiter is never called. With "memory" or "redis" every key has two windows and
// a monthly quota, all far above what a benchmark can send, so nothing is refused but every
// request is counted in each of them and the RateLimit fields are written on every answer.
func runKeygate(ctx context.Context, addr, upstream string, n int, keysOut, limits, redisAddr, redisPrefix string) error {
	dir, err := os.MkdirTemp("", "proxybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	auditKey := make([]byte, 32)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "keygate.db"), sqlstore.WithAuditHasher(audit.Hasher(auditKey)))
	if err != nil {
		return err
	}
	defer st.Close()
	plain, err := seed(ctx, st, n, limits != "none")
	if err != nil {
		return err
	}
	if keysOut != "" {
		name := "keys"
		if limits != "none" {
			name = "keys-" + limits
		} else if err := writeKeys(filepath.Join(keysOut, "keys-1.txt"), plain[:1]); err != nil {
			return err
		}
		if err := writeKeys(filepath.Join(keysOut, fmt.Sprintf("%s-%d.txt", name, n)), plain); err != nil {
			return err
		}
	}
	// The quota seed stands in for serve's (usage from the database); it runs once per key and
	// period, on the key's first request, so it is not part of the steady state measured here.
	seedQuota := ratelimit.WithSeed(func(context.Context, string, ratelimit.Kind, time.Time) (int64, error) { return 0, nil })
	var lim ratelimit.Limiter
	var rdb *redis.Client
	switch limits {
	case "redis":
		// As serve configures it, with a 200ms per-call timeout and 8 warm connections.
		rdb = redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true, MinIdleConns: 8, PoolSize: 64,
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
		defer rdb.Close()
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err != nil {
			return fmt.Errorf("redis %s: %w", redisAddr, err)
		}
		reg := prometheus.NewRegistry()
		r, err := ratelimit.NewRedis(rdb, seedQuota, ratelimit.WithPrefix(redisPrefix), ratelimit.WithTimeout(200*time.Millisecond),
			ratelimit.WithRegisterer(reg))
		if err != nil {
			return err
		}
		defer r.Close()
		defer func() { // calls that failed or timed out (each one puts the limiter on its fallback for 250ms)
			if mfs, err := reg.Gather(); err == nil {
				for _, mf := range mfs {
					for _, m := range mf.GetMetric() {
						fmt.Fprintf(os.Stderr, "keygate: %s %.0f\n", mf.GetName(), m.GetCounter().GetValue())
					}
				}
			}
		}()
		lim = r
	default:
		m := ratelimit.NewMemory(seedQuota)
		defer m.Close()
		lim = m
	}
	var allowed atomic.Int64
	v := verify.New(verify.Options{Store: st, Limiter: lim, OnAllowed: func(_ *verify.Entry, cost int64) { allowed.Add(cost) }})
	secret := "bench-secret"
	cfg := &gateway.Config{UpstreamSecret: &secret, Routes: []gateway.Route{
		{Name: "public", Match: gateway.Match{PathPrefix: "/public"}, Upstream: gateway.Upstream{Targets: []string{upstream}},
			Auth: gateway.Auth{Required: new(bool)}},
		{Name: "keyed", Match: gateway.Match{PathPrefix: "/keyed"}, Upstream: gateway.Upstream{Targets: []string{upstream}}},
	}}
	g, err := gateway.New(gateway.Options{Config: cfg, Auth: v, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer g.Close()
	fmt.Fprintf(os.Stderr, "keygate: %d keys seeded (limits: %s), serving on %s\n", n, limits, addr)
	err = benchkit.Serve(ctx, addr, g)
	fmt.Fprintf(os.Stderr, "keygate: %d keyed requests allowed\n", allowed.Load())
	if rdb != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cerr := cleanRedis(cctx, rdb, redisPrefix); cerr != nil {
			fmt.Fprintln(os.Stderr, "keygate: redis cleanup:", cerr)
		}
	}
	return err
}

// cleanRedis reports the sum of the quota counters under prefix (every allowed request should be
// in it) and deletes every key under prefix.
func cleanRedis(ctx context.Context, rdb *redis.Client, prefix string) error {
	var sum, quotas, deleted int64
	periods := map[string]int{} // quota counters by period (the part after the field's ':')
	seen := map[string]bool{}   // SCAN may return a key more than once
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// Each key is an owner's hash of counters (ratelimit/check.lua); quota fields are
		// "quota:<period>".
		cmds := make([]*redis.MapStringStringCmd, len(batch))
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range batch {
				cmds[i] = p.HGetAll(ctx, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, c := range cmds {
			for f, v := range c.Val() {
				name, period, ok := strings.Cut(f, ":")
				if !ok || name != "quota" {
					continue
				}
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					sum += n
					quotas++
					periods[period]++
				}
			}
		}
		n, err := rdb.Del(ctx, batch...).Result()
		deleted += n
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		k := iter.Val()
		if seen[k] {
			continue
		}
		seen[k] = true
		batch = append(batch, k)
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	left, err := rdb.Keys(ctx, prefix+"*").Result()
	fmt.Fprintf(os.Stderr, "keygate: redis: %d quota counters %v summing to %d; %d keys under %q deleted, %d left\n", quotas, periods, sum, deleted, prefix, len(left))
	return err
}

func writeKeys(path string, ks []string) error {
	return os.WriteFile(path, []byte(strings.Join(ks, "\n")+"\n"), 0o600)
}

// report reads "round<TAB>target<TAB>conns<TAB>rps<TAB>p50ms<TAB>p99ms[<TAB>cpu0 µs/req]" lines
// and prints one table of medians, with the spread of req/s (min..max across rounds) and ratios
// of keygate's throughput to the bare Go proxy and to nginx. With the CPU column it adds CPU 0's
// busy time per request and the same ratios of cost (base cost / this cost: 1.00 = as cheap):
// when wrk and the upstream on CPU 1 are the ceiling, req/s understates a cheaper proxy.
//
// A second table compares each keygate-limits-* row with limitsBase (the same keyed route, keys
// without limits): the ratio of the medians, and the median and range of the per-round ratios
// (both targets ran in the same round, a few seconds apart).
func report(path, limitsBase string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type key struct{ target, conns string }
	type samples struct {
		rps, p50, p99, cpu []float64
		byRound, cpuRound  map[string]float64
	}
	data := map[key]*samples{}
	var order []key
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Split(sc.Text(), "\t")
		if len(fl) != 6 && len(fl) != 7 {
			continue
		}
		k := key{fl[1], fl[2]}
		s, ok := data[k]
		if !ok {
			s = &samples{byRound: map[string]float64{}, cpuRound: map[string]float64{}}
			data[k] = s
			order = append(order, k)
		}
		rps, _ := strconv.ParseFloat(fl[3], 64)
		p50, _ := strconv.ParseFloat(fl[4], 64)
		p99, _ := strconv.ParseFloat(fl[5], 64)
		s.rps, s.p50, s.p99 = append(s.rps, rps), append(s.p50, p50), append(s.p99, p99)
		s.byRound[fl[0]] = rps
		if len(fl) == 7 {
			if c, err := strconv.ParseFloat(fl[6], 64); err == nil && c > 0 {
				s.cpu = append(s.cpu, c)
				s.cpuRound[fl[0]] = c
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(order) == 0 {
		return errors.New("report: no results")
	}
	threads := map[string]string{"50": "2", "1": "1"}
	for _, conns := range []string{"50", "1"} {
		if data[key{order[0].target, conns}] == nil {
			continue
		}
		fmt.Fprintf(w, "\nwrk -t%s -c%s (medians of %d rounds; spread = min..max req/s as %% of the median)\n", threads[conns], conns, len(data[key{order[0].target, conns}].rps))
		fmt.Fprintf(w, "%-22s %10s %14s %9s %9s %8s %8s %11s %9s %9s\n", "target", "req/s", "spread", "p50 ms", "p99 ms", "×bare", "×nginx",
			"cpu0 µs/req", "cpu×bare", "cpu×nginx")
		bare := data[key{"bare-go-proxy", conns}]
		nginx := data[key{"nginx", conns}]
		for _, k := range order {
			if k.conns != conns {
				continue
			}
			s := data[k]
			m := benchkit.Median(s.rps)
			lo, hi := benchkit.MinMax(s.rps)
			ratio := func(base *samples) string {
				if base == nil || benchkit.Median(base.rps) == 0 {
					return "-"
				}
				return fmt.Sprintf("%.2f", m/benchkit.Median(base.rps))
			}
			cost, costS := benchkit.Median(s.cpu), "-"
			if cost > 0 {
				costS = fmt.Sprintf("%.1f", cost)
			}
			cheaper := func(base *samples) string {
				if base == nil || cost == 0 || benchkit.Median(base.cpu) == 0 || k.target == "upstream-direct" {
					return "-"
				}
				return fmt.Sprintf("%.2f", benchkit.Median(base.cpu)/cost)
			}
			fmt.Fprintf(w, "%-22s %10.0f %6.0f%%..%3.0f%% %9.3f %9.3f %8s %8s %11s %9s %9s\n", k.target, m,
				100*lo/m, 100*hi/m, benchkit.Median(s.p50), benchkit.Median(s.p99), ratio(bare), ratio(nginx), costS, cheaper(bare), cheaper(nginx))
		}
	}
	base := map[string]*samples{"50": data[key{limitsBase, "50"}], "1": data[key{limitsBase, "1"}]}
	if base["50"] == nil {
		return nil
	}
	fmt.Fprintf(w, "\nlimits (2 windows + monthly quota per key) vs %s (same route, keys without limits)\n", limitsBase)
	fmt.Fprintf(w, "%-22s %5s %10s %9s %9s %8s %18s %8s %11s %9s\n", "target", "conns", "req/s", "p50 ms", "p99 ms", "×nolim", "per-round ×nolim", "target",
		"cpu0 µs/req", "cpu×nolim")
	for _, conns := range []string{"50", "1"} {
		b := base[conns]
		if b == nil {
			continue
		}
		for _, k := range order {
			if k.conns != conns || !strings.HasPrefix(k.target, "keygate-limits-") {
				continue
			}
			s := data[k]
			var per []float64
			for r, v := range s.byRound {
				if bv, ok := b.byRound[r]; ok && bv > 0 {
					per = append(per, v/bv)
				}
			}
			perS := "-"
			if len(per) > 0 {
				lo, hi := benchkit.MinMax(per)
				perS = fmt.Sprintf("%.2f (%.2f..%.2f)", benchkit.Median(per), lo, hi)
			}
			goal := "-"
			switch {
			case strings.HasSuffix(k.target, "-memory"):
				goal = "≥ 0.90"
			case strings.HasSuffix(k.target, "-redis"):
				goal = "≥ 0.60"
			}
			cpuS, cpuR := "-", "-"
			if c := benchkit.Median(s.cpu); c > 0 {
				cpuS = fmt.Sprintf("%.1f", c)
				if bc := benchkit.Median(b.cpu); bc > 0 {
					cpuR = fmt.Sprintf("%.2f", bc/c)
				}
			}
			fmt.Fprintf(w, "%-22s %5s %10.0f %9.3f %9.3f %8.2f %18s %8s %11s %9s\n", k.target, "c"+conns, benchkit.Median(s.rps),
				benchkit.Median(s.p50), benchkit.Median(s.p99), benchkit.Median(s.rps)/benchkit.Median(b.rps), perS, goal, cpuS, cpuR)
		}
	}
	return nil
}

// seed creates one consumer and n live secret keys with scope products:read; with limits, each
// key has two windows (burst 1e9/1s, minute 1e12/1m) and a monthly quota of 1e15: never refusing,
// but the limiter counts every request in all three. Without limits the limiter is not called.
func seed(ctx context.Context, st keygate.Store, n int, limits bool) ([]string, error) {
	var windows []keygate.Window
	var quota *keygate.Quota
	if limits {
		windows = []keygate.Window{
			{Name: "burst", Limit: 1e9, Period: keygate.Duration(time.Second)},
			{Name: "minute", Limit: 1e12, Period: keygate.Duration(time.Minute)},
		}
		quota = &keygate.Quota{Limit: 1e15, Period: keygate.PeriodMonth}
	}
	now := time.Now().UTC()
	c := &keygate.Consumer{ID: keys.NewID("con"), Name: "bench", CreatedAt: now, UpdatedAt: now}
	if err := st.Update(ctx, func(tx keygate.Tx) error { return tx.CreateConsumer(ctx, c) }); err != nil {
		return nil, err
	}
	plain := make([]string, 0, n)
	for len(plain) < n {
		batch := make([]*keygate.Key, 0, 1000)
		for len(batch) < cap(batch) && len(plain) < n {
			p, err := keys.Generate(keys.DefaultPrefix, keys.TagSecret, "live")
			if err != nil {
				return nil, err
			}
			parsed, _ := keys.Parse(p, keys.DefaultPrefix)
			h := keys.Hash(p)
			id := keys.NewID("key")
			batch = append(batch, &keygate.Key{
				ID: id, ConsumerID: c.ID, Name: "bench", Kind: keygate.KindSecret, Env: keygate.EnvLive,
				Start: keys.Start(p, parsed), Scopes: []string{"products:read"},
				RateLimits: windows, Quota: quota,
				State: keygate.StateActive, Status: keygate.StateActive, CreatedAt: now, UpdatedAt: now,
				Metadata: map[string]any{}, Hash: h[:], LimiterID: id,
			})
			plain = append(plain, p)
		}
		if err := st.Update(ctx, func(tx keygate.Tx) error { return tx.CreateKeys(ctx, batch...) }); err != nil {
			return nil, err
		}
	}
	return plain, nil
}
