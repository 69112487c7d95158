package admin

import (
	"net/http"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

// Route is one endpoint of the admin API: what the router serves and what the OpenAPI document
// says, from the same values.
type Route struct {
	Method  string // "GET", "POST", …
	Pattern string // http.ServeMux pattern path, e.g. "/v1/keys/{id}/rotate"
	// Permission is the root-key permission the route needs; "" marks a public route (no key).
	Permission string
	// Action names the audit action ("key.create") recorded when a caller lacks the permission,
	// on TargetType and the path's {id} or {name}.
	Action     string
	TargetType string

	Summary string
	Tag     string
	Query   []Param
	// Body is a value of the request body's Go type (nil: no body). With BodyOptional the body
	// may be left out.
	Body         any
	BodyOptional bool
	// Status is the success status; Response a value of the answer's Go type, or a *Schema.
	Status   int
	Response any
	// ContentType of the success answer (default application/json).
	ContentType string
	// Errors lists the codes the handler itself can answer besides those every route of its
	// kind can (see errorCodes).
	Errors []string

	Handler http.Handler
}

// Param is a query parameter.
type Param struct {
	Name        string
	Description string
	Schema      *Schema
}

const (
	tagConsumers = "consumers"
	tagPlans     = "plans"
	tagKeys      = "keys"
	tagRootKeys  = "root-keys"
	tagAudit     = "audit"
	tagSystem    = "system"
)

// apiRoutes is the whole /v1 surface of this package.
func (s *server) apiRoutes() []Route {
	ctl := s.ctl
	const (
		notFound = keygate.CodeNotFound
		conflict = keygate.CodeConflict
	)
	listQuery := []Param{paramLimit, paramCursor}
	return []Route{
		// consumers
		{Method: "POST", Pattern: "/v1/consumers", Permission: keygate.PermConsumersWrite, Action: "consumer.create", TargetType: "consumer",
			Tag: tagConsumers, Summary: "Create a consumer", Body: control.ConsumerCreate{}, Status: 201, Response: keygate.Consumer{},
			Errors: []string{notFound}, Handler: handleConsumerCreate(ctl)},
		{Method: "GET", Pattern: "/v1/consumers", Permission: keygate.PermConsumersRead, Action: "consumer.list", TargetType: "consumer",
			Tag: tagConsumers, Summary: "List consumers, newest first", Query: listQuery, Status: 200, Response: list[keygate.Consumer]{},
			Handler: handleConsumerList(ctl)},
		{Method: "GET", Pattern: "/v1/consumers/{id}", Permission: keygate.PermConsumersRead, Action: "consumer.read", TargetType: "consumer",
			Tag: tagConsumers, Summary: "Get a consumer", Status: 200, Response: keygate.Consumer{},
			Handler: handleConsumerGet(ctl)},
		{Method: "PATCH", Pattern: "/v1/consumers/{id}", Permission: keygate.PermConsumersWrite, Action: "consumer.update", TargetType: "consumer",
			Tag: tagConsumers, Summary: "Change a consumer (absent fields stay, null clears)", Body: control.ConsumerPatch{}, Status: 200, Response: keygate.Consumer{},
			Handler: handleConsumerUpdate(ctl)},
		{Method: "DELETE", Pattern: "/v1/consumers/{id}", Permission: keygate.PermConsumersWrite, Action: "consumer.delete", TargetType: "consumer",
			Tag: tagConsumers, Summary: "Delete a consumer and revoke its keys; answers the deleted consumer (purge=true also erases name and email)",
			Query: []Param{paramPurge}, Status: 200, Response: keygate.Consumer{},
			Handler: handleConsumerDelete(ctl)},

		// plans
		{Method: "POST", Pattern: "/v1/plans", Permission: keygate.PermPlansWrite, Action: "plan.create", TargetType: "plan",
			Tag: tagPlans, Summary: "Create a plan", Body: control.PlanCreate{}, Status: 201, Response: keygate.Plan{},
			Errors: []string{conflict}, Handler: handlePlanCreate(ctl)},
		{Method: "GET", Pattern: "/v1/plans", Permission: keygate.PermPlansRead, Action: "plan.list", TargetType: "plan",
			Tag: tagPlans, Summary: "List plans", Query: listQuery, Status: 200, Response: list[keygate.Plan]{},
			Handler: handlePlanList(ctl)},
		{Method: "GET", Pattern: "/v1/plans/{name}", Permission: keygate.PermPlansRead, Action: "plan.read", TargetType: "plan",
			Tag: tagPlans, Summary: "Get a plan", Status: 200, Response: keygate.Plan{},
			Handler: handlePlanGet(ctl)},
		{Method: "PATCH", Pattern: "/v1/plans/{name}", Permission: keygate.PermPlansWrite, Action: "plan.update", TargetType: "plan",
			Tag: tagPlans, Summary: "Change a plan (config-managed plans are 409)", Body: control.PlanPatch{}, Status: 200, Response: keygate.Plan{},
			Errors: []string{conflict}, Handler: handlePlanUpdate(ctl)},
		{Method: "DELETE", Pattern: "/v1/plans/{name}", Permission: keygate.PermPlansWrite, Action: "plan.delete", TargetType: "plan",
			Tag: tagPlans, Summary: "Delete an unused plan; answers the deleted plan (in use or config-managed: 409)", Status: 200, Response: keygate.Plan{},
			Errors: []string{conflict}, Handler: handlePlanDelete(ctl)},

		// keys; the fixed paths /v1/keys/leaked and /v1/keys/verify are POST only, so they never
		// meet GET/PATCH /v1/keys/{id}.
		{Method: "POST", Pattern: "/v1/keys", Permission: keygate.PermKeysWrite, Action: "key.create", TargetType: "key",
			Tag: tagKeys, Summary: "Create a key (the plaintext `key` is in this answer only)", Body: control.KeyCreate{}, Status: 201, Response: schemaKeyWithSecret,
			Errors: []string{notFound}, Handler: handleKeyCreate(ctl)},
		{Method: "GET", Pattern: "/v1/keys", Permission: keygate.PermKeysRead, Action: "key.list", TargetType: "key",
			Tag: tagKeys, Summary: "List keys, newest first", Query: []Param{paramConsumerID, paramStatus, paramLimit, paramCursor}, Status: 200, Response: list[keygate.Key]{},
			Handler: handleKeyList(ctl, s.now)},
		{Method: "GET", Pattern: "/v1/keys/{id}", Permission: keygate.PermKeysRead, Action: "key.read", TargetType: "key",
			Tag: tagKeys, Summary: "Get a key", Status: 200, Response: keygate.Key{},
			Handler: handleKeyGet(ctl)},
		{Method: "PATCH", Pattern: "/v1/keys/{id}", Permission: keygate.PermKeysWrite, Action: "key.update", TargetType: "key",
			Tag: tagKeys, Summary: "Change a key (absent fields stay, null clears; status active or disabled)", Body: control.KeyPatch{}, Status: 200, Response: keygate.Key{},
			Errors: []string{conflict}, Handler: handleKeyUpdate(ctl)},
		{Method: "POST", Pattern: "/v1/keys/{id}/revoke", Permission: keygate.PermKeysWrite, Action: "key.revoke", TargetType: "key",
			Tag: tagKeys, Summary: "Revoke a key at once", Body: revokeRequest{}, BodyOptional: true, Status: 200, Response: keygate.Key{},
			Errors: []string{conflict}, Handler: handleKeyRevoke(ctl)},
		{Method: "POST", Pattern: "/v1/keys/{id}/rotate", Permission: keygate.PermKeysWrite, Action: "key.rotate", TargetType: "key",
			Tag: tagKeys, Summary: "Rotate a key: a successor with the same settings; the old key expires after grace_period (default 24h)",
			Body: rotateRequest{}, BodyOptional: true, Status: 201, Response: schemaKeyWithSecret,
			Errors: []string{conflict}, Handler: handleKeyRotate(ctl)},
		{Method: "POST", Pattern: "/v1/keys/{id}/unthrottle", Permission: keygate.PermKeysWrite, Action: "key.unthrottle", TargetType: "key",
			Tag: tagKeys, Summary: "Lift an anomaly throttle", Status: 200, Response: keygate.Key{},
			Errors: []string{conflict}, Handler: handleKeyUnthrottle(ctl)},
		{Method: "POST", Pattern: "/v1/keys/leaked", Permission: keygate.PermKeysWrite, Action: "key.leaked", TargetType: "key",
			Tag: tagKeys, Summary: "Revoke the keys among these plaintexts as leaked", Body: leakedRequest{}, Status: 200, Response: control.LeakedResult{},
			Handler: handleKeysLeaked(ctl)},
		{Method: "POST", Pattern: "/v1/keys/verify", Permission: keygate.PermKeysVerify, Action: "key.verify", TargetType: "key",
			Tag: tagKeys, Summary: "Verify a key for a service outside the gateway (200 for valid and invalid keys)", Body: verifyRequest{}, Status: 200, Response: verifyResponse{},
			Handler: handleKeyVerify(s.verifier, s.now)},

		// root keys
		{Method: "POST", Pattern: "/v1/root-keys", Permission: keygate.PermRootKeysWrite, Action: "root_key.create", TargetType: "root_key",
			Tag: tagRootKeys, Summary: "Create a root key (with permissions the caller holds; the plaintext `key` is in this answer only)",
			Body: control.RootKeyCreate{}, Status: 201, Response: schemaRootKeyWithSecret,
			Handler: handleRootKeyCreate(ctl)},
		{Method: "GET", Pattern: "/v1/root-keys", Permission: keygate.PermRootKeysWrite, Action: "root_key.list", TargetType: "root_key",
			Tag: tagRootKeys, Summary: "List root keys", Query: listQuery, Status: 200, Response: list[keygate.RootKey]{},
			Handler: handleRootKeyList(ctl)},
		{Method: "POST", Pattern: "/v1/root-keys/{id}/revoke", Permission: keygate.PermRootKeysWrite, Action: "root_key.revoke", TargetType: "root_key",
			Tag: tagRootKeys, Summary: "Revoke a root key", Status: 200, Response: keygate.RootKey{},
			Errors: []string{conflict}, Handler: handleRootKeyRevoke(ctl)},

		// audit
		{Method: "GET", Pattern: "/v1/audit", Permission: keygate.PermAuditRead, Action: "audit.list", TargetType: "audit",
			Tag: tagAudit, Summary: "List audit entries, newest first",
			Query:  []Param{paramActor, paramAction, paramTarget, paramFrom, paramTo, paramLimit, paramCursor},
			Status: 200, Response: list[keygate.AuditEntry]{},
			Handler: handleAuditList(ctl)},
		{Method: "GET", Pattern: "/v1/audit/verify", Permission: keygate.PermAuditRead, Action: "audit.verify", TargetType: "audit",
			Tag: tagAudit, Summary: "Check the audit chain", Status: 200, Response: control.AuditVerification{},
			Handler: handleAuditVerify(ctl)},
		{Method: "GET", Pattern: "/v1/audit/head", Permission: keygate.PermAuditRead, Action: "audit.head", TargetType: "audit",
			Tag: tagAudit, Summary: "The newest audit entry's seq and hash", Status: 200, Response: control.AuditHead{},
			Handler: handleAuditHead(ctl)},
	}
}

// publicRoutes need no key (SPEC §3: the admin listener is private by default).
func (s *server) publicRoutes() []Route {
	return []Route{
		{Method: "GET", Pattern: "/healthz", Tag: tagSystem, Summary: "Liveness", Status: 200, Response: health{},
			Handler: handleHealthz()},
		{Method: "GET", Pattern: "/readyz", Tag: tagSystem, Summary: "Readiness: 503 while a dependency is down", Status: 200, Response: health{},
			Errors: []string{keygate.CodeUnavailable}, Handler: handleReadyz(s.ready)},
		{Method: "GET", Pattern: "/openapi.json", Tag: tagSystem, Summary: "This OpenAPI document", Status: 200, Response: &Schema{Type: "object"},
			Handler: handleOpenAPI(s)},
		{Method: "GET", Pattern: "/docs", Tag: tagSystem, Summary: "The OpenAPI document rendered for people", Status: 200,
			ContentType: "text/html; charset=utf-8", Response: &Schema{Type: "string"}, Handler: handleDocs()},
		{Method: "GET", Pattern: "/metrics", Tag: tagSystem, Summary: "Prometheus metrics", Status: 200,
			ContentType: "text/plain; version=0.0.4", Response: &Schema{Type: "string"},
			Errors: []string{keygate.CodeNotFound}, Handler: handleMetrics(s.metrics)},
	}
}
