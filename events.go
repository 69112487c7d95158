package keygate

import "context"

// Event types sent to webhooks (SPEC §6).
const (
	EventKeyCreated      = "key.created"
	EventKeyRevoked      = "key.revoked"
	EventKeyRotated      = "key.rotated"
	EventKeyExpiring     = "key.expiring"
	EventKeyExpired      = "key.expired"
	EventKeyRotationDue  = "key.rotation_due"
	EventQuotaWarning    = "quota.warning"
	EventQuotaExceeded   = "quota.exceeded"
	EventAnomalyDetected = "anomaly.detected"
	EventKeyLeaked       = "key.leaked"
)

// Events receives domain events after the change they describe has committed. Implementations
// must not block the caller (queue and deliver asynchronously). data never holds a secret.
type Events interface {
	Emit(ctx context.Context, eventType string, data map[string]any)
}

// NopEvents drops every event.
type NopEvents struct{}

// Emit implements Events.
func (NopEvents) Emit(context.Context, string, map[string]any) {}
