package verify

import "strings"

// origin is a scheme, host and port, parsed from a referrer_allow entry or a request's
// Origin/Referer. A host starting with "*." matches any subdomain (not the bare domain).
type origin struct {
	scheme string
	host   string // lower case, without port; "*.example.com" for a wildcard
	port   string // "" for the scheme's default
}

// parseOrigin parses "https://app.example.com[:port][/path...]" without allocating for
// lower-case input.
func parseOrigin(s string) (origin, bool) {
	i := strings.Index(s, "://")
	if i <= 0 {
		return origin{}, false
	}
	o := origin{scheme: lower(s[:i])}
	if o.scheme != "http" && o.scheme != "https" {
		return origin{}, false
	}
	rest := s[i+3:]
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		rest = rest[:j]
	}
	if strings.IndexByte(rest, '@') >= 0 || rest == "" {
		return origin{}, false
	}
	host := rest
	if j := strings.LastIndexByte(rest, ':'); j >= 0 && !strings.HasSuffix(rest, "]") {
		host, o.port = rest[:j], rest[j+1:]
	}
	if (o.scheme == "https" && o.port == "443") || (o.scheme == "http" && o.port == "80") {
		o.port = ""
	}
	o.host = lower(host)
	return o, o.host != ""
}

func (a origin) matches(o origin) bool {
	if a.scheme != o.scheme || a.port != o.port {
		return false
	}
	if strings.HasPrefix(a.host, "*.") {
		suffix := a.host[1:] // ".example.com"
		return len(o.host) > len(suffix) && strings.HasSuffix(o.host, suffix)
	}
	return a.host == o.host
}

// lower lower-cases ASCII, allocating only when s has an upper-case letter.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
