package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher runs the check script for concurrent Checks in shared pipelines: each worker takes the
// calls waiting when it is free (never waiting for more), sends them as one pipeline of EVALSHAs
// and hands each caller its own answer. A lone Check is one EVALSHA as before; under load, many
// Checks share one write and one read, which is where a Redis round trip spends its time. Each
// Check still runs its own script atomically, so decisions are exactly as without batching.
type batcher struct {
	client redis.UniversalClient
	script *redis.Script
	calls  chan *evalCall
	stop   chan struct{}
	wg     sync.WaitGroup
	// refund, when set, is called with the answer of a call whose caller had stopped waiting
	// (gone away, or timed out and fell back) before the answer came.
	refund func(keys []string, args []any, res []int64)
}

type evalCall struct {
	ctx  context.Context
	keys []string
	args []any
	res  []int64
	err  error
	done chan struct{}

	state atomic.Int32 // callPending, then callDelivered or callAbandoned, whichever comes first
}

const (
	callPending int32 = iota
	callDelivered
	callAbandoned
)

const (
	batchWorkers = 4  // pipelines in flight at once
	batchMax     = 64 // Checks in one pipeline
)

func newBatcher(client redis.UniversalClient, script *redis.Script) *batcher {
	b := &batcher{client: client, script: script, calls: make(chan *evalCall), stop: make(chan struct{})}
	for range batchWorkers {
		b.wg.Add(1)
		go b.work()
	}
	return b
}

// run evaluates the script for one Check; ctx bounds the wait. When the caller stops waiting
// while the script is on its way, what the script consumed is refunded when its answer comes:
// the caller's request is then either not served (its client went away; on_store_error closed)
// or counted by the Local fallback, whose usage reaches Redis later.
func (b *batcher) run(ctx context.Context, keys []string, args []any) ([]int64, error) {
	c := &evalCall{ctx: ctx, keys: keys, args: args, done: make(chan struct{})}
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
		b.refund(c.keys, c.args, c.res)
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
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = b.eval(ctx, c)
		b.deliver(c)
		return
	}
	pipe := b.client.Pipeline()
	cmds := make([]*redis.IntSliceCmd, len(batch))
	for i, c := range batch {
		cmds[i] = evalShaCmd(ctx, b.script.Hash(), c)
		_ = pipe.Process(ctx, cmds[i])
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	for i, c := range batch {
		res, err := cmds[i].Result()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			res, err = b.eval(ctx, c)
		}
		c.res, c.err = res, err
		b.deliver(c)
	}
}

// evalShaCmd is EVALSHA with a reply read straight into []int64 (the script answers integers
// only): the generic command would box every value of the reply.
func evalShaCmd(ctx context.Context, sha string, c *evalCall) *redis.IntSliceCmd {
	args := make([]any, 0, 3+len(c.keys)+len(c.args))
	args = append(args, "evalsha", sha, len(c.keys))
	for _, k := range c.keys {
		args = append(args, k)
	}
	args = append(args, c.args...)
	return redis.NewIntSliceCmd(ctx, args...)
}

// eval runs the script for one call, loading it first when Redis does not have it (a restarted
// or emptied Redis).
func (b *batcher) eval(ctx context.Context, c *evalCall) ([]int64, error) {
	res, err := b.process(ctx, c)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := b.script.Load(ctx, b.client).Err(); err != nil {
			return nil, err
		}
		res, err = b.process(ctx, c)
	}
	return res, err
}

func (b *batcher) process(ctx context.Context, c *evalCall) ([]int64, error) {
	cmd := evalShaCmd(ctx, b.script.Hash(), c)
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
