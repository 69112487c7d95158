package gateway

import (
	"container/list"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// responseCache is one route's cache of 200 answers to GET, bounded in bytes, least recently
// used first out. Keys are route, cleaned path, query (without api_key) and plan.
type responseCache struct {
	ttl      time.Duration
	max      int64
	maxEntry int64

	mu    sync.Mutex
	ll    list.List // of *cachedResponse, most recent at the front
	items map[string]*list.Element
	size  int64
}

type cachedResponse struct {
	key     string
	header  http.Header
	body    []byte
	stored  time.Time
	expires time.Time
}

func (c *cachedResponse) cost() int64 {
	n := int64(len(c.key) + len(c.body) + 64)
	for k, vs := range c.header {
		n += int64(len(k))
		for _, v := range vs {
			n += int64(len(v))
		}
	}
	return n
}

func newResponseCache(ttl time.Duration, max int64) *responseCache {
	return &responseCache{ttl: ttl, max: max, maxEntry: max / 8, items: map[string]*list.Element{}}
}

func (c *responseCache) get(key string, now time.Time) *cachedResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil
	}
	e := el.Value.(*cachedResponse)
	if !now.Before(e.expires) {
		c.remove(el)
		return nil
	}
	c.ll.MoveToFront(el)
	return e
}

func (c *responseCache) put(e *cachedResponse) {
	cost := e.cost()
	if cost > c.maxEntry {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.remove(el)
	}
	c.items[e.key] = c.ll.PushFront(e)
	c.size += cost
	for c.size > c.max {
		c.remove(c.ll.Back())
	}
}

func (c *responseCache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*cachedResponse)
	delete(c.items, e.key)
	c.size -= e.cost()
}

func (c *responseCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// write answers from the cache. The stored header slices are shared read-only, clipped so that
// an append by a later writer copies them.
func (e *cachedResponse) write(w http.ResponseWriter, now time.Time) {
	h := w.Header()
	for k, v := range e.header {
		h[k] = v[:len(v):len(v)]
	}
	h["Age"] = []string{strconv.FormatInt(int64(now.Sub(e.stored)/time.Second), 10)}
	h["Cache-Status"] = []string{"keygate; hit; ttl=" + strconv.FormatInt(ceilSeconds(e.expires.Sub(now)), 10)}
	h["Content-Length"] = []string{strconv.Itoa(len(e.body))}
	w.WriteHeader(http.StatusOK)
	w.Write(e.body)
}

// cacheable reports whether an upstream answer may be stored: a 200 without Set-Cookie, not
// private/no-store/no-cache, and without Vary (variants are not told apart).
func cacheable(resp *http.Response) bool {
	if resp.StatusCode != http.StatusOK {
		return false
	}
	h := resp.Header
	if len(h["Set-Cookie"]) > 0 || len(h["Vary"]) > 0 {
		return false
	}
	for _, v := range h["Cache-Control"] {
		for _, d := range strings.Split(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if name, _, _ := strings.Cut(d, "="); name == "private" || name == "no-store" || name == "no-cache" {
				return false
			}
		}
	}
	return true
}

// cacheTee stores the body it reads once the upstream has sent all of it.
type cacheTee struct {
	io.ReadCloser
	c    *responseCache
	e    *cachedResponse
	want int64 // Content-Length, -1 when unknown
	buf  []byte
	over bool
	done bool
}

func (t *cacheTee) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if !t.over {
		if int64(len(t.buf)+n) > t.c.maxEntry {
			t.over, t.buf = true, nil
		} else {
			t.buf = append(t.buf, p[:n]...)
		}
	}
	if err == io.EOF && !t.over && !t.done && (t.want < 0 || int64(len(t.buf)) == t.want) {
		t.done = true
		t.e.body = t.buf
		t.c.put(t.e)
	}
	return n, err
}
