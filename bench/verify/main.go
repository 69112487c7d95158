// Command verify benchmarks POST /v1/keys/verify of a real keygate serve process over loopback,
// at several numbers of stored keys, on SQLite and PostgreSQL, and the bulk creation of keys
// through the store.
//
//	go run ./bench/verify [-keys 10000,1000000] [-db sqlite,postgres] [-duration 10s] [-concurrency 50]
//
// For each repetition, and in it for each database and number of keys N (so that the
// repetitions of one configuration are interleaved with the others, and a drift of the machine
// spreads over all rows), it:
//
//  1. creates a fresh database (SQLite in a temporary directory; PostgreSQL: a database with a
//     random name on -pg, dropped afterwards), and seeds one consumer and N keys through the
//     store's bulk path (Tx.CreateKeys in big transactions): that rate is the "seed keys/s";
//  2. starts keygate serve (-bin, or built from ./cmd/keygate) with only the admin listener on
//     127.0.0.1, the same secret key, and a root key with permission admin, pinned to
//     -server-cpu with taskset;
//  3. starts a load process (this program again, pinned to -load-cpu) that verifies each of
//     -sample keys drawn at random from the N once (warming the cache), then runs a closed loop
//     of -concurrency workers calling POST /v1/keys/verify with those keys for -warmup
//     unrecorded and -duration recorded, keeping every latency;
//  4. stops the server (SIGTERM) and drops the database.
//
// It prints one table: per database and N, the median and the spread (min–max) over the
// repetitions of seed keys/s, verifications/s, p50 and p99, and the ratio of the largest N's
// verifications/s to the smallest's.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate/bench/internal/benchkit"
	"github.com/keygate/keygate/keys"
	"github.com/keygate/keygate/secretkey"
)

type options struct {
	keys        []int
	dbs         []string
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	sample      int
	reps        int
	batch       int
	pgWriters   int
	pg          string
	bin         string
	serverCPU   string
	loadCPU     string
	dir         string
	seedProfile string
	seedPragmas string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-load" {
		// The load process: spec on stdin, result on stdout.
		if err := runLoad(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench/verify:", err)
		os.Exit(1)
	}
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	keysFlag := fs.String("keys", "10000,1000000", "numbers of stored keys, comma-separated")
	dbFlag := fs.String("db", "sqlite,postgres", "databases, comma-separated: sqlite, postgres")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "recorded load per measurement")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "unrecorded load before each measurement (after the cache is warm)")
	fs.IntVar(&o.concurrency, "concurrency", 50, "closed-loop workers (keep-alive connections)")
	fs.IntVar(&o.sample, "sample", 10_000, "distinct keys verified in rotation, drawn at random from the stored ones")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of each measurement, interleaved")
	fs.IntVar(&o.batch, "batch", 10_000, "keys per seeding transaction")
	fs.IntVar(&o.pgWriters, "pg-writers", 2, "seeding transactions in flight on PostgreSQL (SQLite has one writer)")
	fs.StringVar(&o.pg, "pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server (a database used only to create and drop the throwaway ones)")
	fs.StringVar(&o.bin, "bin", "", "keygate binary (default: go build ./cmd/keygate into the temporary directory)")
	fs.StringVar(&o.serverCPU, "server-cpu", "0", "CPU list for keygate serve (taskset -c; empty: not pinned)")
	fs.StringVar(&o.loadCPU, "load-cpu", "1", "CPU list for the load generator (taskset -c; empty: not pinned)")
	fs.StringVar(&o.seedPragmas, "sqlite-seed-pragmas", "", "extra SQLite pragmas for seeding only, e.g. cache_size(-262144),temp_store(memory) (default: the store's own settings)")
	fs.StringVar(&o.seedProfile, "seed-cpuprofile", "", "write a CPU profile of the first seeding to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*keysFlag, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(s), "_", ""))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-keys: %q is not a positive number", s)
		}
		o.keys = append(o.keys, n)
	}
	for _, s := range strings.Split(*dbFlag, ",") {
		s = strings.TrimSpace(s)
		if s != "sqlite" && s != "postgres" {
			return nil, fmt.Errorf("-db: %q is not sqlite or postgres", s)
		}
		o.dbs = append(o.dbs, s)
	}
	if o.concurrency < 1 || o.sample < 1 || o.reps < 1 || o.batch < 1 || o.pgWriters < 1 || o.duration <= 0 {
		return nil, errors.New("-concurrency, -sample, -reps, -batch, -pg-writers and -duration must be positive")
	}
	if _, err := exec.LookPath("taskset"); err != nil && (o.serverCPU != "" || o.loadCPU != "") {
		fmt.Fprintln(stderr, "taskset not found: server and load are not pinned")
		o.serverCPU, o.loadCPU = "", ""
	}
	return o, nil
}

