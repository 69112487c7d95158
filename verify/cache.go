package verify

import (
	"sync"
)

// cache maps key hashes to resolved entries, and unknown hashes to a negative mark until a
// deadline. It is sharded so that concurrent readers on many cores do not contend; each shard
// is bounded, and a full shard evicts an arbitrary entry (Go's randomised map iteration), which
// approximates random eviction without bookkeeping on the read path.
type cache struct {
	shards [cacheShards]shard
	max    int // entries per shard
}

const cacheShards = 64

type shard struct {
	mu sync.RWMutex
	m  map[[32]byte]slot
}

// slot is a positive entry (e != nil) or a negative one (e == nil). deadline is a Unix-nano time
// after which the slot is stale; 0 means it stays until invalidated.
type slot struct {
	e        *Entry
	deadline int64
}

func newCache(maxEntries int) *cache {
	c := &cache{max: max(1, maxEntries/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]slot)
	}
	return c
}

func (c *cache) shard(h *[32]byte) *shard { return &c.shards[h[0]%cacheShards] }

// peek returns the slot for h, fresh or not: the caller checks the deadline.
func (c *cache) peek(h *[32]byte) (slot, bool) {
	s := c.shard(h)
	s.mu.RLock()
	v, ok := s.m[*h]
	s.mu.RUnlock()
	return v, ok
}

func (c *cache) put(h *[32]byte, v slot) {
	s := c.shard(h)
	s.mu.Lock()
	if _, ok := s.m[*h]; !ok && len(s.m) >= c.max {
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
	s.m[*h] = v
	s.mu.Unlock()
}

func (c *cache) delete(h []byte) {
	if len(h) != 32 {
		return
	}
	var k [32]byte
	copy(k[:], h)
	s := c.shard(&k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// deleteIf drops every positive entry for which drop returns true. It walks the whole cache,
// which is fine for the rare changes that call it (a consumer or plan changed).
func (c *cache) deleteIf(drop func(*Entry) bool) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, v := range s.m {
			if v.e != nil && drop(v.e) {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// clear empties the cache.
func (c *cache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
