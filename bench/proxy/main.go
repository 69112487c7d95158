// Command proxybench is the set of processes the proxy benchmark (run.sh) starts, plus its
// report: a minimal upstream, a bare httputil.ReverseProxy with a tuned transport, and keygate's
// gateway wired to the real verify path over SQLite with seeded keys.
//
//	proxybench upstream -addr 127.0.0.1:18001
//	proxybench bare     -addr 127.0.0.1:18003 -upstream http://127.0.0.1:18001
//	proxybench keygate  -addr 127.0.0.1:18004 -upstream http://127.0.0.1:18001 -keys 10000 -keys-out DIR -pprof 127.0.0.1:18005
//	proxybench report   results.tsv
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
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/audit"
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
		return serve(ctx, *addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		return serve(ctx, *addr, &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(u)
				pr.SetXForwarded()
			},
			Transport:    gateway.NewTransport(),
			BufferPool:   bufferPool{},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) },
		})
	case "keygate":
		return runKeygate(ctx, *addr, *upstream, *nkeys, *keysOut)
	case "report":
		if fs.NArg() != 1 {
			return errors.New("usage: proxybench report results.tsv")
		}
		return report(fs.Arg(0), stdout)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func serve(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, MaxHeaderBytes: 64 << 10, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runKeygate serves the gateway over a fresh SQLite database with n seeded keys: route /public
// (no key) and /keyed (a key; one effective window on the consumer, so the limiter runs and the
// RateLimit fields are written; identity headers signed).
func runKeygate(ctx context.Context, addr, upstream string, n int, keysOut string) error {
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
	plain, err := seed(ctx, st, n)
	if err != nil {
		return err
	}
	if keysOut != "" {
		if err := writeKeys(filepath.Join(keysOut, "keys-1.txt"), plain[:1]); err != nil {
			return err
		}
		if err := writeKeys(filepath.Join(keysOut, fmt.Sprintf("keys-%d.txt", n)), plain); err != nil {
			return err
		}
	}
	lim := ratelimit.NewMemory()
	defer lim.Close()
	v := verify.New(verify.Options{Store: st, Limiter: lim})
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
	fmt.Fprintf(os.Stderr, "keygate: %d keys seeded, serving on %s\n", n, addr)
	return serve(ctx, addr, g)
}

func writeKeys(path string, ks []string) error {
	return os.WriteFile(path, []byte(strings.Join(ks, "\n")+"\n"), 0o600)
}

type bufferPool struct{}

var buffers = make(chan []byte, 1024)

func (bufferPool) Get() []byte {
	select {
	case b := <-buffers:
		return b
	default:
		return make([]byte, 32<<10)
	}
}

func (bufferPool) Put(b []byte) {
	select {
	case buffers <- b:
	default:
	}
}

// report reads "round<TAB>target<TAB>conns<TAB>rps<TAB>p50ms<TAB>p99ms" lines and prints one
// table of medians, with the spread of req/s (min..max across rounds) and ratios of keygate's
// throughput to the bare Go proxy and to nginx.
func report(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type key struct{ target, conns string }
	type samples struct{ rps, p50, p99 []float64 }
	data := map[key]*samples{}
	var order []key
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Split(sc.Text(), "\t")
		if len(fl) != 6 {
			continue
		}
		k := key{fl[1], fl[2]}
		s, ok := data[k]
		if !ok {
			s = &samples{}
			data[k] = s
			order = append(order, k)
		}
		rps, _ := strconv.ParseFloat(fl[3], 64)
		p50, _ := strconv.ParseFloat(fl[4], 64)
		p99, _ := strconv.ParseFloat(fl[5], 64)
		s.rps, s.p50, s.p99 = append(s.rps, rps), append(s.p50, p50), append(s.p99, p99)
	}
	for _, conns := range []string{"50", "1"} {
		fmt.Fprintf(w, "\nwrk -t2 -c%s (medians of %d rounds; spread = min..max req/s as %% of the median)\n", conns, len(data[key{order[0].target, conns}].rps))
		fmt.Fprintf(w, "%-22s %10s %14s %9s %9s %8s %8s\n", "target", "req/s", "spread", "p50 ms", "p99 ms", "×bare", "×nginx")
		bare := data[key{"bare-go-proxy", conns}]
		nginx := data[key{"nginx", conns}]
		for _, k := range order {
			if k.conns != conns {
				continue
			}
			s := data[k]
			m := median(s.rps)
			lo, hi := minmax(s.rps)
			ratio := func(base *samples) string {
				if base == nil || median(base.rps) == 0 {
					return "-"
				}
				return fmt.Sprintf("%.2f", m/median(base.rps))
			}
			fmt.Fprintf(w, "%-22s %10.0f %6.0f%%..%3.0f%% %9.3f %9.3f %8s %8s\n", k.target, m,
				100*lo/m, 100*hi/m, median(s.p50), median(s.p99), ratio(bare), ratio(nginx))
		}
	}
	return sc.Err()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minmax(v []float64) (lo, hi float64) {
	lo, hi = v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// seed creates one consumer and n live secret keys with scope products:read and one generous
// window (so that the limiter runs and the RateLimit fields are written on every answer).
func seed(ctx context.Context, st keygate.Store, n int) ([]string, error) {
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
				RateLimits: []keygate.Window{{Name: "minute", Limit: 1e12, Period: keygate.Duration(time.Minute)}},
				State:      keygate.StateActive, Status: keygate.StateActive, CreatedAt: now, UpdatedAt: now,
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
