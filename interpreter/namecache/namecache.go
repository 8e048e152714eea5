// Package namecache holds what a runtime's frames are named from (function
// names, line tables, inlining) per process, in least-recently-used caches
// bounded in bytes: each process's by its own limit, and all processes of a
// runtime together by a shared Budget, which also counts hits, misses,
// evictions, expiries and stale entries for the agent's self-metrics. With
// a time to live set on the Budget, an entry unused that long is dropped,
// so that caches shrink back once what they named stops running (a JVM's
// recompiled methods, a script's replaced functions).
//
// The bytes of an entry are the caller's estimate of what it holds.
package namecache

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// maxEntries bounds a process's entries whatever their bytes, so a cache
// of many tiny entries stays bounded too.
const maxEntries = 1 << 16

// Budget is the bound that all processes' caches of one runtime share, and
// their counters. It is safe for concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
	ttl   atomic.Int64 // nanoseconds; 0 keeps entries until evicted

	hits, misses, evictions, expired, stale atomic.Uint64
}

// NewBudget returns a Budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// SetTTL makes the caches of b drop entries unused for d, checked as they
// are used (at most once a second per cache); 0, the default, keeps them
// until evicted for room.
func (b *Budget) SetTTL(d time.Duration) { b.ttl.Store(int64(max(d, 0))) }

// Stats are a Budget's counters.
type Stats struct {
	// Bytes is what all caches hold now.
	Bytes int64
	// Hits and Misses count lookups; Evictions, entries dropped to stay
	// within the bounds; Expired, entries dropped after the time to live
	// unused; Stale, entries dropped because what they were read from
	// changed since.
	Hits, Misses, Evictions, Expired, Stale uint64
}

// Stats returns b's counters.
func (b *Budget) Stats() Stats {
	return Stats{
		Bytes:     b.used.Load(),
		Hits:      b.hits.Load(),
		Misses:    b.misses.Load(),
		Evictions: b.evictions.Load(),
		Expired:   b.expired.Load(),
		Stale:     b.stale.Load(),
	}
}

// take takes n bytes if that keeps b within its limit.
func (b *Budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

type entry[V any] struct {
	value V
	bytes int64
	last  int64 // when last added or got, in the cache's clock
}

// expireEvery is how often, at most, a cache looks for expired entries.
const expireEvery = int64(time.Second)

// Cache is one process's cache. It is not safe for concurrent use.
type Cache[K comparable, V any] struct {
	budget *Budget
	limit  int64
	used   int64
	lru    *simplelru.LRU[K, *entry[V]]

	now        func() int64 // monotonic nanoseconds
	lastExpire int64
}

// New returns a cache of at most limit bytes that takes its bytes from
// budget.
func New[K comparable, V any](budget *Budget, limit int64) *Cache[K, V] {
	start := time.Now()
	c := &Cache[K, V]{budget: budget, limit: limit, now: func() int64 { return int64(time.Since(start)) }}
	lru, err := simplelru.NewLRU(maxEntries, func(_ K, e *entry[V]) {
		c.used -= e.bytes
		budget.used.Add(-e.bytes)
	})
	if err != nil {
		panic(err) // maxEntries > 0 is a constant
	}
	c.lru = lru
	return c
}

// Get returns the value cached for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	now := c.now()
	c.expire(now)
	e, ok := c.lru.Get(k)
	if !ok {
		c.budget.misses.Add(1)
		var zero V
		return zero, false
	}
	c.budget.hits.Add(1)
	e.last = now
	return e.value, true
}

// expire drops the entries unused for the budget's time to live, oldest
// first (the LRU's order is the order of last use), at most once every
// expireEvery.
func (c *Cache[K, V]) expire(now int64) {
	ttl := c.budget.ttl.Load()
	if ttl == 0 || now-c.lastExpire < min(expireEvery, ttl) {
		return
	}
	c.lastExpire = now
	for {
		_, e, ok := c.lru.GetOldest()
		if !ok || now-e.last < ttl {
			return
		}
		c.lru.RemoveOldest()
		c.budget.expired.Add(1)
	}
}

// Add caches v of about n bytes under k, replacing what k held, and evicts
// the least recently used entries while the process or the budget would
// hold more than its bound. A value that cannot fit is not cached.
func (c *Cache[K, V]) Add(k K, v V, n int64) {
	now := c.now()
	c.expire(now)
	c.lru.Remove(k)
	if n > c.limit || n > c.budget.limit {
		return
	}
	for c.used+n > c.limit && c.lru.Len() > 0 {
		c.evictOldest()
	}
	for !c.budget.take(n) {
		if c.lru.Len() == 0 {
			return
		}
		c.evictOldest()
	}
	c.used += n
	if c.lru.Add(k, &entry[V]{value: v, bytes: n, last: now}) {
		// maxEntries reached: the oldest went (the callback gave its
		// bytes back).
		c.budget.evictions.Add(1)
	}
}

func (c *Cache[K, V]) evictOldest() {
	c.lru.RemoveOldest()
	c.budget.evictions.Add(1)
}

// Stale drops k's entry because what it was read from changed since.
func (c *Cache[K, V]) Stale(k K) {
	if c.lru.Remove(k) {
		c.budget.stale.Add(1)
	}
}

// Remove drops k's entry.
func (c *Cache[K, V]) Remove(k K) { c.lru.Remove(k) }

// Bytes returns what the cache holds.
func (c *Cache[K, V]) Bytes() int64 { return c.used }

// Len returns the number of entries.
func (c *Cache[K, V]) Len() int { return c.lru.Len() }

// Purge drops every entry, giving their bytes back to the budget.
func (c *Cache[K, V]) Purge() { c.lru.Purge() }
