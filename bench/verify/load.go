package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadSpec is what the load process is asked to do (JSON on its stdin).
type loadSpec struct {
	URL         string        `json:"url"`      // http://host:port
	RootKey     string        `json:"root_key"` // Authorization: Bearer
	Keys        []string      `json:"keys"`     // the keys to verify, in rotation
	Concurrency int           `json:"concurrency"`
	Warmup      time.Duration `json:"warmup"`
	Duration    time.Duration `json:"duration"`
	ServerPID   int           `json:"server_pid"`
}

// loadResult is what it measured (JSON on its stdout).
type loadResult struct {
	Requests  int     `json:"requests"`   // completed in the measured window
	Failed    int     `json:"failed"`     // transport errors, non-200s or not "valid":true
	FirstFail string  `json:"first_fail"` // one example
	RPS       float64 `json:"rps"`
	P50MS     float64 `json:"p50_ms"`
	P90MS     float64 `json:"p90_ms"`
	P99MS     float64 `json:"p99_ms"`
	MaxMS     float64 `json:"max_ms"`
	// CPU use during the measured window, in cores (1.0 = one core busy all the time).
	ServerCPU float64 `json:"server_cpu"`
	LoadCPU   float64 `json:"load_cpu"`
	// OtherCPU is the rest of the machine's busy time (other processes, the database server,
	// the kernel's softirq time not charged to either): on a shared machine it flags a run that
	// competed for the CPUs.
	OtherCPU float64 `json:"other_cpu"`
	WarmedIn float64 `json:"warmed_in_s"` // seconds to verify every key once (cold cache)
}

// runLoad is the load process: a closed-loop generator of POST /v1/keys/verify. It first
// verifies every key once (which fills the server's cache: the first verification of a key reads
// the database), then runs spec.Concurrency workers, each sending its next request as soon as
// the previous answer is read, over keep-alive connections, for spec.Warmup unrecorded and then
// spec.Duration recorded. Every latency of the recorded window is kept.
func runLoad(in io.Reader, out io.Writer) error {
	var spec loadSpec
	if err := json.NewDecoder(in).Decode(&spec); err != nil {
		return fmt.Errorf("load spec: %w", err)
	}
	if len(spec.Keys) == 0 || spec.Concurrency < 1 {
		return fmt.Errorf("load spec: no keys or no workers")
	}
	client := &http.Client{
		Transport: &http.Transport{
			MaxIdleConns: spec.Concurrency, MaxIdleConnsPerHost: spec.Concurrency,
			MaxConnsPerHost: spec.Concurrency, DisableCompression: true, IdleConnTimeout: time.Minute,
		},
		Timeout: 10 * time.Second,
	}
	url := spec.URL + "/v1/keys/verify"
	auth := "Bearer " + spec.RootKey
	bodies := make([][]byte, len(spec.Keys))
	for i, k := range spec.Keys {
		bodies[i] = []byte(`{"key":"` + k + `","scopes":["` + benchScope + `"]}`)
	}
	buffers := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	verifyOnce := func(body []byte) error {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		buf := buffers.Get().(*bytes.Buffer)
		defer buffers.Put(buf)
		buf.Reset()
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return err
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("status %d: %.200s", resp.StatusCode, buf.Bytes())
		case !bytes.Contains(buf.Bytes(), []byte(`"valid":true`)):
			return fmt.Errorf("not valid: %.200s", buf.Bytes())
		}
		return nil
	}

	// Warm the cache: every key once, spread over the workers.
	t0 := time.Now()
	var next atomic.Int64
	var warmErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range spec.Concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(bodies) || warmErr.Load() != nil {
					return
				}
				if err := verifyOnce(bodies[i]); err != nil {
					err = fmt.Errorf("warming the cache: %w", err)
					warmErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := warmErr.Load(); p != nil {
		return *p
	}
	res := loadResult{WarmedIn: time.Since(t0).Seconds()}

	// The closed loop. A request is recorded when it starts inside [from, to).
	var measuring atomic.Bool
	from := time.Now().Add(spec.Warmup)
	to := from.Add(spec.Duration)
	lat := make([][]int64, spec.Concurrency)
	failed := make([]int, spec.Concurrency)
	var firstFail atomic.Pointer[string]
	ctx, cancel := context.WithDeadline(context.Background(), to)
	defer cancel()
	var serverCPU0, loadCPU0, busy0 time.Duration
	timer := time.AfterFunc(time.Until(from), func() {
		serverCPU0, loadCPU0, busy0 = cpuTime(spec.ServerPID), cpuTime(os.Getpid()), machineBusy()
		measuring.Store(true)
	})
	defer timer.Stop()
	for w := range spec.Concurrency {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			lat[w] = make([]int64, 0, 1<<16)
			for ctx.Err() == nil {
				body := bodies[r.IntN(len(bodies))]
				rec := measuring.Load()
				start := time.Now()
				err := verifyOnce(body)
				d := time.Since(start)
				if !rec {
					continue
				}
				if err != nil {
					failed[w]++
					msg := err.Error()
					firstFail.CompareAndSwap(nil, &msg)
					continue
				}
				lat[w] = append(lat[w], int64(d))
			}
		})
	}
	<-ctx.Done()
	serverCPU1, loadCPU1, busy1 := cpuTime(spec.ServerPID), cpuTime(os.Getpid()), machineBusy()
	wg.Wait()
	elapsed := spec.Duration.Seconds()
	all := slices.Concat(lat...)
	slices.Sort(all)
	res.Requests = len(all)
	for _, f := range failed {
		res.Failed += f
	}
	if p := firstFail.Load(); p != nil {
		res.FirstFail = *p
	}
	res.RPS = float64(len(all)) / elapsed
	res.P50MS, res.P90MS, res.P99MS = quantileMS(all, 0.50), quantileMS(all, 0.90), quantileMS(all, 0.99)
	if len(all) > 0 {
		res.MaxMS = float64(all[len(all)-1]) / 1e6
	}
	res.ServerCPU = (serverCPU1 - serverCPU0).Seconds() / elapsed
	res.LoadCPU = (loadCPU1 - loadCPU0).Seconds() / elapsed
	res.OtherCPU = max(0, (busy1-busy0).Seconds()/elapsed-res.ServerCPU-res.LoadCPU)
	return json.NewEncoder(out).Encode(res)
}

// quantileMS returns the q-quantile (nearest rank) of sorted nanosecond latencies, in ms.
func quantileMS(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return float64(sorted[i]) / 1e6
}

// cpuTime returns the user+system CPU time a process has used (Linux /proc; 0 elsewhere).
func cpuTime(pid int) time.Duration {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	// The command name (field 2) may hold spaces; the fields after its closing ")" are plain.
	_, rest, ok := strings.Cut(line, ") ")
	if !ok {
		return 0
	}
	fields := strings.Fields(rest)
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return ticks(utime + stime)
}

// ticks converts clock ticks of /proc (USER_HZ, 100 on Linux) to a duration.
func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / 100 }

// machineBusy returns the CPU time all CPUs spent not idle (Linux /proc/stat; 0 elsewhere).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseInt(f, 10, 64)
		busy += v
	}
	return ticks(busy)
}