// config is one row of the table.
type config struct {
	db string
	n  int
}

// sample is one measurement of a config.
type sample struct {
	seedRate float64
	load     loadResult
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	o.dir, err = os.MkdirTemp("", "keygate-bench-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(o.dir)
	if o.bin == "" {
		o.bin = filepath.Join(o.dir, "keygate")
		fmt.Fprintln(stderr, "building ./cmd/keygate …")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.bin, "./cmd/keygate")
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/keygate (run from the module root): %w", err)
		}
	}

	var configs []config
	for _, db := range o.dbs {
		for _, n := range o.keys {
			configs = append(configs, config{db, n})
		}
	}
	results := make(map[config][]sample)
	began := time.Now()
	for rep := 1; rep <= o.reps; rep++ {
		for _, c := range configs {
			fmt.Fprintf(stderr, "[%s] rep %d/%d: %s, %d keys\n", time.Since(began).Round(time.Second), rep, o.reps, c.db, c.n)
			s, err := measure(ctx, o, c, stderr)
			if err != nil {
				return fmt.Errorf("%s, %d keys: %w", c.db, c.n, err)
			}
			fmt.Fprintf(stderr, "    seed %.0f keys/s; %.0f verifications/s, p50 %.3f ms, p99 %.3f ms, failed %d; CPU server %.2f load %.2f other %.2f\n",
				s.seedRate, s.load.RPS, s.load.P50MS, s.load.P99MS, s.load.Failed, s.load.ServerCPU, s.load.LoadCPU, s.load.OtherCPU)
			results[c] = append(results[c], s)
		}
	}
	fmt.Fprintf(stdout, "\nPOST /v1/keys/verify over loopback: %d workers, %d distinct keys in rotation, %v recorded after %v warm-up; server on CPU %q, load on CPU %q; %d runs each, median (min–max); %d CPUs, %s, total %v\n\n",
		o.concurrency, o.sample, o.duration, o.warmup, o.serverCPU, o.loadCPU, o.reps, runtime.NumCPU(), runtime.Version(), time.Since(began).Round(time.Second))
	printTable(stdout, o, configs, results)
	return nil
}

// measure runs one repetition of one config: fresh database, seed, serve, load, stop, drop.
func measure(ctx context.Context, o *options, c config, stderr io.Writer) (sample, error) {
	db, err := newDatabase(ctx, c.db, o.dir, o.pg)
	if err != nil {
		return sample{}, err
	}
	defer func() {
		if err := db.drop(); err != nil {
			fmt.Fprintln(stderr, "    warning:", err)
		}
	}()
	secretHex := randomHex(32)
	sk, err := secretkey.Parse(secretHex)
	if err != nil {
		return sample{}, err
	}
	rootKey, err := keys.GenerateRoot(keys.DefaultPrefix)
	if err != nil {
		return sample{}, err
	}

	st, err := db.open(ctx, sk, o.seedPragmas)
	if err != nil {
		return sample{}, err
	}
	writers := 1
	if c.db == "postgres" {
		writers = o.pgWriters
	}
	if o.seedProfile != "" {
		stopProfile, err := startCPUProfile(o.seedProfile)
		if err != nil {
			return sample{}, err
		}
		o.seedProfile = ""
		defer stopProfile()
	}
	seeded, err := seedKeys(ctx, st, c.n, o.batch, writers)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sample{}, err
	}
	fmt.Fprintf(stderr, "    seeded %d keys in %v\n", c.n, seeded.elapsed.Round(time.Millisecond))
	picked := pick(seeded.plain, o.sample)
	seeded.plain = nil // let the plaintexts go before the load

	srv, err := startServer(ctx, o.bin, o.dir, o.serverCPU, db, secretHex, rootKey)
	if err != nil {
		return sample{}, err
	}
	res, lerr := runLoadProcess(ctx, o, loadSpec{
		URL: "http://" + srv.addr, RootKey: rootKey, Keys: picked, Concurrency: o.concurrency,
		Warmup: o.warmup, Duration: o.duration, ServerPID: srv.pid(),
	})
	serr := srv.stop()
	if lerr != nil {
		return sample{}, fmt.Errorf("%w\nserver log:\n%s", lerr, tail(srv.log, 20))
	}
	if serr != nil {
		return sample{}, serr
	}
	if res.Failed > 0 {
		fmt.Fprintf(stderr, "    warning: %d verifications failed, e.g. %s\n", res.Failed, res.FirstFail)
	}
	return sample{seedRate: float64(c.n) / seeded.elapsed.Seconds(), load: res}, nil
}

