package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind says how a Limit counts.
type Kind uint8

const (
	Window     Kind = iota // a rolling window of Limit per Period (GCRA)
	QuotaDay               // calendar UTC day
	QuotaMonth             // calendar UTC month
)

func (k Kind) String() string {
	switch k {
	case Window:
		return "window"
	case QuotaDay:
		return "day"
	case QuotaMonth:
		return "month"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

func (k Kind) isQuota() bool { return k == QuotaDay || k == QuotaMonth }

// Limit is one check. Name is shown to clients (e.g. "burst", "quota", "consumer-minute").
// Key is the counter identity, unique per (owner, name), e.g. "k:<limiterID>:burst" or
// "c:<consumerID>:quota". The keys of one Check must be distinct.
type Limit struct {
	Name   string
	Key    string
	Kind   Kind
	Limit  int64
	Period time.Duration // for Window; ignored for quotas
}

// Validate reports a limit that Check could only refuse. Check never panics on an invalid limit:
// it refuses every request against it, so a bad configuration is loud rather than unlimited.
func (l Limit) Validate() error {
	switch {
	case l.Key == "":
		return errors.New("ratelimit: limit without a key")
	case l.Kind > QuotaMonth:
		return fmt.Errorf("ratelimit: limit %q: unknown kind %d", l.Name, l.Kind)
	case l.Limit < 1:
		return fmt.Errorf("ratelimit: limit %q: limit %d is below 1", l.Name, l.Limit)
	case l.Kind == Window && l.Period <= 0:
		return fmt.Errorf("ratelimit: limit %q: period %v is not positive", l.Name, l.Period)
	}
	return nil
}

// State of one limit after a check, in the same order as the limits passed.
type State struct {
	Name      string
	Kind      Kind
	Limit     int64
	Remaining int64         // after this request if allowed (counts this request); current remaining if refused or a peek
	Reset     time.Duration // time until the limit is whole again (RateLimit "t"), >= 0; for quotas the end of the period
	Window    time.Duration // RateLimit-Policy "w": Period, or the length of the current calendar period for quotas
}

// Decision is the answer of one Check. Check overwrites every field and reuses the capacity of
// States, so a caller that keeps one Decision per worker allocates nothing.
type Decision struct {
	Allowed    bool
	Denied     int           // index of the refusing limit, -1 when allowed; of several, the one that frees last
	RetryAfter time.Duration // until the refusing limit admits the next request of this cost (>0 when refused)
	States     []State
}

// Limiter is the limiter of SPEC §5.
type Limiter interface {
	// Check consumes cost from every limit at once, all-or-nothing: if any limit refuses, nothing
	// is consumed anywhere. cost 0 answers as cost 1 would without consuming (a "peek").
	// A non-nil error means the counter store failed and the configured on_store_error mode said
	// "closed" (errors.Is(err, ErrUnavailable)); in "local" and "open" modes Check handles the
	// failure itself and returns nil.
	Check(ctx context.Context, limits []Limit, cost int64, d *Decision) error
}

// ErrUnavailable is returned by Check when the counter store failed in Closed mode, and by the
// Redis limiter when the caller's context ended before Redis answered (nothing is admitted).
var ErrUnavailable = errors.New("ratelimit: counter store unavailable")

// StoreErrorMode is ratelimit.on_store_error: what a shared limiter does while its store fails.
type StoreErrorMode uint8

const (
	Local  StoreErrorMode = iota // enforce windows and quotas in this node's memory, from the last usage it knew
	Open                         // allow everything
	Closed                       // return ErrUnavailable
)

func (m StoreErrorMode) String() string {
	switch m {
	case Local:
		return "local"
	case Open:
		return "open"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("StoreErrorMode(%d)", uint8(m))
}

// ParseStoreErrorMode parses the configuration value of ratelimit.on_store_error; "" is Local.
func ParseStoreErrorMode(s string) (StoreErrorMode, error) {
	switch s {
	case "", "local":
		return Local, nil
	case "open":
		return Open, nil
	case "closed":
		return Closed, nil
	}
	return 0, fmt.Errorf("ratelimit: on_store_error %q: want local, open or closed", s)
}

// SeedFunc returns the usage of a quota counter in the period starting at periodStart, from the
// durable record (the database). It is called when a quota counter is not in the store: on the
// first request of a key after a start, a period change, or a Redis that came back empty.
type SeedFunc func(ctx context.Context, limitKey string, kind Kind, periodStart time.Time) (used int64, err error)

// Option configures NewMemory and NewRedis. Options that do not apply to one are ignored by it.
type Option func(*options)

type options struct {
	now          func() time.Time
	seed         SeedFunc
	shards       int
	sweepEvery   time.Duration
	prefix       string
	timeout      time.Duration
	onStoreError StoreErrorMode
	registerer   prometheus.Registerer
	backoff      time.Duration
	seedTimeout  time.Duration
}

func defaultOptions() options {
	return options{
		now:         time.Now,
		shards:      64,
		sweepEvery:  time.Minute,
		prefix:      "keygate:rl:",
		timeout:     50 * time.Millisecond,
		backoff:     250 * time.Millisecond,
		seedTimeout: time.Second,
	}
}

// WithNow sets the clock of the memory limiter (and of a Redis limiter's local fallback).
// Default time.Now. The Redis limiter itself counts on Redis TIME, never on this clock.
func WithNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithSeed sets where quota counters missing from the store are refilled from. Default none: a
// missing counter starts at 0 (so a restart, or a Redis that lost its data, resets quotas).
func WithSeed(seed SeedFunc) Option { return func(o *options) { o.seed = seed } }

// WithSeedTimeout bounds each call of the seed. Default 1s.
func WithSeedTimeout(d time.Duration) Option { return func(o *options) { o.seedTimeout = d } }

// WithShards sets the number of lock shards of the memory limiter, rounded up to a power of
// two. Default 64.
func WithShards(n int) Option { return func(o *options) { o.shards = n } }

// WithSweepInterval sets how often the memory limiter drops idle counters: windows that are
// whole again and quotas whose period ended. Default 1 minute; 0 or less disables the sweeper.
func WithSweepInterval(d time.Duration) Option { return func(o *options) { o.sweepEvery = d } }

// WithPrefix sets the prefix of every Redis key. Default "keygate:rl:". With Redis Cluster, put
// a hash tag in it (e.g. "{rl}:") so that the keys of one Check share a slot.
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithTimeout bounds each Redis call of a Check. Default 50ms.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithOnStoreError sets what the Redis limiter does while Redis fails. Default Local.
func WithOnStoreError(m StoreErrorMode) Option { return func(o *options) { o.onStoreError = m } }

// WithRegisterer registers the limiter's metrics (keygate_limiter_store_errors_total). Default
// nil: not registered.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// WithRetryBackoff sets how long the Redis limiter stays on its fallback after a failed call
// before it tries Redis again (one probing call at a time). Default 250ms; 0 tries on every
// call; values above 1s are taken as 1s, since the fallback is less exact than Redis.
func WithRetryBackoff(d time.Duration) Option {
	return func(o *options) { o.backoff = min(max(d, 0), time.Second) }
}

// seedCtx bounds a seed call by the seed timeout.
func (o *options) seedCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if o.seedTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, o.seedTimeout)
}
