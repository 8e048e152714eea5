package v8

import "github.com/stackline-dev/stackline/interpreter/namecache"

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
	check [4]uint64
	value any
}

// cache is one process's least-recently-used cache of what was read from
// V8 objects, bounded in bytes (an estimate of what each entry holds)
// per process and, through the shared budget, for all processes. An entry
// carries a check value: fields of the object read again on every use,
// which change when the object is replaced at the same address (a moved
// or collected object's memory reused), so a stale entry is dropped, not
// used.
type cache struct {
	budget *namecache.Budget
	*namecache.Cache[cacheKey, cacheEntry]
}

func newCache(limit int64, budget *namecache.Budget) *cache {
	return &cache{budget: budget, Cache: namecache.New[cacheKey, cacheEntry](budget, limit)}
}

// get returns the value cached for key if its check value is check.
func (c *cache) get(key cacheKey, check [4]uint64) (any, bool) {
	e, ok := c.Get(key)
	if !ok {
		return nil, false
	}
	if e.check != check {
		c.Stale(key)
		return nil, false
	}
	return e.value, true
}

// put caches value of size bytes, evicting the least recently used
// entries as the bounds require. A value that does not fit is not
// cached.
func (c *cache) put(key cacheKey, check [4]uint64, size int64, value any) {
	c.Add(key, cacheEntry{check: check, value: value}, size)
}
