package reporter

import (
	"time"

	"github.com/elastic/go-freelru"
)

// growingLRU is a freelru.LRU that holds at most max entries but starts
// with room for fewer and grows as it fills: a freelru allocates all of its
// capacity up front, which for the default frame cache is 1.5 MB, mostly
// unused on a quiet host.
//
// Growing moves the entries, least recently used first, into a cache four
// times larger (at most max), keeping their order. freelru does not say
// how long an entry has left, so a moved entry's lifetime starts anew: the
// owner purges expired entries before it grows the cache, which happens at
// most a few times (log4 of max/initial), and an entry moved then stays at
// most one lifetime longer than it would have.
type growingLRU[K comparable, V any] struct {
	*freelru.LRU[K, V]
	capacity, max uint32
	hash          freelru.HashKeyCallback[K]
	lifetime      time.Duration
	onEvict       freelru.OnEvictCallback[K, V]
}

// newGrowingLRU returns a cache with room for min(initial, max) entries,
// which grows to max.
func newGrowingLRU[K comparable, V any](initial, max uint32, hash freelru.HashKeyCallback[K], lifetime time.Duration) (*growingLRU[K, V], error) {
	c := &growingLRU[K, V]{capacity: min(initial, max), max: max, hash: hash, lifetime: lifetime}
	lru, err := freelru.New[K, V](c.capacity, hash)
	if err != nil {
		return nil, err
	}
	lru.SetLifetime(lifetime)
	c.LRU = lru
	return c, nil
}

// SetOnEvict sets the function called for each entry that leaves the
// cache; entries moved by growing do not leave it.
func (c *growingLRU[K, V]) SetOnEvict(f freelru.OnEvictCallback[K, V]) {
	c.onEvict = f
	c.LRU.SetOnEvict(f)
}

// full reports whether adding an entry not in the cache would evict
// another although the cache may grow.
func (c *growingLRU[K, V]) full() bool {
	return c.capacity < c.max && uint32(c.Len()) >= c.capacity
}

// grow moves the entries into a cache four times larger, at most max.
func (c *growingLRU[K, V]) grow() {
	capacity := uint32(min(uint64(c.capacity)*4, uint64(c.max)))
	lru, err := freelru.New[K, V](capacity, c.hash)
	if err != nil {
		// Only invalid arguments fail, and these were valid for the
		// smaller cache: keep it.
		return
	}
	lru.SetLifetime(c.lifetime)
	c.LRU.SetOnEvict(nil)
	for {
		k, v, ok := c.LRU.RemoveOldest()
		if !ok {
			break
		}
		lru.Add(k, v)
	}
	lru.SetOnEvict(c.onEvict)
	c.LRU, c.capacity = lru, capacity
}
