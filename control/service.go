package control

import (
	"log/slog"
	"time"

	"github.com/keygate/keygate"
)

// Service applies and audits every change. It is safe for concurrent use.
type Service struct {
	store  keygate.Store
	now    func() time.Time
	prefix string
	legacy []string
	inv    Invalidator
	events keygate.Events
	usage  UsageFunc
	grace  time.Duration
	// auditKey checks the audit chain; sink copies committed entries out.
	auditKey []byte
	sink     func(*keygate.AuditEntry)
	log      *slog.Logger
	roots    *rootCache
}

// New returns a Service.
func New(o Options) *Service {
	s := &Service{store: o.Store, now: o.Now, prefix: o.Prefix, legacy: o.LegacyPrefixes,
		inv: o.Invalidator, events: o.Events, usage: o.Usage, grace: o.DefaultGracePeriod,
		auditKey: o.AuditKey, sink: o.AuditSink, log: o.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	ttl := o.RootKeyTTL
	if ttl <= 0 {
		ttl = time.Second
	}
	s.roots = newRootCache(ttl)
	if s.now == nil {
		s.now = time.Now
	}
	if s.prefix == "" {
		s.prefix = "kg"
	}
	if s.inv == nil {
		s.inv = nopInvalidator{}
	}
	if s.events == nil {
		s.events = keygate.NopEvents{}
	}
	if s.grace == 0 {
		s.grace = 24 * time.Hour
	}
	if s.usage == nil {
		s.usage = s.durableUsage
	}
	return s
}

type nopInvalidator struct{}

func (nopInvalidator) KeyChanged(string, []byte)     {}
func (nopInvalidator) ConsumerChanged(string)        {}
func (nopInvalidator) PlanChanged(string)            {}
func (nopInvalidator) RootKeyChanged(string, []byte) {}

// Store returns the store the service writes to (for reads that need no business rules).
func (s *Service) Store() keygate.Store { return s.store }

// Prefix returns the key prefix.
func (s *Service) Prefix() string { return s.prefix }
