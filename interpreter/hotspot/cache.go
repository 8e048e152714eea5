package hotspot

import (
	"sync/atomic"
	"time"

	"github.com/stackline-dev/stackline/interpreter/namecache"
)

// CacheConfig bounds what is kept of the VMs' methods (names, line
// tables) and compiled code (the methods inlined at a code address).
type CacheConfig struct {
	// MaxBytes bounds the bytes held for all processes together.
	MaxBytes int64
	// MaxProcessBytes bounds the bytes held for one process.
	MaxProcessBytes int64
	// TTL drops an entry unused this long (0 keeps it until evicted).
	TTL time.Duration
}

// DefaultCacheConfig is the default of --jvm-cache-bytes and
// --jvm-process-cache-bytes.
var DefaultCacheConfig = CacheConfig{MaxBytes: 32 << 20, MaxProcessBytes: 4 << 20}

// Cache is the bound shared by the JVMs attached to, and its counters.
// It is safe for concurrent use.
type Cache struct {
	cfg     CacheConfig
	budget  *namecache.Budget
	unnamed atomic.Uint64
}

// NewCache returns a Cache bounded by cfg.
func NewCache(cfg CacheConfig) *Cache {
	b := namecache.NewBudget(cfg.MaxBytes)
	b.SetTTL(cfg.TTL)
	return &Cache{cfg: cfg, budget: b}
}

// CacheStats are a Cache's counters.
type CacheStats struct {
	namecache.Stats
	// Unnamed counts Java frames that could not be named: the method or
	// code was gone or changed by the time it was read, or its data was
	// malformed.
	Unnamed uint64
}

// Stats returns c's counters.
func (c *Cache) Stats() CacheStats {
	return CacheStats{Stats: c.budget.Stats(), Unnamed: c.unnamed.Load()}
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
	// keyCode is a compiled method's debug data (compiledCode): nmethod
	// and its check value, off 0.
	keyCode
)

// processCache is one process's share of a Cache. Only its instance's
// caller uses it (the tracer's Run goroutine).
type processCache struct {
	c *Cache
	*namecache.Cache[cacheKey, any]
}

func (c *Cache) newProcess() *processCache {
	return &processCache{c: c, Cache: namecache.New[cacheKey, any](c.budget, c.cfg.MaxProcessBytes)}
}
