package control

import (
	"context"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/audit"
)

// AuditFailure appends an entry with result failure for an action that was refused (for example
// a 403), in its own transaction.
func (s *Service) AuditFailure(ctx context.Context, a Actor, action, targetType, targetID string, details map[string]any) error {
	return s.apply(ctx, a, func(ctx context.Context, r *recorder) error {
		return r.auditResult(ctx, keygate.ResultFailure, action, targetType, targetID, details)
	})
}

// AuditEntries lists entries newest first.
func (s *Service) AuditEntries(ctx context.Context, f keygate.AuditFilter) ([]*keygate.AuditEntry, string, error) {
	es, next, err := s.store.AuditEntries(ctx, f)
	return es, next, s.readError(err)
}

// VerifyAudit checks the whole chain with the audit key.
func (s *Service) VerifyAudit(ctx context.Context) (*AuditVerification, error) {
	ok, n, broken, err := audit.Verify(ctx, s.store.ScanAudit, s.auditKey)
	if err != nil {
		return nil, s.readError(err)
	}
	return &AuditVerification{OK: ok, Entries: n, BrokenAt: broken}, nil
}

// AuditHead returns the newest entry's seq and hash.
func (s *Service) AuditHead(ctx context.Context) (*AuditHead, error) {
	seq, hash, err := s.store.AuditHead(ctx)
	if err != nil {
		return nil, s.readError(err)
	}
	return &AuditHead{Seq: seq, Hash: hash}, nil
}
