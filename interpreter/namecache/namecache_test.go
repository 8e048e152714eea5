package namecache

import (
	"testing"
	"time"
)

func TestProcessLimit(t *testing.T) {
	b := NewBudget(1000)
	c := New[int, string](b, 100)
	for i := range 10 {
		c.Add(i, "x", 30)
	}
	if c.Bytes() != 90 || c.Len() != 3 {
		t.Fatalf("holds %d bytes in %d entries, want 90 in 3", c.Bytes(), c.Len())
	}
	if _, ok := c.Get(9); !ok {
		t.Error("the newest entry was evicted")
	}
	if _, ok := c.Get(0); ok {
		t.Error("the oldest entry was kept")
	}
	s := b.Stats()
	if s.Bytes != 90 || s.Evictions != 7 || s.Hits != 1 || s.Misses != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestSharedBudget(t *testing.T) {
	b := NewBudget(100)
	a, c := New[int, int](b, 80), New[int, int](b, 80)
	a.Add(1, 1, 60)
	c.Add(1, 1, 60) // does not fit beside a's: c holds nothing else to evict
	if c.Len() != 0 || b.Stats().Bytes != 60 {
		t.Fatalf("c holds %d entries, budget %d bytes", c.Len(), b.Stats().Bytes)
	}
	c.Add(2, 2, 30)
	a.Add(2, 2, 20) // a evicts its own oldest to fit the budget
	if _, ok := a.Get(1); ok {
		t.Error("a kept its entry over the shared budget")
	}
	if got := b.Stats().Bytes; got != 50 {
		t.Errorf("budget holds %d bytes, want 50", got)
	}
	a.Purge()
	c.Purge()
	if got := b.Stats().Bytes; got != 0 {
		t.Errorf("purged caches still hold %d bytes of the budget", got)
	}
}

func TestReplaceAndStale(t *testing.T) {
	b := NewBudget(1000)
	c := New[string, int](b, 1000)
	c.Add("k", 1, 10)
	c.Add("k", 2, 40)
	if v, _ := c.Get("k"); v != 2 || c.Bytes() != 40 || b.Stats().Bytes != 40 {
		t.Fatalf("replaced entry: value %d, %d bytes, budget %d", v, c.Bytes(), b.Stats().Bytes)
	}
	c.Stale("k")
	c.Stale("absent")
	if c.Len() != 0 || b.Stats().Stale != 1 || b.Stats().Bytes != 0 {
		t.Errorf("after Stale: %d entries, stats %+v", c.Len(), b.Stats())
	}
	c.Add("big", 1, 1001)
	if c.Len() != 0 {
		t.Error("an entry over the process limit was cached")
	}
}

func TestEntryBound(t *testing.T) {
	b := NewBudget(1 << 40)
	c := New[int, struct{}](b, 1<<40)
	for i := range maxEntries + 10 {
		c.Add(i, struct{}{}, 1)
	}
	if c.Len() != maxEntries || c.Bytes() != maxEntries || b.Stats().Evictions != 10 {
		t.Errorf("%d entries, %d bytes, stats %+v", c.Len(), c.Bytes(), b.Stats())
	}
}

func TestTTL(t *testing.T) {
	b := NewBudget(1000)
	b.SetTTL(time.Minute)
	c := New[int, int](b, 1000)
	var now int64
	c.now = func() int64 { return now }
	c.Add(1, 1, 10)
	c.Add(2, 2, 10)
	now += int64(40 * time.Second)
	if _, ok := c.Get(1); !ok { // 1 used again: 2 is now the older
		t.Fatal("entry 1 gone before its time")
	}
	now += int64(30 * time.Second) // 2 unused for 70 s, 1 for 30 s
	c.Add(3, 3, 10)
	if _, ok := c.Get(2); ok {
		t.Error("entry 2 kept after 70 s unused")
	}
	for _, k := range []int{1, 3} {
		if _, ok := c.Get(k); !ok {
			t.Errorf("entry %d dropped before its time", k)
		}
	}
	if s := b.Stats(); s.Expired != 1 || s.Evictions != 0 || s.Bytes != 20 || c.Bytes() != 20 {
		t.Errorf("stats %+v, cache %d bytes; want 1 expired, 20 bytes", s, c.Bytes())
	}
	// Without a time to live nothing expires.
	b.SetTTL(0)
	now += int64(time.Hour)
	if _, ok := c.Get(1); !ok {
		t.Error("entry expired with no time to live")
	}
}
