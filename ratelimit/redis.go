package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

//go:embed check.lua
var checkLua string

// errRecentFailure is the cause given while the limiter waits out its retry backoff.
var errRecentFailure = errors.New("redis failed less than the retry backoff ago")

// quotaGrace is how long a quota counter outlives its period in Redis.
const quotaGrace = time.Hour

// Redis is the limiter shared by the nodes of a cluster. Each Check is one Lua script, one round
// trip, that reads Redis TIME, decides every limit and writes only if all of them allow, so
// limits hold across nodes whatever their clocks say. While Redis fails it answers as its
// StoreErrorMode says, and it tries Redis again after the retry backoff.
type Redis struct {
	client   redis.UniversalClient
	script   *redis.Script
	batch    *batcher // shares pipelines between concurrent Checks
	o        options
	local    *Memory // the Local fallback; also remembers the last quota usage Redis reported
	ctxAware bool    // the client bounds its socket I/O by the context deadline

	storeErrors prometheus.Counter
	downUntil   atomic.Int64 // unix ns: until then, use the fallback; 0 while Redis answers
	probing     atomic.Bool  // one Check at a time tries Redis again after the backoff

	mu      sync.Mutex
	pending map[pendingKey]int64 // quota usage consumed by the Local fallback, not yet in Redis

	refunds atomic.Int64 // Checks whose quota consumption was given back (see refund)
}

var _ Limiter = (*Redis)(nil)

type pendingKey struct {
	key   string
	kind  Kind
	start int64 // period start, unix ns
}

// NewRedis returns a limiter on client. It does not contact Redis: a Redis that is down at start
// is handled like one that fails later. The error is only about registering its metric.
//
// Give it a client with ContextTimeoutEnabled: true, so that the per-call timeout reaches the
// socket; with any other client each Redis call runs in a goroutine of its own that Check stops
// waiting for at the timeout (correct, but slower).
func NewRedis(client redis.UniversalClient, opts ...Option) (*Redis, error) {
	if client == nil {
		return nil, errors.New("ratelimit: NewRedis without a client")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		o.timeout = 50 * time.Millisecond
	}
	r := &Redis{
		client:   client,
		script:   redis.NewScript(checkLua),
		o:        o,
		ctxAware: honorsContext(client),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_limiter_store_errors_total",
			Help: "Rate limiter calls to Redis that failed or timed out; each one switches the limiter to its on_store_error mode for a short while.",
		}),
		pending: make(map[pendingKey]int64),
	}
	if o.registerer != nil {
		if err := o.registerer.Register(r.storeErrors); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return nil, fmt.Errorf("ratelimit: register metrics: %w", err)
			}
			r.storeErrors = already.ExistingCollector.(prometheus.Counter)
		}
	}
	r.local = newMemory(o)
	r.batch = newBatcher(client, r.script, quotaGrace)
	r.batch.refund = r.refund
	return r, nil
}

