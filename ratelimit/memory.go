package ratelimit

import (
	"context"
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// Memory is the in-process limiter of a single node. Its counters live in a map split into
// shards, each guarded by one mutex; a Check locks the shards of all its limits (in index order,
// so Checks never deadlock) before it decides, which makes the all-or-nothing rule and exact
// quotas hold under any concurrency. A key's shard is chosen by the part of the key before its
// last ':' (the owner, as in "k:<id>:burst"), so the limits of one owner cost one lock.
type Memory struct {
	o      options
	now    func() time.Time
	seed   SeedFunc
	hash   maphash.Seed
	mask   uint64
	shards []shard

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ Limiter = (*Memory)(nil)

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
	_  [48]byte // keep neighbouring shards' locks off one cache line
}

// entry is one counter, guarded by its shard's mutex.
type entry struct {
	kind Kind
	// Window: the TAT, ns + frac/limit (see gcra), and the arithmetic of its limit, cached
	// because its divisions are a good part of a Check.
	tat, frac int64
	g         gcra
	// Quotas: the period counted, unix ns, and the usage in it; learned is when that usage
	// came from Redis (see remember), 0 once this limiter counts on its own.
	start, end, used, learned int64
}

// NewMemory returns an in-process limiter. Its sweeper goroutine runs until Close.
func NewMemory(opts ...Option) *Memory {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return newMemory(o)
}

func newMemory(o options) *Memory {
	n := 1
	for n < o.shards {
		n <<= 1
	}
	m := &Memory{
		o:      o,
		now:    o.now,
		seed:   o.seed,
		hash:   maphash.MakeSeed(),
		mask:   uint64(n - 1),
		shards: make([]shard, n),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].m = make(map[string]*entry)
	}
	if o.sweepEvery > 0 {
		go m.sweeper(o.sweepEvery)
	} else {
		close(m.done)
	}
	return m
}

// Close stops the sweeper and waits for it. The limiter keeps answering after Close.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() { close(m.stop) })
	<-m.done
	return nil
}

// maxStack is the number of limits a Check handles without allocating.
const maxStack = 8

// Check implements Limiter. It never returns an error.
func (m *Memory) Check(ctx context.Context, limits []Limit, cost int64, d *Decision) error {
	var idxBuf, lockBuf [maxStack]uint32
	var entBuf [maxStack]*entry
	idx, locks, ents := idxBuf[:0], lockBuf[:0], entBuf[:0]
	if len(limits) > maxStack {
		idx, locks, ents = make([]uint32, 0, len(limits)), make([]uint32, 0, len(limits)), make([]*entry, 0, len(limits))
	}
	prev := ""
	for i := range limits {
		o := owner(limits[i].Key)
		if i > 0 && o == prev {
			idx = append(idx, idx[i-1])
			continue
		}
		idx = append(idx, uint32(maphash.String(m.hash, o)&m.mask))
		prev = o
	}
	locks = sortedUnique(locks, idx)

	for {
		now := m.now().UnixNano()
		m.lock(locks)
		ents = ents[:0]
		missing := -1
		for i := range limits {
			e := m.shards[idx[i]].m[limits[i].Key]
			if e == nil {
				if m.seed != nil && limits[i].Kind.isQuota() {
					missing = i
					break
				}
				e = &entry{kind: limits[i].Kind}
				m.shards[idx[i]].m[limits[i].Key] = e
			}
			ents = append(ents, e)
		}
		if missing < 0 {
			decide(limits, ents, cost, now, d)
			m.unlock(locks)
			return nil
		}
		// Seed outside the locks (it is I/O), then start over: another Check may have
		// created the entry meanwhile, and then its count wins.
		m.unlock(locks)
		m.seedQuota(ctx, &limits[missing], idx[missing], now)
	}
}

// owner is the part of key before its last ':', which picks the shard.
func owner(key string) string {
	if i := strings.LastIndexByte(key, ':'); i > 0 {
		return key[:i]
	}
	return key
}

func (m *Memory) shardIndex(key string) uint32 {
	return uint32(maphash.String(m.hash, owner(key)) & m.mask)
}

func (m *Memory) lock(locks []uint32) {
	for _, i := range locks {
		m.shards[i].mu.Lock()
	}
}

func (m *Memory) unlock(locks []uint32) {
	for _, i := range locks {
		m.shards[i].mu.Unlock()
	}
}

// sortedUnique appends the distinct values of idx to dst in increasing order.
func sortedUnique(dst, idx []uint32) []uint32 {
next:
	for _, v := range idx {
		i := len(dst)
		for i > 0 && dst[i-1] >= v {
			if dst[i-1] == v {
				continue next
			}
			i--
		}
		dst = append(dst, 0)
		copy(dst[i+1:], dst[i:])
		dst[i] = v
	}
	return dst
}

// seedQuota creates the missing quota entry of l from the seed. A failing seed counts from 0:
// the memory limiter has no store to fail over to.
func (m *Memory) seedQuota(ctx context.Context, l *Limit, shardIdx uint32, now int64) {
	e := &entry{kind: l.Kind}
	e.start, e.end = periodBounds(l.Kind, now)
	ctx, cancel := m.o.seedCtx(ctx)
	if used, err := m.seed(ctx, l.Key, l.Kind, time.Unix(0, e.start).UTC()); err == nil && used > 0 {
		e.used = used
	}
	cancel()
	s := &m.shards[shardIdx]
	s.mu.Lock()
	if s.m[l.Key] == nil {
		s.m[l.Key] = e
	}
	s.mu.Unlock()
}

