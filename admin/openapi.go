package admin

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate"
)

// Schema is the subset of JSON Schema (2020-12, as OpenAPI 3.1 uses it) that the document needs.
type Schema struct {
	Ref                  string             `json:"$ref,omitempty"`
	Type                 any                `json:"type,omitempty"` // a type name or a list of them
	Format               string             `json:"format,omitempty"`
	Description          string             `json:"description,omitempty"`
	Enum                 []any              `json:"enum,omitempty"`
	Pattern              string             `json:"pattern,omitempty"`
	MinLength            *int               `json:"minLength,omitempty"`
	MaxLength            *int               `json:"maxLength,omitempty"`
	Minimum              *float64           `json:"minimum,omitempty"`
	Maximum              *float64           `json:"maximum,omitempty"`
	MinItems             *int               `json:"minItems,omitempty"`
	MaxItems             *int               `json:"maxItems,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	Required             []string           `json:"required,omitempty"`
	AdditionalProperties any                `json:"additionalProperties,omitempty"` // false or a *Schema
	AnyOf                []*Schema          `json:"anyOf,omitempty"`
}

const componentsPrefix = "#/components/schemas/"

// Patterns shared by the schemas and checked the same way by the server.
const (
	patternText     = `^[^\x00-\x1F\x7F]*$`
	patternSlug     = `^[a-z0-9_-]{1,64}$`
	patternPlanRef  = `^([a-z0-9_-]{1,64})?$`
	patternScope    = `^([a-z0-9_-]+|\*):([a-z0-9_-]+|\*)$`
	patternScopeReq = `^[a-z0-9_-]+:[a-z0-9_-]+$`
	patternEmail    = `^([^ <>\x00-\x1F\x7F]*@[^ <>\x00-\x1F\x7F]*)?$`
	patternDuration = `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d))+)$`
)

var (
	schemaKeyWithSecret     = &Schema{Ref: componentsPrefix + "KeyWithSecret"}
	schemaRootKeyWithSecret = &Schema{Ref: componentsPrefix + "RootKeyWithSecret"}
)

func text(max int) func(*Schema) {
	return func(s *Schema) { s.MaxLength, s.Pattern = ptr(max), patternText }
}

func items(f func(*Schema)) func(*Schema) {
	return func(s *Schema) {
		if s.Items != nil {
			f(s.Items)
		}
	}
}

func all(fs ...func(*Schema)) func(*Schema) {
	return func(s *Schema) {
		for _, f := range fs {
			f(s)
		}
	}
}

func maxItems(n int) func(*Schema) { return func(s *Schema) { s.MaxItems = ptr(n) } }

func describe(d string) func(*Schema) { return func(s *Schema) { s.Description = d } }

var (
	ruleName      = all(text(keygate.MaxNameLen), describe("At most 200 bytes, no control characters."))
	ruleEmail     = func(s *Schema) { s.MaxLength, s.Pattern = ptr(keygate.MaxEmailLen), patternEmail }
	rulePlanRef   = all(func(s *Schema) { s.Pattern = patternPlanRef }, describe("A plan name; empty or null: none."))
	ruleScopes    = all(maxItems(keygate.MaxScopes), items(func(s *Schema) { s.Pattern, s.MaxLength = patternScope, ptr(keygate.MaxScopeLen) }))
	ruleWindows   = maxItems(keygate.MaxWindows)
	ruleIPAllow   = all(maxItems(keygate.MaxAllowEntries), items(func(s *Schema) { s.Format = "ip-or-cidr" }), describe("IPv4 or IPv6 addresses or CIDRs."))
	ruleReferrers = all(maxItems(keygate.MaxAllowEntries), items(func(s *Schema) { s.Format, s.MaxLength = "origin", ptr(2048) }),
		describe("Origins like https://app.example.com, optionally https://*.example.com."))
	ruleMetadata = describe("Free-form JSON object of at most 8 KiB.")
	ruleMaxAge   = describe("Advisory rotation age, e.g. 90d.")
)

// fieldRules constrain the reflected schemas of request fields to what the server accepts, keyed
// by "GoTypeName.json_name". They apply inside null-wrappers of optional fields.
var fieldRules = map[string]func(*Schema){
	"Window.name":     func(s *Schema) { s.Pattern = patternSlug },
	"Window.limit":    func(s *Schema) { s.Minimum, s.Maximum = ptr(1.0), ptr(1e12) },
	"Quota.limit":     func(s *Schema) { s.Minimum, s.Maximum = ptr(1.0), ptr(1e15) },
	"Quota.period":    func(s *Schema) { s.Enum = []any{keygate.PeriodDay, keygate.PeriodMonth} },
	"Quota.used":      describe("Used in the current period (answers only; ignored in requests)."),
	"Quota.resets_at": describe("End of the current period (answers only; ignored in requests)."),

	"ConsumerCreate.name":        ruleName,
	"ConsumerCreate.email":       ruleEmail,
	"ConsumerCreate.plan":        rulePlanRef,
	"ConsumerCreate.rate_limits": ruleWindows,
	"ConsumerCreate.metadata":    ruleMetadata,
	"ConsumerPatch.name":         ruleName,
	"ConsumerPatch.email":        ruleEmail,
	"ConsumerPatch.plan":         rulePlanRef,
	"ConsumerPatch.rate_limits":  ruleWindows,
	"ConsumerPatch.metadata":     ruleMetadata,

	"PlanCreate.name":           func(s *Schema) { s.Pattern = patternSlug },
	"PlanCreate.rate_limits":    ruleWindows,
	"PlanCreate.scopes_allowed": all(ruleScopes, describe("A ceiling for the scopes of keys on this plan; null: none.")),
	"PlanCreate.max_age":        ruleMaxAge,
	"PlanPatch.rate_limits":     ruleWindows,
	"PlanPatch.scopes_allowed":  ruleScopes,
	"PlanPatch.max_age":         ruleMaxAge,

	"KeyCreate.consumer_id":    func(s *Schema) { s.MinLength, s.MaxLength = ptr(1), ptr(maxFilter) },
	"KeyCreate.name":           ruleName,
	"KeyCreate.kind":           func(s *Schema) { s.Enum = []any{keygate.KindSecret, keygate.KindPublishable} },
	"KeyCreate.env":            func(s *Schema) { s.Enum = []any{keygate.EnvLive, keygate.EnvTest} },
	"KeyCreate.scopes":         ruleScopes,
	"KeyCreate.plan":           rulePlanRef,
	"KeyCreate.rate_limits":    ruleWindows,
	"KeyCreate.ip_allow":       ruleIPAllow,
	"KeyCreate.referrer_allow": ruleReferrers,
	"KeyCreate.ttl":            describe("Lifetime of a temporary key, e.g. 15m: sets expires_at."),
	"KeyCreate.max_age":        ruleMaxAge,
	"KeyCreate.metadata":       ruleMetadata,
	"KeyPatch.name":            ruleName,
	"KeyPatch.scopes":          ruleScopes,
	"KeyPatch.plan":            rulePlanRef,
	"KeyPatch.rate_limits":     ruleWindows,
	"KeyPatch.ip_allow":        ruleIPAllow,
	"KeyPatch.referrer_allow":  ruleReferrers,
	"KeyPatch.max_age":         ruleMaxAge,
	"KeyPatch.metadata":        ruleMetadata,
	"KeyPatch.status":          func(s *Schema) { s.Type, s.Enum = "string", []any{keygate.StateActive, keygate.StateDisabled} },

	"RootKeyCreate.name": ruleName,
	"RootKeyCreate.permissions": all(func(s *Schema) { s.MinItems = ptr(1) }, items(func(s *Schema) {
		s.Enum = make([]any, len(keygate.Permissions))
		for i, p := range keygate.Permissions {
			s.Enum[i] = p
		}
	})),

	"revokeRequest.reason":       text(keygate.MaxReasonLen),
	"rotateRequest.grace_period": describe("How long the old key keeps working (default 24h, at most 366d; 0s: it expires now)."),
	"leakedRequest.keys": all(func(s *Schema) { s.MinItems, s.MaxItems = ptr(1), ptr(maxLeaked) },
		items(func(s *Schema) { s.MinLength, s.MaxLength = ptr(1), ptr(maxKeyLen) })),
	"verifyRequest.key":      func(s *Schema) { s.MinLength, s.MaxLength = ptr(1), ptr(maxKeyLen) },
	"verifyRequest.scopes":   all(maxItems(keygate.MaxScopes), items(func(s *Schema) { s.Pattern, s.MaxLength = patternScopeReq, ptr(keygate.MaxScopeLen) })),
	"verifyRequest.ip":       func(s *Schema) { s.Format = "ip" },
	"verifyRequest.referrer": text(maxReferrerLen),
	"verifyRequest.cost":     all(func(s *Schema) { s.Minimum, s.Maximum = ptr(0.0), ptr(float64(maxVerifyCost)) }, describe("Default 1; 0 answers as 1 would without counting.")),

	"Key.plan":            func(s *Schema) { s.Type = []any{"string", "null"} },
	"Plan.scopes_allowed": all(func(s *Schema) { s.Type = []any{"array", "null"} }, describe("null: no ceiling.")),
	"Consumer.plan":       func(s *Schema) { s.Type = []any{"string", "null"} },
}

// notNull lists optional members for which null is refused (they cannot be cleared).
var notNull = map[string]bool{"KeyPatch.status": true}

// requiredFields lists the members a request body must have, by Go type name.
var requiredFields = map[string][]string{
	"Window":        {"name", "limit", "period"},
	"Quota":         {"limit", "period"},
	"KeyCreate":     {"consumer_id"},
	"PlanCreate":    {"name"},
	"RootKeyCreate": {"permissions"},
	"leakedRequest": {"keys"},
	"verifyRequest": {"key"},
}

// componentNames renames Go types in the document.
var componentNames = map[string]string{
	"revokeRequest":   "KeyRevoke",
	"rotateRequest":   "KeyRotate",
	"leakedRequest":   "KeysLeaked",
	"verifyRequest":   "KeyVerify",
	"verifyResponse":  "KeyVerification",
	"verifyRateLimit": "KeyVerificationRateLimit",
	"verifyQuota":     "KeyVerificationQuota",
	"health":          "Health",
}

type schemaGen struct {
	components map[string]*Schema
}

var (
	typeDuration = reflect.TypeOf(keygate.Duration(0))
	typeTime     = reflect.TypeOf(time.Time{})
	typeRaw      = reflect.TypeOf(json.RawMessage(nil))
)

func (g *schemaGen) of(t reflect.Type) *Schema {
	switch {
	case t == typeDuration:
		return &Schema{Type: "string", Pattern: patternDuration, Format: "duration"}
	case t == typeTime:
		return &Schema{Type: "string", Format: "date-time"}
	case t == typeRaw:
		return &Schema{}
	case isOpt(t):
		f, _ := t.FieldByName("Value")
		return nullable(g.of(f.Type))
	}
	switch t.Kind() {
	case reflect.Pointer:
		return nullable(g.of(t.Elem()))
	case reflect.String:
		return &Schema{Type: "string"}
	case reflect.Bool:
		return &Schema{Type: "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &Schema{Type: "integer"}
	case reflect.Float32, reflect.Float64:
		return &Schema{Type: "number"}
	case reflect.Slice, reflect.Array:
		return &Schema{Type: "array", Items: g.of(t.Elem())}
	case reflect.Map:
		if t.Elem().Kind() == reflect.Interface {
			return &Schema{Type: "object"}
		}
		return &Schema{Type: "object", AdditionalProperties: g.of(t.Elem())}
	case reflect.Interface:
		return &Schema{}
	case reflect.Struct:
		name := t.Name()
		if name == "" || strings.Contains(name, "[") {
			return g.object(t)
		}
		if n, ok := componentNames[name]; ok {
			name = n
		}
		if _, ok := g.components[name]; !ok {
			g.components[name] = &Schema{} // placeholder against recursion
			*g.components[name] = *g.object(t)
		}
		return &Schema{Ref: componentsPrefix + name}
	}
	return &Schema{}
}

func isOpt(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && strings.HasPrefix(t.Name(), "Opt[") && t.PkgPath() == "github.com/keygate/keygate"
}

// object describes a struct's JSON members; unknown members are refused, as the decoder does.
func (g *schemaGen) object(t reflect.Type) *Schema {
	s := &Schema{Type: "object", Properties: map[string]*Schema{}, AdditionalProperties: false}
	g.fields(t, s)
	s.Required = requiredFields[t.Name()]
	return s
}

func (g *schemaGen) fields(t reflect.Type, s *Schema) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			g.fields(f.Type, s)
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.Properties[name] = g.field(t.Name()+"."+name, f.Type)
	}
}

// field is the schema of one member with its rule applied inside any null-wrapper.
func (g *schemaGen) field(rule string, t reflect.Type) *Schema {
	apply := fieldRules[rule]
	wrapped := false
	for {
		if isOpt(t) {
			f, _ := t.FieldByName("Value")
			t, wrapped = f.Type, true
			continue
		}
		if t.Kind() == reflect.Pointer && t != typeTime {
			t, wrapped = t.Elem(), true
			continue
		}
		break
	}
	s := g.of(t)
	if apply != nil {
		if s.Ref != "" {
			s = &Schema{AnyOf: []*Schema{s}}
		}
		apply(s)
	}
	if wrapped && !notNull[rule] {
		s = nullable(s)
	}
	return s
}

func nullable(s *Schema) *Schema {
	if s.Ref != "" || s.AnyOf != nil || s.Type == nil {
		if s.Ref == "" && s.Type == nil && s.AnyOf == nil {
			return s // the empty schema admits null already
		}
		return &Schema{AnyOf: []*Schema{s, {Type: "null"}}, Description: s.Description}
	}
	c := *s
	switch t := s.Type.(type) {
	case string:
		c.Type = []any{t, "null"}
	case []any:
		c.Type = append(append([]any{}, t...), "null")
	}
	if c.Enum != nil {
		c.Enum = append(append([]any{}, c.Enum...), nil)
	}
	return &c
}

// errorCodes are the codes a route can answer besides its success.
func errorCodes(rt Route) []string {
	set := map[string]bool{}
	if rt.Permission != "" {
		for _, c := range []string{keygate.CodeUnauthorized, keygate.CodeForbidden, keygate.CodePayloadTooLarge,
			keygate.CodeInternal, keygate.CodeUnavailable} {
			set[c] = true
		}
		if rt.Body != nil || len(rt.Query) > 0 {
			set[keygate.CodeBadRequest] = true
		}
		if rt.Method == http.MethodPost {
			set[keygate.CodeBadRequest] = true // Idempotency-Key
			set[keygate.CodeConflict] = true
		}
		if strings.Contains(rt.Pattern, "{") {
			set[keygate.CodeNotFound] = true
		}
	}
	for _, c := range rt.Errors {
		set[c] = true
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

var errorDescriptions = map[string]string{
	keygate.CodeBadRequest:      "Malformed or invalid request (BAD_REQUEST).",
	keygate.CodeUnauthorized:    "Missing, unknown or revoked root key (UNAUTHORIZED).",
	keygate.CodeForbidden:       "The root key lacks the permission (FORBIDDEN).",
	keygate.CodeNotFound:        "No such object (NOT_FOUND).",
	keygate.CodeConflict:        "State conflict, or an Idempotency-Key reused for a different request (CONFLICT).",
	keygate.CodePayloadTooLarge: "Request body over the limit (PAYLOAD_TOO_LARGE).",
	keygate.CodeUnavailable:     "A dependency is down (UNAVAILABLE).",
	keygate.CodeInternal:        "Internal error (INTERNAL).",
}

// openAPIDocument builds the OpenAPI 3.1 document of routes.
func openAPIDocument(routes []Route) map[string]any {
	g := &schemaGen{components: map[string]*Schema{}}
	g.of(reflect.TypeOf(Problem{}))
	key := g.components[strings.TrimPrefix(g.of(reflect.TypeOf(keygate.Key{})).Ref, componentsPrefix)]
	root := g.components[strings.TrimPrefix(g.of(reflect.TypeOf(keygate.RootKey{})).Ref, componentsPrefix)]
	g.components["KeyWithSecret"] = withSecretSchema(key, "The new key's plaintext, shown only in this answer.")
	g.components["RootKeyWithSecret"] = withSecretSchema(root, "The new root key's plaintext, shown only in this answer.")

	paths := map[string]map[string]any{}
	for _, rt := range routes {
		op := map[string]any{
			"operationId": operationID(rt),
			"summary":     rt.Summary,
			"tags":        []string{rt.Tag},
		}
		if rt.Permission != "" {
			op["security"] = []map[string][]string{{"rootKey": {rt.Permission}}}
			op["x-permission"] = rt.Permission
		} else {
			op["security"] = []map[string][]string{}
		}
		var params []map[string]any
		for _, name := range pathParams(rt.Pattern) {
			params = append(params, map[string]any{"name": name, "in": "path", "required": true,
				"schema": &Schema{Type: "string", MinLength: ptr(1)}})
		}
		for _, p := range rt.Query {
			params = append(params, map[string]any{"name": p.Name, "in": "query", "required": false,
				"description": p.Description, "schema": p.Schema})
		}
		if rt.Permission != "" && rt.Method == http.MethodPost {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": false,
				"description": "Repeats within 24 h with the same key, path and body get the first answer again (without plaintext secrets, with \"idempotent_replay\": true). A different request with the same key is 409.",
				"schema":      &Schema{Type: "string", MinLength: ptr(1), MaxLength: ptr(maxIdempotencyKey), Pattern: `^[\x20-\x7E]+$`}})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.Body != nil {
			op["requestBody"] = map[string]any{
				"required": !rt.BodyOptional,
				"content":  map[string]any{"application/json": map[string]any{"schema": g.value(rt.Body)}},
			}
		}
		responses := map[string]any{}
		if rt.Permission != "" && rt.Method == http.MethodPost {
			g.markReplayable(g.value(rt.Response))
		}
		ct := rt.ContentType
		if ct == "" {
			ct = "application/json"
		}
		responses[strconv.Itoa(rt.Status)] = map[string]any{
			"description": http.StatusText(rt.Status),
			"content":     map[string]any{ct: map[string]any{"schema": g.value(rt.Response)}},
		}
		byStatus := map[int][]string{}
		for _, c := range errorCodes(rt) {
			byStatus[statusOf(c)] = append(byStatus[statusOf(c)], errorDescriptions[c])
		}
		for st, descs := range byStatus {
			responses[strconv.Itoa(st)] = map[string]any{
				"description": strings.Join(descs, " "),
				"content": map[string]any{"application/problem+json": map[string]any{
					"schema": &Schema{Ref: componentsPrefix + "Problem"}}},
			}
		}
		op["responses"] = responses
		if paths[rt.Pattern] == nil {
			paths[rt.Pattern] = map[string]any{}
		}
		paths[rt.Pattern][strings.ToLower(rt.Method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":   "keygate admin API",
			"version": "1",
			"description": "The admin API of keygate: consumers, plans, keys, root keys and the audit log. " +
				"Authenticate with Authorization: Bearer <root key>; each operation names the permission it needs. " +
				"Errors are RFC 9457 application/problem+json with a `code`. Request bodies must be application/json " +
				"(another Content-Type is 400). Lists answer {\"data\": [...], \"next_cursor\": ...}. DELETE answers the deleted object.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"rootKey": map[string]any{"type": "http", "scheme": "bearer",
					"description": "A root key (kg_root_…). Its permissions are the scopes each operation lists."},
			},
		},
	}
}

func (g *schemaGen) value(v any) *Schema {
	if s, ok := v.(*Schema); ok {
		return s
	}
	return g.of(reflect.TypeOf(v))
}

// markReplayable adds the member "idempotent_replay" to the object answered by a POST, which an
// idempotent replay carries.
func (g *schemaGen) markReplayable(s *Schema) {
	if s.Ref == "" {
		return
	}
	c := g.components[strings.TrimPrefix(s.Ref, componentsPrefix)]
	if c == nil || c.Properties == nil {
		return
	}
	c.Properties["idempotent_replay"] = replaySchema
}

var replaySchema = &Schema{Type: "boolean", Description: "Present (true) when this answer is the replay of an earlier request with the same Idempotency-Key."}

func withSecretSchema(base *Schema, desc string) *Schema {
	c := *base
	c.Properties = make(map[string]*Schema, len(base.Properties)+2)
	for k, v := range base.Properties {
		c.Properties[k] = v
	}
	c.Properties["key"] = &Schema{Type: "string", Description: desc + " Left out of idempotent replays."}
	c.Properties["idempotent_replay"] = replaySchema
	return &c
}

func pathParams(pattern string) []string {
	var out []string
	for _, seg := range strings.Split(pattern, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			out = append(out, strings.TrimSuffix(strings.Trim(seg, "{}"), "..."))
		}
	}
	return out
}

func operationID(rt Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.Method))
	for _, seg := range strings.Split(rt.Pattern, "/") {
		seg = strings.Trim(seg, "{}.")
		for _, part := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '_' || r == '.' }) {
			if part == "" || part == "v1" {
				continue
			}
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// handleOpenAPI serves the document, built once from the route table.
func handleOpenAPI(s *server) http.Handler {
	var once sync.Once
	var doc []byte
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			var err error
			doc, err = json.MarshalIndent(openAPIDocument(s.routes), "", "  ")
			if err != nil {
				panic(err)
			}
		})
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
}

//go:embed docs.html
var docsHTML []byte

func handleDocs() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Write(docsHTML)
	})
}
