package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/control"
)

// Client is a typed client of the admin API. Errors answered by the server are *keygate.Error
// with the problem's code and detail; a server that cannot be reached is CodeUnavailable.
type Client struct {
	// BaseURL of the admin listener, e.g. "http://127.0.0.1:8081".
	BaseURL string
	// Token is the root key sent as Authorization: Bearer.
	Token string
	// HTTP is the client used (default: one with a 30 s timeout).
	HTTP *http.Client
}

// DefaultClientTimeout bounds each call of a Client without its own http.Client.
const DefaultClientTimeout = 30 * time.Second

// NewClient returns a Client of the admin API at baseURL.
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token,
		HTTP: &http.Client{Timeout: DefaultClientTimeout}}
}

// KeyWithSecret is a key object with the plaintext of a new key (creation, rotation).
type KeyWithSecret struct {
	keygate.Key
	// Plaintext is the key itself; "" in an idempotent replay.
	Plaintext        string `json:"key"`
	IdempotentReplay bool   `json:"idempotent_replay"`
}

// MarshalJSON writes the key object with "key" (keygate.Key's own MarshalJSON would drop it).
func (k KeyWithSecret) MarshalJSON() ([]byte, error) {
	return marshalWithSecret(k.Key, k.Plaintext, k.IdempotentReplay)
}

// RootKeyWithSecret is a root key object with the plaintext of a new root key.
type RootKeyWithSecret struct {
	keygate.RootKey
	Plaintext        string `json:"key"`
	IdempotentReplay bool   `json:"idempotent_replay"`
}

// MarshalJSON writes the root key object with "key".
func (k RootKeyWithSecret) MarshalJSON() ([]byte, error) {
	return marshalWithSecret(k.RootKey, k.Plaintext, k.IdempotentReplay)
}

func marshalWithSecret(v any, plaintext string, replay bool) ([]byte, error) {
	if replay {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return append(b[:len(b)-1], `,"idempotent_replay":true}`...), nil
	}
	return withSecret(v, plaintext)
}

