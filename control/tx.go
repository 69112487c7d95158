package control

import (
	"context"
	"errors"
	"time"

	"github.com/keygate/keygate"
)

// recorder appends audit entries inside a transaction and remembers them for the sinks and the
// after-commit work (cache invalidation, events), which must run only once the change is durable.
type recorder struct {
	s       *Service
	tx      keygate.Tx
	actor   Actor
	now     time.Time
	entries []*keygate.AuditEntry
	after   []func()
}

// audit appends one entry with result success. An error here aborts the whole change.
func (r *recorder) audit(ctx context.Context, action, targetType, targetID string, details map[string]any) error {
	return r.auditResult(ctx, keygate.ResultSuccess, action, targetType, targetID, details)
}

func (r *recorder) auditResult(ctx context.Context, result, action, targetType, targetID string, details map[string]any) error {
	e := &keygate.AuditEntry{
		TS: r.now, Actor: r.actor.ID, Action: action, TargetType: targetType, TargetID: targetID,
		IP: r.actor.IP, Result: result, Details: details,
	}
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	if err := r.tx.AppendAudit(ctx, e); err != nil {
		return &auditError{err}
	}
	r.entries = append(r.entries, e)
	return nil
}

// then schedules fn to run after the transaction committed.
func (r *recorder) then(fn func()) { r.after = append(r.after, fn) }

type auditError struct{ err error }

func (e *auditError) Error() string { return "append audit entry: " + e.err.Error() }
func (e *auditError) Unwrap() error { return e.err }

// apply runs fn in one transaction with an audit recorder. On success the recorded entries go to
// the sinks and the after-commit functions run. Storage failures become UNAVAILABLE: the change
// was not applied.
func (s *Service) apply(ctx context.Context, a Actor, fn func(ctx context.Context, r *recorder) error) error {
	var rec *recorder
	err := s.store.Update(ctx, func(tx keygate.Tx) error {
		rec = &recorder{s: s, tx: tx, actor: a, now: s.clock()}
		return fn(ctx, rec)
	})
	if err != nil {
		return s.storeError(err)
	}
	for _, e := range rec.entries {
		if s.sink != nil {
			s.sink(e)
		}
	}
	for _, f := range rec.after {
		f()
	}
	return nil
}

// storeError passes coded errors through and turns anything else (the database is down, the
// audit entry could not be written) into 503 UNAVAILABLE, logging the cause.
func (s *Service) storeError(err error) error {
	if err == nil {
		return nil
	}
	var ae *auditError
	if errors.As(err, &ae) {
		s.log.Error("audit append failed; change not applied", "err", ae.err)
		return keygate.Errorf(keygate.CodeUnavailable, "the audit log cannot be written; the change was not applied")
	}
	if code := keygate.ErrorCode(err); code != keygate.CodeInternal {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return keygate.Errorf(keygate.CodeUnavailable, "the request was cancelled")
	}
	s.log.Error("storage error", "err", err)
	return keygate.Errorf(keygate.CodeUnavailable, "storage is unavailable; try again")
}

// readError maps errors of reads outside transactions the same way.
func (s *Service) readError(err error) error { return s.storeError(err) }

// clock returns the current time in UTC truncated to microseconds, the precision of storage.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }
