package admin

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsRenders runs the /docs page's script under node with a minimal DOM, when node is
// installed, to check that it renders every operation of the document.
func TestDocsRenders(t *testing.T) {
	if strings.Contains(string(docsHTML), "src=\"http") || strings.Contains(string(docsHTML), "href=\"http") {
		t.Fatal("docs.html loads something from the network")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	routes := newServer(nil, Options{}).routes
	b, err := json.Marshal(openAPIDocument(routes))
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "openapi.json")
	if err := os.WriteFile(doc, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(node, "testdata/docs_shim.js", "docs.html", doc).CombinedOutput()
	if err != nil {
		t.Fatalf("docs script: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("ops: %d ", len(routes)); !strings.Contains(string(out), want) {
		t.Fatalf("docs script rendered %s; want %q", out, want)
	}
}