// startCPUProfile profiles this process into path until the returned function is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// pick returns k of the plaintexts drawn at random without repetition (all when k ≥ len).
func pick(plain []string, k int) []string {
	if k >= len(plain) {
		return slices.Clone(plain)
	}
	out := make([]string, 0, k)
	for _, i := range rand.Perm(len(plain))[:k] {
		out = append(out, plain[i])
	}
	return out
}

// runLoadProcess runs this program again as the load process, pinned to -load-cpu.
func runLoadProcess(ctx context.Context, o *options, spec loadSpec) (loadResult, error) {
	self, err := os.Executable()
	if err != nil {
		return loadResult{}, err
	}
	name, args := self, []string{"-load"}
	if o.loadCPU != "" {
		name, args = "taskset", append([]string{"-c", o.loadCPU, self}, args...)
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return loadResult{}, err
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(in)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return loadResult{}, fmt.Errorf("load process: %v: %s", err, strings.TrimSpace(errOut.String()))
	}
	var res loadResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return loadResult{}, fmt.Errorf("load process output: %w", err)
	}
	return res, nil
}

// printTable prints one row per config: medians and spreads over the repetitions, and the ratio
// of each database's largest-N verification rate to its smallest-N one.
func printTable(w io.Writer, o *options, configs []config, results map[config][]sample) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "db\tkeys\tseed keys/s\tverify req/s\tp50 ms\tp99 ms\treq/s vs fewest keys\tserver CPU\tload CPU\tother CPU\tfailed\t")
	lo := slices.Min(o.keys)
	for _, c := range configs {
		ss := results[c]
		get := func(f func(sample) float64) []float64 { return values(ss, f) }
		rps := get(func(s sample) float64 { return s.load.RPS })
		ratio := "—"
		if c.n != lo {
			if base := benchkit.Median(values(results[config{c.db, lo}], func(s sample) float64 { return s.load.RPS })); base > 0 {
				ratio = fmt.Sprintf("%.2f", benchkit.Median(rps)/base)
			}
		}
		failed := 0
		for _, s := range ss {
			failed += s.load.Failed
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", c.db, humanCount(c.n),
			spread(get(func(s sample) float64 { return s.seedRate }), "%.0f"),
			spread(rps, "%.0f"),
			spread(get(func(s sample) float64 { return s.load.P50MS }), "%.3f"),
			spread(get(func(s sample) float64 { return s.load.P99MS }), "%.3f"),
			ratio,
			spread(get(func(s sample) float64 { return s.load.ServerCPU }), "%.2f"),
			spread(get(func(s sample) float64 { return s.load.LoadCPU }), "%.2f"),
			spread(get(func(s sample) float64 { return s.load.OtherCPU }), "%.2f"),
			failed)
	}
	tw.Flush()
}

func values(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// spread formats "median (min–max)".
func spread(v []float64, format string) string {
	if len(v) == 0 {
		return "—"
	}
	if len(v) == 1 {
		return fmt.Sprintf(format, v[0])
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", benchkit.Median(v), slices.Min(v), slices.Max(v))
}

func humanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}
