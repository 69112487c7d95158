package admin

import (
	"net/http"

	"github.com/keygate/keygate"
)

// Helpers for the handlers of Options.Routes, so that every route of the admin API encodes,
// decodes and fails the same way.

// Encode writes v as a JSON answer with status.
func Encode(w http.ResponseWriter, r *http.Request, status int, v any) { encode(w, r, status, v) }

// Decode reads the request body, one JSON object of v's fields and nothing else, into v. Its
// errors are *keygate.Error (BAD_REQUEST, PAYLOAD_TOO_LARGE): pass them to WriteError.
func Decode(r *http.Request, v any) error { return decode(r, v) }

// WriteError answers err as an RFC 9457 problem with the status of its code; errors without a
// code are logged and answered 500 with a generic detail.
func WriteError(w http.ResponseWriter, r *http.Request, err error) { writeError(w, r, err) }

// ListParams reads the limit and cursor query parameters of a list request (limit default 50,
// clamped to 1000; a malformed one is BAD_REQUEST).
func ListParams(r *http.Request) (keygate.ListParams, error) {
	q := newQuery(r.URL)
	p := q.list()
	return p, q.err
}

// Params for Route.Query of list routes.
var (
	ParamLimit  = paramLimit
	ParamCursor = paramCursor
	ParamFrom   = paramFrom
	ParamTo     = paramTo
)
