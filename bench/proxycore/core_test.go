package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// BenchmarkCore sends requests through each proxy core over loopback, all in this process
// (client, proxy and upstream): allocs/op are the whole round trip's, the same client and
// upstream for every core, so the differences between cores are the cores'. "direct" is the
// client and the upstream alone: a core's own share is its figure minus direct's.
//
//	go test -run '^$' -bench Core -benchmem -benchtime 20000x ./bench/proxycore
func BenchmarkCore(b *testing.B) {
	for _, core := range []string{"direct", "nethttp", "nethttp-raw", "fasthttp", "fasthttp-stream"} {
		b.Run(core, func(b *testing.B) {
			url := startCore(b, core)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}}
			get(b, client, url) // connections, pools
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				get(b, client, url)
			}
		})
	}
}

// TestCoresForward checks that every core forwards the answer and the probe's request body.
func TestCoresForward(t *testing.T) {
	for _, core := range []string{"nethttp", "nethttp-raw", "fasthttp", "fasthttp-stream"} {
		t.Run(core, func(t *testing.T) {
			url := startCore(t, core)
			get(t, http.DefaultClient, url)
			resp, err := http.Post(url+"echo", "text/plain", strings.NewReader(strings.Repeat("x", 100000)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "100000" {
				t.Fatalf("echo: %q", b)
			}
		})
	}
}

func get(tb testing.TB, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello, world\n" {
		tb.Fatalf("%d %q", resp.StatusCode, b)
	}
}

// startCore starts an upstream and the named core on free loopback ports and returns the
// core's base URL.
func startCore(tb testing.TB, core string) string {
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	up, px := freeAddr(tb), freeAddr(tb)
	go run(ctx, []string{"upstream", "-addr", up}, io.Discard)
	if core == "direct" {
		px = up
		core = "upstream"
	}
	args := []string{core, "-addr", px, "-upstream", "http://" + up}
	if core == "fasthttp-stream" {
		args = []string{"fasthttp", "-stream", "-addr", px, "-upstream", "http://" + up}
	}
	if core != "upstream" {
		go run(ctx, args, io.Discard)
	}
	url := fmt.Sprintf("http://%s/", px)
	for i := 0; i < 100; i++ {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("%s did not come up", core)
	return ""
}

func freeAddr(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