// remember sets a quota counter to a usage learnt at learned (unix ns) from elsewhere (the
// Redis limiter's last answer), so that this limiter, as a fallback, starts from it.
func (m *Memory) remember(key string, kind Kind, start, end, used, learned int64) {
	s := &m.shards[m.shardIndex(key)]
	s.mu.Lock()
	if e := s.m[key]; e != nil {
		*e = entry{kind: kind, start: start, end: end, used: used, learned: learned}
	} else {
		s.m[key] = &entry{kind: kind, start: start, end: end, used: used, learned: learned}
	}
	s.mu.Unlock()
}

// learnedAt returns when the quota counter of key was last set by remember, 0 if never or if
// this limiter has counted on its own since.
func (m *Memory) learnedAt(key string) int64 {
	s := &m.shards[m.shardIndex(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[key]; e != nil && e.kind.isQuota() {
		return e.learned
	}
	return 0
}

// raise brings the quota counter of key up to used (if it counts the period starting at
// start), and marks it as this limiter's own from now on.
func (m *Memory) raise(key string, start, used int64) {
	s := &m.shards[m.shardIndex(key)]
	s.mu.Lock()
	if e := s.m[key]; e != nil && e.kind.isQuota() {
		if e.start == start {
			e.used = max(e.used, used)
		}
		e.learned = 0
	}
	s.mu.Unlock()
}

// decide is the limiter proper, on locked entries: the same rules as check.lua.
func decide(limits []Limit, ents []*entry, cost, now int64, d *Decision) {
	need := max(cost, 1)
	d.Allowed, d.Denied, d.RetryAfter = true, -1, 0
	d.States = d.States[:0]

	// Pass 1: which limits refuse, without touching anything.
	for i := range limits {
		l, e := &limits[i], ents[i]
		var ok bool
		var retry int64
		if l.Kind.isQuota() {
			e.rollover(l.Kind, now)
			ok = l.Limit >= 1 && e.used <= l.Limit-need
			retry = e.end - now
		} else {
			g, valid := e.window(l)
			switch {
			case !valid:
				retry = int64(time.Second)
			case need > l.Limit: // never admitted
				retry = g.period
			default:
				ns, frac := e.tat, e.frac
				if ns < now {
					ns, frac = now, 0
				}
				ns, frac = g.add(ns, frac, need)
				ok = g.fits(ns, frac, now)
				retry = ceilSince(ns, frac, now) - g.period
			}
		}
		if !ok {
			d.Allowed = false
			if retry > int64(d.RetryAfter) || d.Denied < 0 {
				d.Denied, d.RetryAfter = i, time.Duration(max(retry, 1))
			}
		}
	}

	// Pass 2: consume (only when every limit agreed) and report.
	consume := d.Allowed && cost > 0
	for i := range limits {
		l, e := &limits[i], ents[i]
		st := State{Name: l.Name, Kind: l.Kind, Limit: l.Limit}
		if l.Kind.isQuota() {
			if consume {
				e.used += cost
			}
			st.Remaining = min(max(l.Limit-e.used, 0), max(l.Limit, 0))
			st.Reset = time.Duration(e.end - now)
			st.Window = time.Duration(e.end - e.start)
		} else {
			st.Window = l.Period
			if g, valid := e.window(l); valid {
				ns, frac := e.tat, e.frac
				if ns < now {
					ns, frac = now, 0
				}
				if consume {
					ns, frac = g.add(ns, frac, cost)
					e.tat, e.frac = ns, frac
				}
				st.Remaining = g.remaining(ns, frac, now)
				st.Reset = time.Duration(ceilSince(ns, frac, now))
			}
		}
		d.States = append(d.States, st)
	}
}

// window returns the arithmetic of l, cached in the entry, and turns the entry into a window
// of l if it was something else (the configuration changed). ok is false for a limit that is
// no valid window (nor a quota: an unknown Kind).
func (e *entry) window(l *Limit) (g gcra, ok bool) {
	if e.kind != Window {
		*e = entry{kind: Window}
	}
	if l.Kind != Window {
		return gcra{}, false
	}
	if e.g.limit != l.Limit || e.g.period != int64(l.Period) {
		g, ok := newGCRA(l.Limit, int64(l.Period))
		if !ok {
			return gcra{}, false
		}
		e.g = g
		if e.frac >= g.limit || g.r == 0 {
			e.frac = 0
		}
	}
	return e.g, true
}

// rollover starts a new period (or a new kind) on a quota entry when now left the one it counts.
func (e *entry) rollover(kind Kind, now int64) {
	if e.kind == kind && now >= e.start && now < e.end {
		return
	}
	start, end := periodBounds(kind, now)
	*e = entry{kind: kind, start: start, end: end}
}

func (m *Memory) sweeper(every time.Duration) {
	defer close(m.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
			m.sweep(m.now().UnixNano())
		}
	}
}

// sweep drops the entries that are as good as absent: windows whole again, quotas whose period
// ended.
func (m *Memory) sweep(now int64) (removed int) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if (e.kind == Window && e.tat <= now) || (e.kind.isQuota() && e.end <= now) {
				delete(s.m, k)
				removed++
			}
		}
		s.mu.Unlock()
	}
	return removed
}

// size is the number of live entries (for tests).
func (m *Memory) size() (n int) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
