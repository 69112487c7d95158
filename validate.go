package keygate

import (
	"encoding/json"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on sizes of user-supplied fields.
const (
	MaxNameLen      = 200
	MaxEmailLen     = 320
	MaxScopes       = 100
	MaxScopeLen     = 128
	MaxWindows      = 10
	MaxAllowEntries = 100
	MaxMetadataSize = 8 << 10 // bytes of JSON
	MaxPlanNameLen  = 64
	MaxReasonLen    = 500
)

// ValidScope reports whether s is a resource:action scope of [a-z0-9_-] parts; when wildcard is
// true a whole part may be "*".
func ValidScope(s string, wildcard bool) bool {
	if len(s) == 0 || len(s) > MaxScopeLen {
		return false
	}
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return false
	}
	return validScopePart(s[:i], wildcard) && validScopePart(s[i+1:], wildcard)
}

func validScopePart(p string, wildcard bool) bool {
	if p == "*" {
		return wildcard
	}
	return ValidSlug(p, MaxScopeLen)
}

// ValidSlug reports whether s is 1..max characters of [a-z0-9_-] (plan, window and route names).
func ValidSlug(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidPlanName reports whether s is a plan slug.
func ValidPlanName(s string) bool { return ValidSlug(s, MaxPlanNameLen) }

// ScopeCovers reports whether granted scope g covers scope s: each part equal, or "*" in g.
func ScopeCovers(g, s string) bool {
	gi := strings.IndexByte(g, ':')
	si := strings.IndexByte(s, ':')
	if gi < 0 || si < 0 {
		return false
	}
	return partCovers(g[:gi], s[:si]) && partCovers(g[gi+1:], s[si+1:])
}

func partCovers(g, s string) bool { return g == "*" || g == s }

// ScopesGrant reports whether every scope in want is covered by one in granted.
func ScopesGrant(granted, want []string) bool {
	for _, w := range want {
		ok := false
		for _, g := range granted {
			if ScopeCovers(g, w) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// ReadOnlyScope reports whether a scope's action is "read" (publishable keys may hold only these).
func ReadOnlyScope(s string) bool { return strings.HasSuffix(s, ":read") }

func badRequest(format string, args ...any) error { return Errorf(CodeBadRequest, format, args...) }

// ValidateText checks a user-supplied string: valid UTF-8, no control characters, at most max bytes.
func ValidateText(field, s string, max int) error {
	if len(s) > max {
		return badRequest("%s is longer than %d bytes", field, max)
	}
	if !utf8.ValidString(s) {
		return badRequest("%s is not valid UTF-8", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return badRequest("%s contains a control character", field)
		}
	}
	return nil
}

// ValidateScopes checks a list of granted scopes.
func ValidateScopes(field string, scopes []string) error {
	if len(scopes) > MaxScopes {
		return badRequest("%s has more than %d entries", field, MaxScopes)
	}
	for _, s := range scopes {
		if !ValidScope(s, true) {
			return badRequest("%s: %q is not a scope of the form resource:action with [a-z0-9_-] parts or *", field, truncate(s))
		}
	}
	return nil
}

// ValidateWindows checks rate-limit windows: names are slugs and unique, limit ≥ 1, period ≥ 1ms.
func ValidateWindows(field string, ws []Window) error {
	if len(ws) > MaxWindows {
		return badRequest("%s has more than %d windows", field, MaxWindows)
	}
	seen := make(map[string]bool, len(ws))
	for i, w := range ws {
		if !ValidSlug(w.Name, 64) {
			return badRequest("%s[%d].name must be 1-64 characters of [a-z0-9_-]", field, i)
		}
		if w.Name == "quota" || strings.HasPrefix(w.Name, "consumer-") {
			return badRequest("%s[%d].name %q is reserved", field, i, w.Name)
		}
		if seen[w.Name] {
			return badRequest("%s: window name %q is used twice", field, w.Name)
		}
		seen[w.Name] = true
		if w.Limit < 1 || w.Limit > 1e12 {
			return badRequest("%s[%d].limit must be between 1 and 1000000000000", field, i)
		}
		if w.Period.D() < time.Millisecond || w.Period.D() > 366*Day {
			return badRequest("%s[%d].period must be between 1ms and 366d", field, i)
		}
	}
	return nil
}

// ValidateQuota checks a quota (nil is no quota).
func ValidateQuota(field string, q *Quota) error {
	if q == nil {
		return nil
	}
	if q.Limit < 1 || q.Limit > 1e15 {
		return badRequest("%s.limit must be between 1 and 1000000000000000", field)
	}
	if q.Period != PeriodDay && q.Period != PeriodMonth {
		return badRequest("%s.period must be \"day\" or \"month\"", field)
	}
	return nil
}

// ParseIPAllow parses CIDRs or single addresses (IPv4 and IPv6).
func ParseIPAllow(field string, list []string) ([]netip.Prefix, error) {
	if len(list) > MaxAllowEntries {
		return nil, badRequest("%s has more than %d entries", field, MaxAllowEntries)
	}
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, badRequest("%s: %q is not an IP address or CIDR", field, truncate(s))
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePrefix parses "203.0.113.0/24", "2001:db8::/32" or a single address as a host prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ValidateReferrers checks referrer_allow entries: origins like "https://app.example.com",
// optionally with a leading "*." wildcard label ("https://*.example.com").
func ValidateReferrers(field string, list []string) error {
	if len(list) > MaxAllowEntries {
		return badRequest("%s has more than %d entries", field, MaxAllowEntries)
	}
	for _, s := range list {
		if err := ValidateText(field, s, 2048); err != nil {
			return err
		}
		u, err := url.Parse(strings.Replace(s, "*.", "wildcard.", 1))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return badRequest("%s: %q is not an origin like https://app.example.com", field, truncate(s))
		}
	}
	return nil
}

// ValidateMetadata checks that metadata encodes to at most MaxMetadataSize bytes of JSON.
func ValidateMetadata(field string, m map[string]any) error {
	if m == nil {
		return nil
	}
	// encoding/json replaces invalid UTF-8 with U+FFFD; refuse it instead of altering the data.
	if !validUTF8Value(m) {
		return badRequest("%s is not valid UTF-8", field)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return badRequest("%s is not encodable as JSON", field)
	}
	if len(b) > MaxMetadataSize {
		return badRequest("%s is %d bytes of JSON; at most %d are allowed", field, len(b), MaxMetadataSize)
	}
	return nil
}

// validUTF8Value reports whether every string (and object key) in a decoded JSON value is UTF-8.
func validUTF8Value(v any) bool {
	switch v := v.(type) {
	case string:
		return utf8.ValidString(v)
	case map[string]any:
		for k, e := range v {
			if !utf8.ValidString(k) || !validUTF8Value(e) {
				return false
			}
		}
	case []any:
		for _, e := range v {
			if !validUTF8Value(e) {
				return false
			}
		}
	}
	return true
}

// Validate checks a plan.
func (p *Plan) Validate() error {
	if !ValidPlanName(p.Name) {
		return badRequest("name must be 1-%d characters of [a-z0-9_-]", MaxPlanNameLen)
	}
	if err := ValidateWindows("rate_limits", p.RateLimits); err != nil {
		return err
	}
	if err := ValidateQuota("quota", p.Quota); err != nil {
		return err
	}
	if err := ValidateScopes("scopes_allowed", p.ScopesAllowed); err != nil {
		return err
	}
	if p.MaxAge != nil && p.MaxAge.D() <= 0 {
		return badRequest("max_age must be positive")
	}
	return nil
}

// Validate checks a consumer.
func (c *Consumer) Validate() error {
	if err := ValidateText("name", c.Name, MaxNameLen); err != nil {
		return err
	}
	if err := ValidateText("email", c.Email, MaxEmailLen); err != nil {
		return err
	}
	if c.Email != "" && (!strings.Contains(c.Email, "@") || strings.ContainsAny(c.Email, " <>")) {
		return badRequest("email is not an email address")
	}
	if c.Plan != "" && !ValidPlanName(c.Plan) {
		return badRequest("plan must be a plan name of [a-z0-9_-]")
	}
	if err := ValidateWindows("rate_limits", c.RateLimits); err != nil {
		return err
	}
	if err := ValidateQuota("quota", c.Quota); err != nil {
		return err
	}
	return ValidateMetadata("metadata", c.Metadata)
}

// Validate checks a key's user-settable fields. The plan ceiling is checked by the caller, which
// knows the plan.
func (k *Key) Validate() error {
	if err := ValidateText("name", k.Name, MaxNameLen); err != nil {
		return err
	}
	if k.Kind != KindSecret && k.Kind != KindPublishable {
		return badRequest("kind must be \"secret\" or \"publishable\"")
	}
	if k.Env != EnvLive && k.Env != EnvTest {
		return badRequest("env must be \"live\" or \"test\"")
	}
	if k.Plan != "" && !ValidPlanName(k.Plan) {
		return badRequest("plan must be a plan name of [a-z0-9_-]")
	}
	if err := ValidateScopes("scopes", k.Scopes); err != nil {
		return err
	}
	if err := ValidateWindows("rate_limits", k.RateLimits); err != nil {
		return err
	}
	if err := ValidateQuota("quota", k.Quota); err != nil {
		return err
	}
	if _, err := ParseIPAllow("ip_allow", k.IPAllow); err != nil {
		return err
	}
	if err := ValidateReferrers("referrer_allow", k.ReferrerAllow); err != nil {
		return err
	}
	if k.MaxAge != nil && k.MaxAge.D() <= 0 {
		return badRequest("max_age must be positive")
	}
	if k.Kind == KindPublishable {
		for _, s := range k.Scopes {
			if !ReadOnlyScope(s) {
				return badRequest("publishable keys may only hold scopes ending in :read; %q does not", s)
			}
		}
		if len(k.ReferrerAllow) == 0 {
			return badRequest("publishable keys need a referrer_allow list")
		}
	}
	return ValidateMetadata("metadata", k.Metadata)
}

// CheckCeiling returns a 400 error when a scope is not within a plan's scopes_allowed.
func CheckCeiling(scopes []string, p *Plan) error {
	if p == nil || p.ScopesAllowed == nil {
		return nil
	}
	for _, s := range scopes {
		if !ScopesGrant(p.ScopesAllowed, []string{s}) {
			return badRequest("scope %q is beyond plan %q's scopes_allowed", s, p.Name)
		}
	}
	return nil
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
