package admin

import (
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate"
)

// List limits (SPEC §3).
const (
	DefaultLimit = 50
	MaxLimit     = 1000
	maxCursor    = 1024
	maxFilter    = 256
)

var (
	paramLimit = Param{Name: "limit", Description: "Page size (default 50; values above 1000 are treated as 1000).",
		Schema: &Schema{Type: "integer", Minimum: ptr(1.0)}}
	paramCursor = Param{Name: "cursor", Description: "The next_cursor of the previous page.",
		Schema: &Schema{Type: "string", MaxLength: ptr(maxCursor)}}
	paramConsumerID = Param{Name: "consumer_id", Description: "Only this consumer's keys.",
		Schema: &Schema{Type: "string", MaxLength: ptr(maxFilter)}}
	paramStatus = Param{Name: "status", Description: "Only keys with this status.",
		Schema: &Schema{Type: "string", Enum: []any{keygate.StateActive, keygate.StateDisabled, keygate.StatusExpired, keygate.StateRevoked}}}
	paramPurge = Param{Name: "purge", Description: "Also erase name and email from storage.",
		Schema: &Schema{Type: "boolean"}}
	paramActor  = Param{Name: "actor", Description: "Only entries of this actor (e.g. root_key:rk_…).", Schema: &Schema{Type: "string", MaxLength: ptr(maxFilter)}}
	paramAction = Param{Name: "action", Description: "Only entries of this action (e.g. key.create).", Schema: &Schema{Type: "string", MaxLength: ptr(maxFilter)}}
	paramTarget = Param{Name: "target", Description: "Only entries about this target id.", Schema: &Schema{Type: "string", MaxLength: ptr(maxFilter)}}
	paramFrom   = Param{Name: "from", Description: "Entries at or after this time (RFC 3339).", Schema: &Schema{Type: "string", Format: "date-time"}}
	paramTo     = Param{Name: "to", Description: "Entries before this time (RFC 3339).", Schema: &Schema{Type: "string", Format: "date-time"}}
)

func ptr[T any](v T) *T { return &v }

// query reads the query parameters of a request, refusing repeated and malformed ones.
type query struct {
	v   url.Values
	err error
}

func newQuery(u *url.URL) *query {
	v, err := url.ParseQuery(u.RawQuery)
	q := &query{v: v}
	if err != nil {
		q.err = badRequest("malformed query string")
	}
	return q
}

// str returns the one value of name ("" when absent).
func (q *query) str(name string, max int) string {
	if q.err != nil {
		return ""
	}
	vals := q.v[name]
	if len(vals) == 0 {
		return ""
	}
	if len(vals) > 1 {
		q.err = badRequest("query parameter %s is given more than once", name)
		return ""
	}
	s := vals[0]
	if len(s) > max {
		q.err = badRequest("query parameter %s is longer than %d bytes", name, max)
		return ""
	}
	if !utf8.ValidString(s) {
		q.err = badRequest("query parameter %s is not valid UTF-8", name)
		return ""
	}
	return s
}

func (q *query) list() keygate.ListParams {
	p := keygate.ListParams{Limit: DefaultLimit, Cursor: q.str("cursor", maxCursor)}
	if s := q.str("limit", 32); s != "" {
		n, err := strconv.Atoi(s)
		switch {
		case err != nil && isDigits(s):
			p.Limit = MaxLimit // a number too large for an int is still "above 1000"
		case err != nil || n < 1:
			if q.err == nil {
				q.err = badRequest("query parameter limit must be an integer of at least 1")
			}
		case n > MaxLimit:
			p.Limit = MaxLimit
		default:
			p.Limit = n
		}
	}
	return p
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func (q *query) time(name string) *time.Time {
	s := q.str(name, 64)
	if s == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		if q.err == nil {
			q.err = badRequest("query parameter %s must be an RFC 3339 time like 2026-11-29T10:00:00Z", name)
		}
		return nil
	}
	t = t.UTC()
	return &t
}

func (q *query) bool(name string) bool {
	s := q.str(name, 8)
	switch strings.ToLower(s) {
	case "", "false", "0":
		return false
	case "true", "1":
		return true
	}
	if q.err == nil {
		q.err = badRequest("query parameter %s must be true or false", name)
	}
	return false
}

func (q *query) oneOf(name string, allowed ...string) string {
	s := q.str(name, 32)
	if s == "" {
		return ""
	}
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	if q.err == nil {
		q.err = badRequest("query parameter %s must be one of %s", name, strings.Join(allowed, ", "))
	}
	return ""
}
