package gateway

import (
	"net/http"
	"strings"
	"unicode/utf8"
)

// cleanRequestPath returns the request's path cleaned once ("." and ".." resolved, duplicate
// slashes folded, a trailing slash kept), the path that is both matched and forwarded, or a
// 400 detail. An encoded slash is refused: the upstream would see a different path structure
// than the one keygate matched.
func cleanRequestPath(r *http.Request) (p, bad string) {
	raw := r.URL.RawPath
	if raw == "" {
		raw = r.URL.Path
	}
	p = r.URL.Path
	encoded := strings.IndexByte(raw, '%') >= 0 || strings.IndexByte(p, '%') >= 0
	switch {
	case p == "" || p[0] != '/':
		return "", "the request path must start with /"
	case encoded && (containsFold(raw, "%2f") || containsFold(raw, "%5c")):
		return "", "an encoded slash (%2F) or backslash in the path is not accepted"
	case encoded && (containsFold(p, "%2f") || containsFold(p, "%5c")) || strings.IndexByte(p, '\\') >= 0:
		return "", "a double-encoded slash or a backslash in the path is not accepted"
	case hasCtl(p):
		return "", "the path contains a control character"
	case !utf8.ValidString(p):
		return "", "the path is not valid UTF-8"
	}
	if isClean(p) {
		return p, ""
	}
	return cleanPrefix(p), ""
}

// isClean reports whether path.Clean would leave p alone (apart from a trailing slash).
func isClean(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		rest := p[i+1:]
		if rest == "" {
			return true
		}
		if rest[0] == '/' || rest == "." || rest == ".." || strings.HasPrefix(rest, "./") || strings.HasPrefix(rest, "../") {
			return false
		}
	}
	return true
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
