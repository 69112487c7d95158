package admin

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate"
)

// validator checks JSON values against the subset of JSON Schema that openapi.go emits: $ref,
// type (one or a list), enum, properties, required, additionalProperties, items, anyOf, the
// length, item-count and range bounds, pattern, and the formats date-time, ip, ip-or-cidr and
// origin. It works on the document as served (decoded from JSON), not on Go values.
type validator struct {
	schemas map[string]any
}

func newValidator(doc map[string]any) *validator {
	comps := doc["components"].(map[string]any)["schemas"].(map[string]any)
	return &validator{schemas: comps}
}

// validate returns nil when v (decoded with UseNumber) is valid by s.
func (vd *validator) validate(s any, v any, path string) error {
	sm, ok := s.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: schema is not an object", path)
	}
	if ref, ok := sm["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, componentsPrefix)
		target, ok := vd.schemas[name]
		if !ok {
			return fmt.Errorf("%s: unknown $ref %s", path, ref)
		}
		return vd.validate(target, v, path)
	}
	if anyOf, ok := sm["anyOf"].([]any); ok {
		var errs []string
		matched := false
		for _, sub := range anyOf {
			if err := vd.validate(sub, v, path); err == nil {
				matched = true
				break
			} else {
				errs = append(errs, err.Error())
			}
		}
		if !matched {
			return fmt.Errorf("%s: matches no alternative (%s)", path, strings.Join(errs, "; "))
		}
	}
	if t, ok := sm["type"]; ok && !typeMatches(t, v) {
		return fmt.Errorf("%s: %s is not of type %v", path, jsonKind(v), t)
	}
	if enum, ok := sm["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if fmt.Sprint(e) == fmt.Sprint(v) && (e == nil) == (v == nil) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s: %v is not one of %v", path, v, enum)
		}
	}
	switch x := v.(type) {
	case string:
		n := utf8.RuneCountInString(x)
		if m, ok := num(sm["minLength"]); ok && float64(n) < m {
			return fmt.Errorf("%s: shorter than %v", path, m)
		}
		if m, ok := num(sm["maxLength"]); ok && float64(n) > m {
			return fmt.Errorf("%s: longer than %v", path, m)
		}
		if p, ok := sm["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(x) {
			return fmt.Errorf("%s: %q does not match %s", path, x, p)
		}
		if f, ok := sm["format"].(string); ok {
			if err := checkFormat(f, x); err != nil {
				return fmt.Errorf("%s: %v", path, err)
			}
		}
	case json.Number:
		f, _ := x.Float64()
		if m, ok := num(sm["minimum"]); ok && f < m {
			return fmt.Errorf("%s: %v is below %v", path, x, m)
		}
		if m, ok := num(sm["maximum"]); ok && f > m {
			return fmt.Errorf("%s: %v is above %v", path, x, m)
		}
	case []any:
		if m, ok := num(sm["minItems"]); ok && float64(len(x)) < m {
			return fmt.Errorf("%s: fewer than %v items", path, m)
		}
		if m, ok := num(sm["maxItems"]); ok && float64(len(x)) > m {
			return fmt.Errorf("%s: more than %v items", path, m)
		}
		if items, ok := sm["items"]; ok {
			for i, it := range x {
				if err := vd.validate(items, it, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	case map[string]any:
		props, _ := sm["properties"].(map[string]any)
		if req, ok := sm["required"].([]any); ok {
			for _, r := range req {
				if _, ok := x[r.(string)]; !ok {
					return fmt.Errorf("%s: %s is required", path, r)
				}
			}
		}
		for k, val := range x {
			ps, ok := props[k]
			if !ok {
				switch ap := sm["additionalProperties"].(type) {
				case bool:
					if !ap {
						return fmt.Errorf("%s: unknown member %q", path, k)
					}
				case map[string]any:
					if err := vd.validate(ap, val, path+"."+k); err != nil {
						return err
					}
				}
				continue
			}
			if err := vd.validate(ps, val, path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

func num(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if isInteger(x) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func isInteger(n json.Number) bool {
	if _, err := n.Int64(); err == nil {
		return true
	}
	f, err := n.Float64()
	return err == nil && f == math.Trunc(f) && !strings.ContainsAny(string(n), ".eE")
}

func typeMatches(t any, v any) bool {
	k := jsonKind(v)
	one := func(name string) bool {
		return name == k || name == "number" && k == "integer"
	}
	switch t := t.(type) {
	case string:
		return one(t)
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok && one(s) {
				return true
			}
		}
	}
	return false
}

func checkFormat(f, s string) error {
	switch f {
	case "date-time":
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return fmt.Errorf("%q is not a date-time", s)
		}
	case "ip":
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return fmt.Errorf("%q is not an IP address", s)
		}
	case "ip-or-cidr":
		if _, err := keygate.ParsePrefix(s); err != nil {
			return fmt.Errorf("%q is not an IP address or CIDR", s)
		}
	case "origin":
		if err := keygate.ValidateReferrers("origin", []string{s}); err != nil {
			return err
		}
	}
	return nil
}
