package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher runs the check script for concurrent Checks in shared round trips: each worker takes
// the calls waiting when it is free (never waiting for more) and sends them as one EVALSHA of
// check.lua, which decides them one after the other and answers each its own part. A lone Check
// is one EVALSHA of one Check; under load, many Checks share one write, one read and one script
// call, which is where a Redis round trip spends its time (on both sides). Each Check is still
// decided atomically and all-or-nothing, exactly as if it had been sent alone.
type batcher struct {
	client redis.UniversalClient
	script *redis.Script
	grace  int64 // ARGV[2] of every call: ms a quota counter outlives its period
	calls  chan *evalCall
	stop   chan struct{}
	wg     sync.WaitGroup
	// refund, when set, is called with a call whose caller had stopped waiting (gone away, or
	// timed out and fell back) before its answer came.
	refund func(c *evalCall)
}

type evalCall struct {
	ctx    context.Context
	limits []Limit
	cost   int64
	keys   []string // the Check's part of the script's KEYS and ARGV (Redis.scriptArgs)
	args   []any
	res    []int64
	err    error
	done   chan struct{}

	state atomic.Int32 // callPending, then callDelivered or callAbandoned, whichever comes first
}

const (
	callPending int32 = iota
	callDelivered
	callAbandoned
)

const (
	batchWorkers = 4  // round trips in flight at once
	batchMax     = 64 // Checks in one round trip
)

func newBatcher(client redis.UniversalClient, script *redis.Script, grace time.Duration) *batcher {
	b := &batcher{client: client, script: script, grace: grace.Milliseconds(),
		calls: make(chan *evalCall), stop: make(chan struct{})}
	for range batchWorkers {
		b.wg.Add(1)
		go b.work()
	}
	return b
}

// run evaluates the script for the Check c (limits, cost, keys and args set); ctx bounds the
// wait. When the caller stops waiting while the script is on its way, what the script consumed
// is refunded when its answer comes: the caller's request is then either not served (its client
// went away; on_store_error closed) or counted by the Local fallback, whose usage reaches Redis
// later.
func (b *batcher) run(ctx context.Context, c *evalCall) ([]int64, error) {
	c.ctx, c.done = ctx, make(chan struct{})
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.stop:
		return nil, errBatcherClosed
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		// The script may still run: deliver refunds its consumption when the answer comes.
		if !c.state.CompareAndSwap(callPending, callAbandoned) {
			<-c.done // the answer came meanwhile
			return c.res, c.err
		}
		return nil, ctx.Err()
	}
}

// deliver hands a call its answer, or refunds an abandoned call's consumption.
func (b *batcher) deliver(c *evalCall) {
	if !c.state.CompareAndSwap(callPending, callDelivered) && c.err == nil && b.refund != nil {
		b.refund(c)
	}
	close(c.done)
}

type batcherError string

func (e batcherError) Error() string { return string(e) }

const errBatcherClosed = batcherError("ratelimit: limiter closed")

func (b *batcher) work() {
	defer b.wg.Done()
	batch := make([]*evalCall, 0, batchMax)
	for {
		select {
		case c := <-b.calls:
			batch = append(batch[:0], c)
		case <-b.stop:
			return
		}
	drain:
		for len(batch) < batchMax {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		b.exec(batch)
	}
}

func (b *batcher) exec(batch []*evalCall) {
	// Bounded by the latest deadline among the callers, not cancelled with them: an answer must
	// be read even for a caller that left, so that its consumption can be refunded and the
	// connection stays usable.
	ctx := context.WithoutCancel(batch[0].ctx)
	if d, ok := latestDeadline(batch); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	res, err := b.eval(ctx, batch)
	for _, c := range batch {
		c.res, c.err = nil, err
		if err == nil {
			c.res, res, c.err = splitAnswer(res)
		}
		b.deliver(c)
	}
}

// splitAnswer takes one Check's answer off the front of the script's answer: its length, then
// the answer itself.
func splitAnswer(res []int64) (answer, rest []int64, err error) {
	if len(res) == 0 || res[0] < 1 || res[0] > int64(len(res)-1) {
		return nil, nil, errBadAnswer
	}
	n := res[0]
	answer, rest = res[1:1+n:1+n], res[1+n:]
	if answer[0] == 3 && n == 1 {
		return nil, rest, errNotCounter
	}
	return answer, rest, nil
}

const (
	errBadAnswer  = batcherError("ratelimit: malformed answer from the check script")
	errNotCounter = batcherError("ratelimit: a rate limit key in Redis holds something else than a hash of counters")
)

// eval runs the script for the batch, loading it first when Redis does not have it (a restarted
// or emptied Redis).
func (b *batcher) eval(ctx context.Context, batch []*evalCall) ([]int64, error) {
	res, err := b.process(ctx, batch)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := b.script.Load(ctx, b.client).Err(); err != nil {
			return nil, err
		}
		res, err = b.process(ctx, batch)
	}
	return res, err
}

// process is one EVALSHA of the batch, its answer read straight into []int64 (the script
// answers integers only: the generic command would box every value).
func (b *batcher) process(ctx context.Context, batch []*evalCall) ([]int64, error) {
	nkeys, nargs := 0, 0
	for _, c := range batch {
		nkeys += len(c.keys)
		nargs += 1 + len(c.args)
	}
	args := make([]any, 0, 5+nkeys+nargs)
	args = append(args, "evalsha", b.script.Hash(), nkeys)
	for _, c := range batch {
		for _, k := range c.keys {
			args = append(args, k)
		}
	}
	args = append(args, len(batch), b.grace)
	for _, c := range batch {
		args = append(args, len(c.keys))
		args = append(args, c.args...)
	}
	cmd := redis.NewIntSliceCmd(ctx, args...)
	_ = b.client.Process(ctx, cmd)
	return cmd.Result()
}

func latestDeadline(batch []*evalCall) (d0 time.Time, ok bool) {
	for _, c := range batch {
		if d, has := c.ctx.Deadline(); has && (!ok || d.After(d0)) {
			d0, ok = d, true
		}
	}
	return d0, ok
}

func (b *batcher) close() {
	close(b.stop)
	b.wg.Wait()
}
