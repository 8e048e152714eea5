package tracer

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// TestShrunkCapacity: a table that stopped growing is copied into the
// pages of rows it uses, only when that gives back at least two pages
// and an eighth of its array.
func TestShrunkCapacity(t *testing.T) {
	for _, c := range []struct {
		used, capacity, want int
		ok                   bool
	}{
		{used: 1, capacity: 1024, want: 512, ok: false},     // one page back: not worth a map
		{used: 1, capacity: 1536, want: 512, ok: true},      // two pages
		{used: 512, capacity: 1536, want: 512, ok: true},    // whole pages: no margin
		{used: 513, capacity: 2048, want: 1024, ok: true},   // the rest of the last page
		{used: 6000, capacity: 12288, want: 6144, ok: true}, // a region's doubling
		{used: 90000, capacity: 100352, want: 90112, ok: false},
		{used: 90000, capacity: 103424, want: 90112, ok: true},
		{used: 6144, capacity: 6144, want: 6144, ok: false}, // shrunk already
	} {
		got, ok := shrunkCapacity(c.used, c.capacity)
		if got != c.want || ok != c.ok {
			t.Errorf("shrunkCapacity(%d, %d) = %d, %v; want %d, %v", c.used, c.capacity, got, ok, c.want, c.ok)
		}
		if got < c.used || got%minSpareRows != 0 {
			t.Errorf("shrunkCapacity(%d, %d) = %d: not whole pages holding the rows in use", c.used, c.capacity, got)
		}
	}
}

// TestRegionsShrinkIdle: expire gives back the spare room of a table
// built by region once it gained no region for regionIdle, and not
// before, nor while regions are asked or built, nor of a table no
// process maps; its regions keep the whole table's rows, and a region
// asked after grows it again.
func TestRegionsShrinkIdle(t *testing.T) {
	rf := openRegionFile(t, regionFiles["libc"])
	maps := newMemMaps()
	s, tb := regionStore(t, maps, rf, []uint32{0}, false, 1<<30)
	rt := withSpareRoom(t, s, tb, rf)
	loaded := rt.loaded
	capacity := rt.capacity
	expireAt := func(d time.Duration) {
		t.Helper()
		if gone := s.expire(loaded.Add(d)); len(gone) > 0 {
			t.Fatalf("%d tables expired", len(gone))
		}
	}
	expireAt(regionIdle / 2)
	if len(maps.tables[tb.key]) != capacity {
		t.Fatalf("shrunk %v after the last region: %d rows of %d", regionIdle/2, len(maps.tables[tb.key]), capacity)
	}
	for _, c := range []struct {
		name string
		set  func(on bool)
	}{
		{"asked", func(on bool) {
			rt.asked = nil
			if on {
				rt.asked = []uint32{3}
			}
		}},
		{"building", func(on bool) { rt.building = on }},
		{"idle", func(on bool) {
			// No process maps the file since a second ago: it is
			// unloaded at idleTTL.
			tb.refs, tb.idle = 1, time.Time{}
			if on {
				tb.refs, tb.idle = 0, loaded.Add(regionIdle)
			}
		}},
	} {
		c.set(true)
		expireAt(regionIdle + time.Second)
		c.set(false)
		if len(maps.tables[tb.key]) != capacity {
			t.Fatalf("shrunk while %s", c.name)
		}
	}
	expireAt(regionIdle + time.Second)
	rows := maps.tables[tb.key]
	want, _ := shrunkCapacity(rt.used, capacity)
	if len(rows) != want || rt.capacity != want || tb.bytes != uint64(want)*rowBytes || s.used != tb.bytes {
		t.Fatalf("after %v: array of %d rows (capacity %d, %d bytes, store %d), want %d", regionIdle, len(rows), rt.capacity, tb.bytes, s.used, want)
	}
	if rt.tab == nil || s.partial[tb.id] != tb || tb.rows != uint32(rt.used) {
		t.Fatalf("shrunk table not held to add regions to: held %v, partial %v, rows %d of %d", rt.tab != nil, s.partial[tb.id] != nil, tb.rows, rt.used)
	}
	checkRegions(t, rows, rf, rt, 1)
	expireAt(3 * regionIdle)
	if &maps.tables[tb.key][0] != &rows[0] {
		t.Fatal("shrunk again")
	}
	addBuilt(t, s, tb, rf, []uint32{uint32(rf.n - 1)})
	if len(maps.tables[tb.key]) <= want || !rt.has(uint64(rf.n-1)) {
		t.Fatalf("a region asked after the shrink: %d rows, region added %v", len(maps.tables[tb.key]), rt.has(uint64(rf.n-1)))
	}
	checkRegions(t, maps.tables[tb.key], rf, rt, 1)
}

