package v8

import (
	"container/list"
	"sync/atomic"
)

// Budget bounds the bytes all processes' caches hold together. Processes
// share one Budget; each process also has its own limit.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a Budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Used returns the bytes held.
func (b *Budget) Used() int64 { return b.used.Load() }

// tryTake takes n bytes if that keeps the budget within its limit.
func (b *Budget) tryTake(n int64) bool {
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

func (b *Budget) release(n int64) { b.used.Add(-n) }

// cacheKind separates the objects cached under their addresses.
type cacheKind uint8

const (
	kindSFI cacheKind = iota + 1
	kindScript
	kindCode
)

type cacheKey struct {
	kind cacheKind
	addr uint64
}

type cacheEntry struct {
	key   cacheKey
	check [4]uint64
	size  int64
	value any
}

// cache is one process's least-recently-used cache of what was read from
// V8 objects, bounded in bytes (an estimate of what each entry holds)
// per process and, through the shared Budget, for all processes. An entry
// carries a check value: fields of the object read again on every use,
// which change when the object is replaced at the same address (a moved
// or collected object's memory reused), so a stale entry is dropped, not
// used.
type cache struct {
	limit   int64
	used    int64
	budget  *Budget
	order   *list.List // front: most recently used
	entries map[cacheKey]*list.Element

	hits, misses, stale, evictions uint64
}

func newCache(limit int64, budget *Budget) *cache {
	return &cache{limit: limit, budget: budget, order: list.New(), entries: map[cacheKey]*list.Element{}}
}

// get returns the value cached for key if its check value is check.
func (c *cache) get(key cacheKey, check [4]uint64) (any, bool) {
	el, ok := c.entries[key]
	if !ok {
		c.misses++
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if e.check != check {
		c.stale++
		c.remove(el)
		return nil, false
	}
	c.hits++
	c.order.MoveToFront(el)
	return e.value, true
}

// put caches value of size bytes, evicting the least recently used
// entries as the bounds require. A value that does not fit is not
// cached.
func (c *cache) put(key cacheKey, check [4]uint64, size int64, value any) {
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	if size > c.limit {
		return
	}
	for c.used+size > c.limit && c.order.Len() > 0 {
		c.remove(c.order.Back())
		c.evictions++
	}
	for !c.budget.tryTake(size) {
		if c.order.Len() == 0 {
			return
		}
		c.remove(c.order.Back())
		c.evictions++
	}
	c.used += size
	c.entries[key] = c.order.PushFront(&cacheEntry{key: key, check: check, size: size, value: value})
}

func (c *cache) remove(el *list.Element) {
	e := c.order.Remove(el).(*cacheEntry)
	delete(c.entries, e.key)
	c.used -= e.size
	c.budget.release(e.size)
}

// clear drops every entry, giving their bytes back to the budget.
func (c *cache) clear() {
	for c.order.Len() > 0 {
		c.remove(c.order.Back())
	}
}