// List is a page of a list answer.
type List[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// Next returns the cursor of the next page ("" at the end).
func (l *List[T]) Next() string {
	if l.NextCursor == nil {
		return ""
	}
	return *l.NextCursor
}

// --- consumers ---

// CreateConsumer creates a consumer.
func (c *Client) CreateConsumer(ctx context.Context, in control.ConsumerCreate) (*keygate.Consumer, error) {
	var out keygate.Consumer
	return &out, c.do(ctx, "POST", "/v1/consumers", nil, compact(in), &out)
}

// Consumers lists a page of consumers.
func (c *Client) Consumers(ctx context.Context, p keygate.ListParams) (*List[keygate.Consumer], error) {
	var out List[keygate.Consumer]
	return &out, c.do(ctx, "GET", "/v1/consumers", listQuery(p), nil, &out)
}

// Consumer gets a consumer.
func (c *Client) Consumer(ctx context.Context, id string) (*keygate.Consumer, error) {
	var out keygate.Consumer
	return &out, c.do(ctx, "GET", "/v1/consumers/"+url.PathEscape(id), nil, nil, &out)
}

// UpdateConsumer applies a patch.
func (c *Client) UpdateConsumer(ctx context.Context, id string, p control.ConsumerPatch) (*keygate.Consumer, error) {
	var out keygate.Consumer
	return &out, c.do(ctx, "PATCH", "/v1/consumers/"+url.PathEscape(id), nil, PatchBody(p), &out)
}

// DeleteConsumer deletes a consumer (revoking its keys) and returns it as deleted.
func (c *Client) DeleteConsumer(ctx context.Context, id string, purge bool) (*keygate.Consumer, error) {
	var q url.Values
	if purge {
		q = url.Values{"purge": {"true"}}
	}
	var out keygate.Consumer
	return &out, c.do(ctx, "DELETE", "/v1/consumers/"+url.PathEscape(id), q, nil, &out)
}

// --- plans ---

// CreatePlan creates a plan.
func (c *Client) CreatePlan(ctx context.Context, in control.PlanCreate) (*keygate.Plan, error) {
	var out keygate.Plan
	return &out, c.do(ctx, "POST", "/v1/plans", nil, compact(in), &out)
}

// Plans lists a page of plans.
func (c *Client) Plans(ctx context.Context, p keygate.ListParams) (*List[keygate.Plan], error) {
	var out List[keygate.Plan]
	return &out, c.do(ctx, "GET", "/v1/plans", listQuery(p), nil, &out)
}

// Plan gets a plan.
func (c *Client) Plan(ctx context.Context, name string) (*keygate.Plan, error) {
	var out keygate.Plan
	return &out, c.do(ctx, "GET", "/v1/plans/"+url.PathEscape(name), nil, nil, &out)
}

// UpdatePlan applies a patch.
func (c *Client) UpdatePlan(ctx context.Context, name string, p control.PlanPatch) (*keygate.Plan, error) {
	var out keygate.Plan
	return &out, c.do(ctx, "PATCH", "/v1/plans/"+url.PathEscape(name), nil, PatchBody(p), &out)
}

// DeletePlan deletes a plan and returns it as deleted.
func (c *Client) DeletePlan(ctx context.Context, name string) (*keygate.Plan, error) {
	var out keygate.Plan
	return &out, c.do(ctx, "DELETE", "/v1/plans/"+url.PathEscape(name), nil, nil, &out)
}

// --- keys ---

// CreateKey creates a key; the answer holds its plaintext.
func (c *Client) CreateKey(ctx context.Context, in control.KeyCreate) (*KeyWithSecret, error) {
	var out KeyWithSecret
	return &out, c.do(ctx, "POST", "/v1/keys", nil, compact(in), &out)
}

// Keys lists a page of keys, newest first (f.Now is not sent).
func (c *Client) Keys(ctx context.Context, f keygate.KeyFilter) (*List[keygate.Key], error) {
	q := listQuery(f.ListParams)
	if f.ConsumerID != "" {
		q.Set("consumer_id", f.ConsumerID)
	}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	var out List[keygate.Key]
	return &out, c.do(ctx, "GET", "/v1/keys", q, nil, &out)
}

// Key gets a key.
func (c *Client) Key(ctx context.Context, id string) (*keygate.Key, error) {
	var out keygate.Key
	return &out, c.do(ctx, "GET", "/v1/keys/"+url.PathEscape(id), nil, nil, &out)
}

// UpdateKey applies a patch.
func (c *Client) UpdateKey(ctx context.Context, id string, p control.KeyPatch) (*keygate.Key, error) {
	var out keygate.Key
	return &out, c.do(ctx, "PATCH", "/v1/keys/"+url.PathEscape(id), nil, PatchBody(p), &out)
}

// RevokeKey revokes a key at once.
func (c *Client) RevokeKey(ctx context.Context, id, reason string) (*keygate.Key, error) {
	var out keygate.Key
	return &out, c.do(ctx, "POST", "/v1/keys/"+url.PathEscape(id)+"/revoke", nil, revokeRequest{Reason: reason}, &out)
}

// RotateKey rotates a key; grace nil is the server's default (24h). The answer holds the new
// key's plaintext.
func (c *Client) RotateKey(ctx context.Context, id string, grace *time.Duration) (*KeyWithSecret, error) {
	var in rotateRequest
	if grace != nil {
		d := keygate.Duration(*grace)
		in.GracePeriod = &d
	}
	var out KeyWithSecret
	return &out, c.do(ctx, "POST", "/v1/keys/"+url.PathEscape(id)+"/rotate", nil, in, &out)
}

// RevokeLeaked revokes the keys among plaintexts as leaked.
func (c *Client) RevokeLeaked(ctx context.Context, plaintexts []string) (*control.LeakedResult, error) {
	var out control.LeakedResult
	return &out, c.do(ctx, "POST", "/v1/keys/leaked", nil, leakedRequest{Keys: plaintexts}, &out)
}

// --- root keys ---

// CreateRootKey creates a root key; the answer holds its plaintext.
func (c *Client) CreateRootKey(ctx context.Context, in control.RootKeyCreate) (*RootKeyWithSecret, error) {
	var out RootKeyWithSecret
	return &out, c.do(ctx, "POST", "/v1/root-keys", nil, in, &out)
}

// RootKeys lists a page of root keys.
func (c *Client) RootKeys(ctx context.Context, p keygate.ListParams) (*List[keygate.RootKey], error) {
	var out List[keygate.RootKey]
	return &out, c.do(ctx, "GET", "/v1/root-keys", listQuery(p), nil, &out)
}

// RevokeRootKey revokes a root key.
func (c *Client) RevokeRootKey(ctx context.Context, id string) (*keygate.RootKey, error) {
	var out keygate.RootKey
	return &out, c.do(ctx, "POST", "/v1/root-keys/"+url.PathEscape(id)+"/revoke", nil, nil, &out)
}

// --- audit ---

// AuditEntries lists a page of audit entries, newest first.
func (c *Client) AuditEntries(ctx context.Context, f keygate.AuditFilter) (*List[keygate.AuditEntry], error) {
	q := listQuery(f.ListParams)
	for k, v := range map[string]string{"actor": f.Actor, "action": f.Action, "target": f.Target} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.From != nil {
		q.Set("from", f.From.UTC().Format(time.RFC3339Nano))
	}
	if f.To != nil {
		q.Set("to", f.To.UTC().Format(time.RFC3339Nano))
	}
	var out List[keygate.AuditEntry]
	return &out, c.do(ctx, "GET", "/v1/audit", q, nil, &out)
}

// VerifyAudit checks the audit chain.
func (c *Client) VerifyAudit(ctx context.Context) (*control.AuditVerification, error) {
	var out control.AuditVerification
	return &out, c.do(ctx, "GET", "/v1/audit/verify", nil, nil, &out)
}

// AuditHead returns the newest entry's seq and hash.
func (c *Client) AuditHead(ctx context.Context) (*control.AuditHead, error) {
	var out control.AuditHead
	return &out, c.do(ctx, "GET", "/v1/audit/head", nil, nil, &out)
}

func listQuery(p keygate.ListParams) url.Values {
	q := url.Values{}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
	return q
}

// maxAnswer bounds the answers a Client reads.
const maxAnswer = 32 << 20

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return keygate.Errorf(keygate.CodeBadRequest, "bad server URL %q", c.BaseURL)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultClientTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return keygate.Errorf(keygate.CodeUnavailable, "cannot reach the admin API at %s: %v", c.BaseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return keygate.Errorf(keygate.CodeUnavailable, "reading the answer of %s %s failed: %v", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return problemError(resp, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode the answer of %s %s: %w", method, path, err)
	}
	return nil
}

// problemError turns an error answer into a *keygate.Error.
func problemError(resp *http.Response, body []byte) error {
	var p Problem
	if strings.Contains(resp.Header.Get("Content-Type"), "json") && json.Unmarshal(body, &p) == nil && p.Code != "" {
		detail := p.Detail
		if detail == "" {
			detail = p.Title
		}
		return &keygate.Error{Code: p.Code, Message: detail}
	}
	code := keygate.CodeInternal
	for _, c := range []string{keygate.CodeBadRequest, keygate.CodeUnauthorized, keygate.CodeForbidden,
		keygate.CodeNotFound, keygate.CodeConflict, keygate.CodePayloadTooLarge, keygate.CodeUnavailable} {
		if statusOf(c) == resp.StatusCode {
			code = c
		}
	}
	return keygate.Errorf(code, "the server answered %s", resp.Status)
}

// PatchBody encodes a patch struct of keygate.Opt fields as JSON: set fields with their value,
// cleared ones as null, absent ones left out.
func PatchBody(p any) map[string]any {
	out := map[string]any{}
	v := reflect.ValueOf(p)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !isOpt(f.Type) {
			continue
		}
		fv := v.Field(i)
		if !fv.FieldByName("Set").Bool() {
			continue
		}
		if fv.FieldByName("Null").Bool() {
			out[name] = nil
			continue
		}
		out[name] = fv.FieldByName("Value").Interface()
	}
	return out
}

// compact encodes a create body without its empty members, so that server defaults apply.
func compact(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	for k, x := range m {
		switch x := x.(type) {
		case nil:
			delete(m, k)
		case string:
			if x == "" {
				delete(m, k)
			}
		}
	}
	return m
}
