package gateway

import (
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
	if code == 0 {
		fmt.Println("=== the same tests again, every request through httputil.ReverseProxy (Options.ReverseProxyOnly)")
		reverseProxyOnly = true
		code = m.Run()
	}
	os.Exit(code)
}
