package hotspot

import (
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// CacheConfig bounds what is kept of the VMs' methods (names, line
// tables) and compiled code (the methods inlined at a code address).
type CacheConfig struct {
	// MaxBytes bounds the bytes held for all processes together.
	MaxBytes int64
	// MaxProcessBytes bounds the bytes held for one process.
	MaxProcessBytes int64
}

// DefaultCacheConfig is the default of --jvm-cache-bytes and
// --jvm-process-cache-bytes.
var DefaultCacheConfig = CacheConfig{MaxBytes: 32 << 20, MaxProcessBytes: 4 << 20}

// Cache is the bound shared by the JVMs attached to, and its counters.
// It is safe for concurrent use.
type Cache struct {
	cfg                     CacheConfig
	used                    atomic.Int64
	hits, misses, evictions atomic.Uint64
	unnamed                 atomic.Uint64
}

// NewCache returns a Cache bounded by cfg.
func NewCache(cfg CacheConfig) *Cache { return &Cache{cfg: cfg} }

// CacheStats are a Cache's counters.
type CacheStats struct {
	// Bytes is what is held now.
	Bytes int64
	// Hits and Misses count lookups of methods and compiled code;
	// Evictions entries dropped to stay within the bounds.
	Hits, Misses, Evictions uint64
	// Unnamed counts Java frames that could not be named: the method or
	// code was gone or changed by the time it was read, or its data was
	// malformed.
	Unnamed uint64
}

// Stats returns c's counters.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Bytes:     c.used.Load(),
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Evictions: c.evictions.Load(),
		Unnamed:   c.unnamed.Load(),
	}
}

// cacheKey identifies a cached entry in one process: a method (Method*
// and its check value) or one code address of a compiled method
// (nmethod, compile id, pc offset).
type cacheKey struct {
	kind  uint8
	addr  uint64
	check uint32
	off   uint32
}

const (
	keyMethod uint8 = iota + 1
	keyCompiled
	keyStub
)

type cacheEntry struct {
	value any
	bytes int64
}

// processCache is one process's share of a Cache. Only its instance's
// caller uses it (the tracer's Run goroutine).
type processCache struct {
	c     *Cache
	lru   *simplelru.LRU[cacheKey, cacheEntry]
	bytes int64
}

// maxEntries bounds a process's entries whatever their bytes.
const maxEntries = 1 << 16

func (c *Cache) newProcess() *processCache {
	p := &processCache{c: c}
	lru, err := simplelru.NewLRU[cacheKey, cacheEntry](maxEntries, func(_ cacheKey, e cacheEntry) {
		p.bytes -= e.bytes
		c.used.Add(-e.bytes)
	})
	if err != nil {
		panic(err) // maxEntries > 0 is a constant
	}
	p.lru = lru
	return p
}

func (p *processCache) get(k cacheKey) (any, bool) {
	e, ok := p.lru.Get(k)
	if ok {
		p.c.hits.Add(1)
		return e.value, true
	}
	p.c.misses.Add(1)
	return nil, false
}

// add caches v of about n bytes, evicting the process's least recently
// used entries while it or all processes hold more than their bound. An
// entry larger than the process's bound is not kept.
func (p *processCache) add(k cacheKey, v any, n int64) {
	cfg := p.c.cfg
	if n > cfg.MaxProcessBytes || n > cfg.MaxBytes {
		return
	}
	p.lru.Add(k, cacheEntry{value: v, bytes: n})
	p.bytes += n
	p.c.used.Add(n)
	for p.lru.Len() > 1 && (p.bytes > cfg.MaxProcessBytes || p.c.used.Load() > cfg.MaxBytes) {
		p.lru.RemoveOldest()
		p.c.evictions.Add(1)
	}
}

// close gives back the process's bytes.
func (p *processCache) close() { p.lru.Purge() }