// TestRegionsShrinkInBPF: the spare room of a table built by region, in a
// real eBPF array entered in unwind_tables, is given back once it stopped
// growing: a smaller array replaces it under its key, and its rows, read
// through unwind_tables, find the whole table's rule in every region
// built; a region added afterwards grows it again.
func TestRegionsShrinkInBPF(t *testing.T) {
	testenv.RequireBPF(t)
	rf := openRegionFile(t, cc1)
	maps, outer := tableMaps(t)
	s, tb := regionStore(t, maps, rf, []uint32{1, 5}, false, 1<<30)
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.remove(tb)
	})
	rt := withSpareRoom(t, s, tb, rf)
	// loaded returns the rows in use of the table entered under tb's key
	// in unwind_tables, and the rows of its array.
	loaded := func() ([]uint64, int) {
		t.Helper()
		var id ebpf.MapID
		if err := outer.Lookup(tb.key, &id); err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		var rows []uint64
		err = withMapped(m, 0, rt.used, unix.PROT_READ, func(r []uint64) error {
			rows = append(rows, r...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return rows, int(m.MaxEntries())
	}
	rows, before := loaded()
	checkRegions(t, rows, rf, rt, 1)
	if _, ok := shrunkCapacity(rt.used, before); !ok {
		t.Fatalf("%d rows in use of %d: the test wants spare room", rt.used, before)
	}
	bytesBefore := s.used
	if gone := s.expire(rt.loaded.Add(regionIdle + time.Second)); len(gone) > 0 {
		t.Fatalf("%d tables expired", len(gone))
	}
	rows, after := loaded()
	want, _ := shrunkCapacity(rt.used, before)
	if after != want {
		t.Fatalf("array of %d rows after the shrink, want %d (%d in use, %d before)", after, want, rt.used, before)
	}
	if s.used >= bytesBefore || tb.bytes != s.used {
		t.Fatalf("kernel bytes %d after the shrink, %d before", s.used, bytesBefore)
	}
	checkRegions(t, rows, rf, rt, 1)
	t.Logf("%d rows in use: array of %d rows (%d bytes) shrunk to %d (%d bytes)", rt.used, before, bytesBefore, after, s.used)
	last := uint32(rf.n - 1)
	addBuilt(t, s, tb, rf, []uint32{last - 1, last})
	rows, grown := loaded()
	if grown <= after || !rt.has(uint64(last-1)) || !rt.has(uint64(last)) {
		t.Fatalf("regions added after the shrink: array of %d rows, added %v", grown, rt.has(uint64(last-1)) && rt.has(uint64(last)))
	}
	checkRegions(t, rows, rf, rt, 1)
}

// withSpareRoom adds regions of rf, from the second on, to tb's table
// until its array has spare room to give back, and returns its state.
func withSpareRoom(t *testing.T, s *tableStore, tb *unwindTable, rf regionFile) *regionTable {
	t.Helper()
	rt := tb.regions
	for r := uint32(1); ; r++ {
		if _, ok := shrunkCapacity(rt.used, rt.capacity); ok {
			return rt
		}
		if int(r) >= rf.n-2 {
			t.Fatalf("%d rows in use of %d: the test wants spare room", rt.used, rt.capacity)
		}
		addBuilt(t, s, tb, rf, []uint32{r})
	}
}
