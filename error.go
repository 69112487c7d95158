package keygate

import (
	"errors"
	"fmt"
)

// Codes of SPEC §3: the verify "code" and the "code" member of every error body.
const (
	CodeValid               = "VALID"
	CodeNotFound            = "NOT_FOUND"
	CodeRevoked             = "REVOKED"
	CodeExpired             = "EXPIRED"
	CodeDisabled            = "DISABLED"
	CodeInsufficientScope   = "INSUFFICIENT_SCOPE"
	CodeIPNotAllowed        = "IP_NOT_ALLOWED"
	CodeReferrerNotAllowed  = "REFERRER_NOT_ALLOWED"
	CodeEnvNotAllowed       = "ENV_NOT_ALLOWED"
	CodePlanNotAllowed      = "PLAN_NOT_ALLOWED"
	CodeRateLimited         = "RATE_LIMITED"
	CodeQuotaExceeded       = "QUOTA_EXCEEDED"
	CodeThrottled           = "THROTTLED"
	CodeUnauthorized        = "UNAUTHORIZED"
	CodeForbidden           = "FORBIDDEN"
	CodeBadRequest          = "BAD_REQUEST"
	CodeConflict            = "CONFLICT"
	CodePayloadTooLarge     = "PAYLOAD_TOO_LARGE"
	CodeRouteNotFound       = "ROUTE_NOT_FOUND"
	CodeUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"
	CodeUpstreamTimeout     = "UPSTREAM_TIMEOUT"
	CodeUnavailable         = "UNAVAILABLE"
	// CodeInternal is never sent on purpose: it marks a bug (HTTP 500).
	CodeInternal = "INTERNAL"
)

// Error is an error with a code of SPEC §3 and a message safe to show to the caller.
// Messages never contain secrets.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, CodeInternal for any other
// error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the message of the first *Error in err's chain, or a generic message for
// internal errors (their text may hold details that are not for callers).
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
