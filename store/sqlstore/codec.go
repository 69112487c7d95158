package sqlstore

import (
	"cmp"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate"
)

// Lists answer DefaultLimit items unless asked, and never more than MaxLimit.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

func limitOf(p keygate.ListParams) int {
	switch {
	case p.Limit <= 0:
		return DefaultLimit
	case p.Limit > MaxLimit:
		return MaxLimit
	}
	return p.Limit
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func dayMicros(t time.Time) int64 {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).UnixMicro()
}

func nullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func timePtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func nullString(s *string) sql.NullString {
	if s == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: *s, Valid: true}
}

func stringPtr(v sql.NullString) *string {
	if !v.Valid {
		return nil
	}
	s := v.String
	return &s
}

func nullDuration(d *keygate.Duration) sql.NullInt64 {
	if d == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(*d), Valid: true}
}

func durationPtr(v sql.NullInt64) *keygate.Duration {
	if !v.Valid {
		return nil
	}
	d := keygate.Duration(v.Int64)
	return &d
}

// jsonText encodes v as JSON TEXT. A nil slice or map is "null" and reads back as nil, an empty
// one reads back empty: values round-trip exactly.
func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w", v, err)
	}
	return string(b), nil
}

func fromJSON(s string, v any) error {
	if s == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}

// quotaText stores a quota's limit and period only: Used and ResetsAt are filled in on answers.
func quotaText(q *keygate.Quota) (sql.NullString, error) {
	if q == nil {
		return sql.NullString{}, nil
	}
	s, err := jsonText(keygate.Quota{Limit: q.Limit, Period: q.Period})
	return sql.NullString{String: s, Valid: true}, err
}

func quotaOf(v sql.NullString) (*keygate.Quota, error) {
	if !v.Valid {
		return nil, nil
	}
	q := new(keygate.Quota)
	if err := fromJSON(v.String, q); err != nil {
		return nil, err
	}
	return q, nil
}

// A cursor is base64url of the last row's sort key: "micros:id" for lists by creation time,
// the seq for the audit log. It is opaque to callers.
func timeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(micros(t), 10) + ":" + id))
}

func parseTimeCursor(c string) (at int64, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		var ts string
		var ok bool
		ts, id, ok = strings.Cut(string(b), ":")
		if ok {
			at, err = strconv.ParseInt(ts, 10, 64)
			if err == nil {
				return at, id, nil
			}
		}
	}
	return 0, "", keygate.Errorf(keygate.CodeBadRequest, "invalid cursor")
}

func seqCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seq, 10)))
}

func parseSeqCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if seq, err := strconv.ParseInt(string(b), 10, 64); err == nil && seq > 0 {
			return seq, nil
		}
	}
	return 0, keygate.Errorf(keygate.CodeBadRequest, "invalid cursor")
}

func sortRowKeys[T any](s []T, cmp func(a, b T) int) { slices.SortFunc(s, cmp) }

func cmpInt(a, b int64) int { return cmp.Compare(a, b) }