// honorsContext reports whether client applies context deadlines to its socket reads; without
// ContextTimeoutEnabled go-redis waits for its ReadTimeout (3s by default) on a hung server.
func honorsContext(client redis.UniversalClient) bool {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// Close stops the pipeline workers and the fallback limiter's sweeper. It does not close the
// Redis client.
func (r *Redis) Close() error {
	r.batch.close()
	return r.local.Close()
}

// Healthy reports whether the last call to Redis succeeded (false while on the fallback).
func (r *Redis) Healthy() bool { return r.downUntil.Load() == 0 }

// Check implements Limiter.
func (r *Redis) Check(ctx context.Context, limits []Limit, cost int64, d *Decision) error {
	if len(limits) == 0 {
		openDecision(nil, 0, d)
		return nil
	}
	probe := false
	if until := r.downUntil.Load(); until != 0 {
		if r.o.now().UnixNano() < until || !r.probing.CompareAndSwap(false, true) {
			return r.fallback(ctx, limits, cost, d, errRecentFailure)
		}
		probe = true
		defer r.probing.Store(false)
	}
	var err error
	if probe {
		err = r.flushPending(ctx)
	}
	if err == nil {
		err = r.check(ctx, limits, cost, d)
	}
	if err == nil {
		if probe {
			r.downUntil.Store(0)
		}
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		// The caller gave up (its client went away): the store is not to blame, and nothing may
		// be admitted, since usage the fallback admitted while Redis is healthy would never
		// reach Redis's counters.
		d.Allowed, d.Denied, d.RetryAfter = false, -1, 0
		return fmt.Errorf("%w: %w", ErrUnavailable, cerr)
	}
	r.storeErrors.Inc()
	r.downUntil.Store(r.o.now().Add(r.o.backoff).UnixNano())
	return r.fallback(ctx, limits, cost, d, err)
}

// check is one Check against Redis: the script, and when it reports quota counters missing,
// seeding them and running it once more.
func (r *Redis) check(ctx context.Context, limits []Limit, cost int64, d *Decision) error {
	keys, args := r.scriptArgs(limits, cost)
	for attempt := 0; ; attempt++ {
		var vals []int64
		err := r.do(ctx, func(tctx context.Context) (err error) {
			vals, err = r.batch.run(tctx, &evalCall{limits: limits, cost: cost, keys: keys, args: args})
			return err
		})
		if err != nil {
			return err
		}
		if len(vals) < 2 {
			return fmt.Errorf("ratelimit: short script answer %v", vals)
		}
		if vals[0] != 2 {
			return r.decision(limits, vals, d)
		}
		if attempt == 2 {
			return errors.New("ratelimit: quota counters still missing after seeding")
		}
		if err := r.seedMissing(ctx, limits, keys, vals); err != nil {
			return err
		}
	}
}

// scriptArgs returns a Check's part of the script's KEYS and ARGV: the owner hash of each limit,
// and the cost followed by each limit's field and values (see check.lua).
func (r *Redis) scriptArgs(limits []Limit, cost int64) ([]string, []any) {
	keys := make([]string, len(limits))
	args := make([]any, 0, 1+4*len(limits))
	args = append(args, cost)
	for i := range limits {
		l := &limits[i]
		owner, field := splitKey(l.Key)
		keys[i] = r.o.prefix + owner
		args = append(args, field)
		switch {
		case l.Kind.isQuota():
			args = append(args, -int64(l.Kind), l.Limit)
		default:
			if g, ok := l.gcraMicros(); ok {
				args = append(args, g.limit, g.q, g.r)
			} else {
				args = append(args, 0) // an invalid window, or an unknown kind: refuses
			}
		}
	}
	return keys, args
}

// splitKey places a limit key in Redis: its owner hash (the part before the last ':') and its
// field there (the rest; never containing ':', so no window field can look like a quota's
// "name:period" nor like ":exp").
func splitKey(key string) (owner, field string) {
	if i := strings.LastIndexByte(key, ':'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return key, ""
}

// quotaField is a quota counter's field in its owner hash, as check.lua names it.
func quotaField(field string, kind Kind, start time.Time) string {
	return field + ":" + periodSuffix(kind, start)
}

// gcraMicros is the arithmetic of a window in the script's unit, µs (the period rounded up).
func (l *Limit) gcraMicros() (gcra, bool) {
	if l.Kind != Window {
		return gcra{}, false
	}
	return newGCRA(l.Limit, int64((l.Period+time.Microsecond-1)/time.Microsecond))
}

// do runs fn under the per-call timeout. A client that ignores context deadlines is run in a
// goroutine so that the Check returns in time anyway.
func (r *Redis) do(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	defer cancel()
	if r.ctxAware {
		return fn(ctx)
	}
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refund gives back what the script consumed for a Check that stopped waiting before the answer
// came (the batcher calls it): its request was not served (the client went away, or closed mode
// answered 503), or the Local fallback counted it and will add it to Redis itself. The cost goes
// back on every quota counter that still exists (addIfExists), so that quotas stay exact when
// clients hang up mid-request or Redis answers late. (With on_store_error open the request was
// served uncounted, as open mode does for every request while Redis fails.) Windows keep the
// cost: their accuracy bound allows it, and a GCRA timestamp cannot be moved back safely once
// later requests have moved it on.
func (r *Redis) refund(c *evalCall) {
	n := len(c.limits)
	if len(c.res) != 4+2*n || c.res[0] != 1 || c.cost <= 0 {
		return // refused (nothing consumed) or a missing-counter answer (nothing run)
	}
	type counter struct{ key, field string }
	var todo []counter
	for i := range c.limits {
		if l := &c.limits[i]; l.Kind.isQuota() {
			_, field := splitKey(l.Key)
			todo = append(todo, counter{c.keys[i], quotaField(field, l.Kind, time.Unix(c.res[4+2*i+1], 0).UTC())})
		}
	}
	if len(todo) == 0 {
		return
	}
	r.refunds.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*r.o.timeout)
		defer cancel()
		for _, q := range todo {
			if err := addIfExistsScript.Run(ctx, r.client, []string{q.key}, q.field, -c.cost).Err(); err != nil {
				r.storeErrors.Inc()
			}
		}
	}()
}

// seedScript writes quota counters the check script found missing (KEYS: their owner hashes;
// ARGV per counter: field, usage, the hash's expiry in unix ms) unless they are there (HSETNX:
// when nodes seed the same counter at once, the first value stays and every node's retry counts
// on it); drops each quota's earlier periods from its hash; and makes the hash outlive the
// period (check.lua's ":exp" field).
var seedScript = redis.NewScript(`
for i, key in ipairs(KEYS) do
  local f, exp = ARGV[3 * i - 2], ARGV[3 * i]
  if redis.call('HSETNX', key, f, ARGV[3 * i - 1]) == 1 then
    local name = string.match(f, '^(.*):[dm]%d+$')
    for _, g in ipairs(redis.call('HKEYS', key)) do
      if g ~= f and string.match(g, '^(.*):[dm]%d+$') == name then redis.call('HDEL', key, g) end
    end
  end
  if (tonumber(redis.call('HGET', key, ':exp')) or 0) < tonumber(exp) then
    redis.call('HSET', key, ':exp', exp)
    redis.call('PEXPIREAT', key, exp)
  end
end
return 1`)

// seedMissing writes the quota counters the script found missing, with the usage Seed reports
// (0 without Seed), in one call.
func (r *Redis) seedMissing(ctx context.Context, limits []Limit, keys []string, vals []int64) error {
	n := int(vals[1])
	if len(vals) != 2+2*n {
		return fmt.Errorf("ratelimit: bad missing-counter answer %v", vals)
	}
	owners := make([]string, 0, n)
	args := make([]any, 0, 3*n)
	for j := range n {
		i, startSec := int(vals[2+2*j]), vals[3+2*j]
		if i < 0 || i >= len(limits) {
			return fmt.Errorf("ratelimit: bad missing-counter index %d", i)
		}
		l := &limits[i]
		start := time.Unix(startSec, 0).UTC()
		used := int64(0)
		if r.o.seed != nil {
			seedCtx, cancel := r.o.seedCtx(ctx)
			var err error
			used, err = r.o.seed(seedCtx, l.Key, l.Kind, start)
			cancel()
			if err != nil {
				return fmt.Errorf("ratelimit: seed %q: %w", l.Key, err)
			}
		}
		_, end := periodBounds(l.Kind, start.UnixNano())
		_, field := splitKey(l.Key)
		owners = append(owners, keys[i])
		args = append(args, quotaField(field, l.Kind, start), max(used, 0), time.Unix(0, end).Add(quotaGrace).UnixMilli())
	}
	return r.do(ctx, func(ctx context.Context) error {
		return seedScript.Run(ctx, r.client, owners, args...).Err()
	})
}

// periodSuffix names a quota counter's period the way check.lua does.
func periodSuffix(kind Kind, start time.Time) string {
	if kind == QuotaDay {
		return fmt.Sprintf("d%d", start.Unix()/86400)
	}
	return fmt.Sprintf("m%04d%02d", start.Year(), int(start.Month()))
}

// decision fills d from the script's answer and remembers the quota usage for the fallback.
// The script answers the counters after the Check; remaining and reset are worked out here, with
// the same arithmetic as the memory limiter.
func (r *Redis) decision(limits []Limit, vals []int64, d *Decision) error {
	if len(vals) != 4+2*len(limits) {
		return fmt.Errorf("ratelimit: script answered %d values for %d limits", len(vals), len(limits))
	}
	d.Allowed, d.Denied = vals[0] == 1, int(vals[1])
	d.RetryAfter = 0
	if !d.Allowed {
		d.RetryAfter = max(time.Duration(vals[2])*time.Microsecond, time.Microsecond)
	}
	now := vals[3]
	d.States = d.States[:0]
	learned := int64(0)
	for i := range limits {
		l := &limits[i]
		v := vals[4+2*i:]
		st := State{Name: l.Name, Kind: l.Kind, Limit: l.Limit, Window: l.Period}
		if l.Kind.isQuota() {
			used := v[0]
			start, end := periodBounds(l.Kind, v[1]*int64(time.Second))
			st.Remaining = min(max(l.Limit-used, 0), max(l.Limit, 0))
			st.Reset = max(time.Duration(end-now*int64(time.Microsecond)), 0)
			st.Window = time.Duration(end - start)
			if learned == 0 {
				learned = r.o.now().UnixNano()
			}
			r.local.remember(l.Key, l.Kind, start, end, used, learned)
		} else if g, ok := l.gcraMicros(); ok {
			tat, frac := v[0], v[1]
			if tat < now || frac < 0 || frac >= g.limit { // never from the script: no panic on a bad answer
				tat, frac = max(tat, now), 0
			}
			st.Remaining = g.remaining(tat, frac, now)
			st.Reset = max(time.Duration(ceilSince(tat, frac, now))*time.Microsecond, 0)
		}
		d.States = append(d.States, st)
	}
	return nil
}

// fallback answers while Redis fails, as the StoreErrorMode says.
func (r *Redis) fallback(ctx context.Context, limits []Limit, cost int64, d *Decision, cause error) error {
	switch r.o.onStoreError {
	case Open:
		openDecision(limits, r.o.now().UnixNano(), d)
		return nil
	case Closed:
		return fmt.Errorf("%w: %w", ErrUnavailable, cause)
	}
	r.refreshStale(ctx, limits)
	if err := r.local.Check(ctx, limits, cost, d); err != nil {
		return err
	}
	if d.Allowed && cost > 0 {
		now := r.o.now().UnixNano()
		r.mu.Lock()
		for i := range limits {
			if l := &limits[i]; l.Kind.isQuota() {
				start, _ := periodBounds(l.Kind, now)
				r.pending[pendingKey{l.Key, l.Kind, start}] += cost
			}
		}
		r.mu.Unlock()
	}
	return nil
}

// staleAfter is the age past which what Redis last said about a quota is older than the
// database's record (which lags by its flush interval, 1s).
const staleAfter = 2 * time.Second

// refreshStale, on the Local fallback, raises the quota counters whose last Redis answer is
// stale to the database's record: other nodes may have used the quota since. Once per counter
// and outage; afterwards the fallback counts on its own.
func (r *Redis) refreshStale(ctx context.Context, limits []Limit) {
	if r.o.seed == nil {
		return
	}
	now := r.o.now().UnixNano()
	for i := range limits {
		l := &limits[i]
		if !l.Kind.isQuota() {
			continue
		}
		if learned := r.local.learnedAt(l.Key); learned == 0 || now-learned < int64(staleAfter) {
			continue
		}
		start, _ := periodBounds(l.Kind, now)
		seedCtx, cancel := r.o.seedCtx(ctx)
		used, err := r.o.seed(seedCtx, l.Key, l.Kind, time.Unix(0, start).UTC())
		cancel()
		if err != nil {
			used = 0 // the database is down too: go on from what Redis said
		}
		r.local.raise(l.Key, start, used)
	}
}

// openDecision allows everything and reports every limit whole.
func openDecision(limits []Limit, now int64, d *Decision) {
	d.Allowed, d.Denied, d.RetryAfter = true, -1, 0
	d.States = d.States[:0]
	for i := range limits {
		l := &limits[i]
		st := State{Name: l.Name, Kind: l.Kind, Limit: l.Limit, Remaining: max(l.Limit, 0), Window: l.Period}
		if l.Kind.isQuota() {
			start, end := periodBounds(l.Kind, now)
			st.Window, st.Reset = time.Duration(end-start), time.Duration(end-now)
		}
		d.States = append(d.States, st)
	}
}

// addIfExists adds to a quota counter (field ARGV[1] of hash KEYS[1]) only if it survived: a
// counter that is gone is refilled by Seed from the database, which already counted those
// requests (and HINCRBY would make a refund's counter negative).
const addIfExists = `if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) end return -1`

var addIfExistsScript = redis.NewScript(addIfExists)

// flushPending runs when the limiter tries Redis again after a failure: it adds the quota
// usage the Local fallback allowed meanwhile to the Redis counters. On failure the usage stays
// pending for the next try.
func (r *Redis) flushPending(ctx context.Context) error {
	r.mu.Lock()
	pending := r.pending
	r.pending = make(map[pendingKey]int64)
	r.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	err := r.do(ctx, func(ctx context.Context) error {
		_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k, n := range pending {
				owner, field := splitKey(k.key)
				p.Eval(ctx, addIfExists, []string{r.o.prefix + owner}, quotaField(field, k.kind, time.Unix(0, k.start).UTC()), n)
			}
			return nil
		})
		return err
	})
	if err != nil {
		r.mu.Lock()
		for k, n := range pending {
			r.pending[k] += n
		}
		r.mu.Unlock()
	}
	return err
}
