package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/keygate/keygate"
)

// Problem is an RFC 9457 problem details body, with keygate's code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// statusOf is the one table from error codes to HTTP statuses of the admin API.
func statusOf(code string) int {
	switch code {
	case keygate.CodeBadRequest:
		return http.StatusBadRequest
	case keygate.CodeUnauthorized:
		return http.StatusUnauthorized
	case keygate.CodeForbidden:
		return http.StatusForbidden
	case keygate.CodeNotFound:
		return http.StatusNotFound
	case keygate.CodeConflict:
		return http.StatusConflict
	case keygate.CodePayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case keygate.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// problemType is the "type" URI of a code.
func problemType(code string) string {
	return "urn:keygate:problem:" + strings.ReplaceAll(strings.ToLower(code), "_", "-")
}

type loggerKey struct{}

func loggerFrom(r *http.Request) *slog.Logger {
	if l, ok := r.Context().Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// writeError answers err as a problem. Errors without a code are internal: logged, and answered
// with a generic detail since their text is not for callers.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := keygate.ErrorCode(err)
	if statusOf(code) == http.StatusInternalServerError {
		loggerFrom(r).ErrorContext(r.Context(), "admin: internal error", "method", r.Method,
			"path", redactPath(r.URL.Path), "code", code, "err", err)
		writeProblem(w, r, keygate.CodeInternal, "internal error")
		return
	}
	writeProblem(w, r, code, keygate.ErrorMessage(err))
}

func writeProblem(w http.ResponseWriter, _ *http.Request, code, detail string) {
	writeProblemStatus(w, statusOf(code), code, detail)
}

func writeProblemStatus(w http.ResponseWriter, status int, code, detail string) {
	if code == keygate.CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keygate"`)
	}
	b, _ := json.Marshal(Problem{Type: problemType(code), Title: http.StatusText(status),
		Status: status, Detail: detail, Code: code})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// encode writes v as JSON with status.
func encode(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, r, fmt.Errorf("encode answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func badRequest(format string, args ...any) error {
	return keygate.Errorf(keygate.CodeBadRequest, format, args...)
}

// errNoBody is returned by decodeBody for an empty body.
var errNoBody = badRequest("a JSON request body is required")

// decode reads the request body, which must be one JSON object of v's fields, into v.
func decode(r *http.Request, v any) error { return decodeBody(r, v) }

// decodeOptional is decode for routes whose body may be left out; v is untouched then.
func decodeOptional(r *http.Request, v any) error {
	if err := decodeBody(r, v); err != errNoBody {
		return err
	}
	return nil
}

func decodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return keygate.Errorf(keygate.CodePayloadTooLarge, "request body is larger than %d bytes", mbe.Limit)
		}
		return badRequest("reading the request body failed")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errNoBody
	}
	if err := checkJSONContentType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	if !utf8.Valid(body) {
		return badRequest("request body is not valid UTF-8")
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); t[0] != '{' {
		return badRequest("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, body, v)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("request body must hold one JSON object and nothing after it")
	}
	return nil
}

func checkJSONContentType(ct string) error {
	if ct == "" {
		return badRequest("Content-Type must be application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !(mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return badRequest("Content-Type must be application/json, not %q", truncate(ct, 64))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return badRequest("the request body must be UTF-8, not charset %q", truncate(cs, 32))
	}
	return nil
}

// jsonError turns an encoding/json error into a 400 naming the field when it can.
func jsonError(err error, body []byte, v any) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var kerr *keygate.Error
	switch {
	case errors.As(err, &kerr):
		return kerr
	case errors.As(err, &syn):
		return badRequest("malformed JSON at byte %d: %s", syn.Offset, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("request body must be a JSON object")
		}
		return badRequest("field %q must be %s, not %s", typ.Field, jsonTypeName(typ.Type.String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest("malformed JSON: the body ends early")
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return badRequest("unknown field %s", f)
	}
	msg = strings.TrimPrefix(msg, "json: ")
	if strings.HasPrefix(msg, "parsing time") {
		msg = "must be an RFC 3339 time like 2026-11-29T10:00:00Z"
	}
	if f := failingField(body, v); f != "" {
		return badRequest("field %q: %s", f, msg)
	}
	return badRequest("invalid request body: %s", msg)
}

// failingField finds the top-level member whose value alone fails to decode into v's type: the
// errors of custom decoders (durations, times) do not say which member they came from.
func failingField(body []byte, v any) string {
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil {
		return ""
	}
	t := reflect.TypeOf(v)
	if t.Kind() != reflect.Pointer {
		return ""
	}
	for name, raw := range members {
		one, _ := json.Marshal(map[string]json.RawMessage{name: raw})
		if json.Unmarshal(one, reflect.New(t.Elem()).Interface()) != nil {
			return name
		}
	}
	return ""
}

// jsonTypeName names a Go type as the JSON a caller should send.
func jsonTypeName(goType string) string {
	t := strings.TrimPrefix(goType, "*")
	switch {
	case t == "string", strings.HasSuffix(t, "Duration"), t == "time.Time":
		return "a string"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case strings.HasPrefix(t, "map["), strings.Contains(t, "."):
		return "an object"
	}
	return "of type " + t
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
