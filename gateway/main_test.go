package gateway

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// reverseProxyOnly makes newTestGateway turn the direct forwarder off. TestMain runs every test
// twice: with the direct forwarder (the default; plain-HTTP test upstreams get it), then with
// ReverseProxy for everything, so that both ways of forwarding meet the same expectations.
var reverseProxyOnly bool

func TestMain(m *testing.M) {
	code := m.Run()
	// Benchmarks choose their forwarder themselves; only the tests run again.
	if b := flag.Lookup("test.bench"); code == 0 && (b == nil || b.Value.String() == "") {
		fmt.Println("=== the same tests again, every request through httputil.ReverseProxy (Options.ReverseProxyOnly)")
		reverseProxyOnly = true
		code = m.Run()
	}
	os.Exit(code)
}
