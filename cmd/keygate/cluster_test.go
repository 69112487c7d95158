package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/control"
	"github.com/keygate/keygate/store/postgres/pgtest"
)

// proc is keygate serve running as a separate process.
type proc struct {
	addrs  Addrs
	stderr *syncBuffer
}

// startBinary runs the built binary with vars (addresses "127.0.0.1:0" are replaced by free
// ports) and waits for its admin listener.
func startBinary(t *testing.T, vars map[string]string) *proc {
	t.Helper()
	p := &proc{stderr: &syncBuffer{}}
	envList := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range vars {
		if v == "127.0.0.1:0" {
			v = freeAddr(t)
		}
		switch k {
		case "KEYGATE_ADMIN_ADDR":
			p.addrs.Admin = v
		case "KEYGATE_PROXY_ADDR":
			p.addrs.Proxy = v
		}
		envList = append(envList, k+"="+v)
	}
	cmd := exec.Command(buildBinary(t), "serve")
	cmd.Env = envList
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	})
	waitHTTP(t, "http://"+p.addrs.Admin+"/healthz", p.stderr)
	return p
}

// redisURL returns the machine's Redis, skipping (or failing under CI=true) when unreachable.
func redisURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv("KEYGATE_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, _ := redis.ParseURL(url)
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis not reachable at %s (CI=true requires it): %v", url, err)
		}
		t.Skipf("redis not reachable at %s: %v", url, err)
	}
	return url
}

type verifyAnswer struct {
	Valid      bool   `json:"valid"`
	Code       string `json:"code"`
	RateLimits []struct {
		Name  string `json:"name"`
		Limit int64  `json:"limit"`
	} `json:"rate_limits"`
	Quota *struct {
		Limit     int64 `json:"limit"`
		Remaining int64 `json:"remaining"`
	} `json:"quota"`
}

func verifyOn(t testing.TB, hc *http.Client, addr, root, key string) verifyAnswer {
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/keys/verify", strings.NewReader(fmt.Sprintf(`{"key":%q}`, key)))
	req.Header.Set("Authorization", "Bearer "+root)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Errorf("verify: %v", err)
		return verifyAnswer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a verifyAnswer
	if err := json.Unmarshal(b, &a); err != nil || resp.StatusCode != 200 {
		t.Errorf("verify answered %d %s", resp.StatusCode, b)
	}
	return a
}

// TestClusterExactQuotaAndPropagation runs two keygate processes on one PostgreSQL database and
// one Redis:
// a quota holds exactly across both under 50 concurrent callers, a rotated key draws on the
// same counters, and a plan change on one node applies on the other within a second.
func TestClusterExactQuotaAndPropagation(t *testing.T) {
	rurl := redisURL(t)
	pg := pgtest.URL(t)
	secret := strings.Repeat("ef", 32)
	root := generateRootKey(t)
	cfgFile := t.TempDir() + "/keygate.yaml"
	os.WriteFile(cfgFile, []byte("ratelimit:\n  timeout: 2s\n"), 0o600)
	vars := map[string]string{"KEYGATE_CONFIG": cfgFile, "KEYGATE_DATABASE_URL": pg, "KEYGATE_REDIS_URL": rurl, "KEYGATE_SECRET_KEY": secret,
		"KEYGATE_ROOT_KEY": root, "KEYGATE_PROXY_ADDR": "", "KEYGATE_ADMIN_ADDR": "127.0.0.1:0", "KEYGATE_PORTAL_ADDR": ""}
	// Two real processes, as a cluster runs.
	a := startBinary(t, vars)
	b := startBinary(t, vars)
	ctx := context.Background()
	ca := admin.NewClient("http://"+a.addrs.Admin, root)

	if _, err := ca.CreatePlan(ctx, control.PlanCreate{Name: "metered", RateLimits: []keygate.Window{
		{Name: "minute", Limit: 100000, Period: keygate.Duration(time.Minute)}}}); err != nil {
		t.Fatal(err)
	}
	con, err := ca.CreateConsumer(ctx, control.ConsumerCreate{Name: "c", Plan: "metered"})
	if err != nil {
		t.Fatal(err)
	}
	const quota = 120
	k, err := ca.CreateKey(ctx, control.KeyCreate{ConsumerID: con.ID, Quota: &keygate.Quota{Limit: quota, Period: keygate.PeriodDay}})
	if err != nil {
		t.Fatal(err)
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	var valid, refused atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			addr := a.addrs.Admin
			if w%2 == 1 {
				addr = b.addrs.Admin
			}
			for i := 0; i < 4; i++ {
				switch ans := verifyOn(t, hc, addr, root, k.Plaintext); ans.Code {
				case keygate.CodeValid:
					valid.Add(1)
				case keygate.CodeQuotaExceeded:
					refused.Add(1)
				default:
					t.Errorf("code %q", ans.Code)
				}
			}
		}(w)
	}
	wg.Wait()
	if valid.Load() != quota || refused.Load() != 200-quota {
		t.Fatalf("valid = %d, refused = %d across two nodes; want exactly %d valid\n%s", valid.Load(), refused.Load(), quota, a.stderr.String())
	}

	// The rotated key shares the exhausted quota: rotating never resets usage.
	rot, err := ca.RotateKey(ctx, k.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ans := verifyOn(t, hc, b.addrs.Admin, root, rot.Plaintext); ans.Code != keygate.CodeQuotaExceeded {
		t.Fatalf("rotated key on node b = %s; want QUOTA_EXCEEDED (shared counters)", ans.Code)
	}

	// A plan change on node a reaches node b's cache within a second.
	fresh, err := ca.CreateKey(ctx, control.KeyCreate{ConsumerID: con.ID})
	if err != nil {
		t.Fatal(err)
	}
	if ans := verifyOn(t, hc, b.addrs.Admin, root, fresh.Plaintext); len(ans.RateLimits) != 1 || ans.RateLimits[0].Limit != 100000 {
		t.Fatalf("before the change node b shows %+v", ans.RateLimits)
	}
	if _, err := ca.UpdatePlan(ctx, "metered", control.PlanPatch{RateLimits: keygate.Some([]keygate.Window{
		{Name: "minute", Limit: 7, Period: keygate.Duration(time.Minute)}})}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for {
		ans := verifyOn(t, hc, b.addrs.Admin, root, fresh.Plaintext)
		if len(ans.RateLimits) == 1 && ans.RateLimits[0].Limit == 7 {
			break
		}
		if time.Since(changed) > time.Second {
			t.Fatalf("node b still shows %+v a second after the plan change on node a", ans.RateLimits)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Revocation on node b reaches node a.
	cb := admin.NewClient("http://"+b.addrs.Admin, root)
	if _, err := cb.RevokeKey(ctx, fresh.ID, "test"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for verifyOn(t, hc, a.addrs.Admin, root, fresh.Plaintext).Code != keygate.CodeRevoked {
		if time.Since(revoked) > time.Second {
			t.Fatal("node a still accepts a key revoked on node b after 1s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
