package tracer

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// A file with at least minRegions regions of code whose call frame information
// can be built by region (nativeunwind.Regional) gets its table region by
// region: a region is an aligned range of regionBytes of file offsets.
// When a trace first has a frame in the file, only the region of that
// frame is built, and a frame in a region not built asks for its region.
// Regions asked while one build is with a build worker go together in
// the next.
//
// The table's array (see unwind_bounds in support/ebpf/unwind_maps.h)
// starts with an index of one entry per region, then holds the rows of
// the regions built, each region's rows together, in the order they were
// built, then spare room. An entry gives the first row and the number of
// rows of its region, or, with no rows, the rule of a region not built:
// ruleUnbuilt, after which the eBPF unwinder stops, as in a file with no
// table yet; for Go code ruleInvalid, which it steps by frame pointer.
// Regions are added in place (tableStore.addRegions): their rows go into
// the spare room, which no entry covers, then their entries are written,
// each with one 8-byte store, so an eBPF lookup on another CPU finds a
// region either whole or not built. When the spare room runs out, the
// table is copied into one twice as large (regionCapacity), which
// replaces it under its key. Mappings give eBPF rowsRegional | the number
// of regions as their number of rows, which stays right as regions are
// added.
//
// 64 KiB: on the whole-agent benchmark, the samples of a minute reach
// 52 of cc1's 352 regions, 70 of node's 545 and 89 of libjvm's 251:
// 16 %, 15 % and 45 % of their rows, against 44 %, 44 % and 75 % with
// 256 KiB regions (35, 50 and 38 of them), and building those regions
// one by one takes 28 ms of CPU instead of 61. Each region first
// reached costs the sample that reaches it its frames below (the
// region is not built yet): about 150 of 2,100 samples in that minute
// instead of 72, most in its first seconds. A region of these files has
// 500-2,000 rows and takes 0.1-0.2 ms to build (BenchmarkBuildRegion),
// little of it fixed.
const (
	regionShift = 16
	regionBytes = 1 << regionShift
	// maxAskedRegions bounds the regions of a file asked for and not
	// built yet; more are asked again by later samples.
	maxAskedRegions = 64
	// minRegions is the least number of regions of code of a file built
	// by region (4 MiB); a smaller one is built whole. Samples reach
	// most of the code of such files anyway (libc, libpython), whose
	// whole tables cost a few milliseconds, and each region found one
	// after the other costs the samples that stop there until it is
	// built (the Python tests fell to 94 % when libpython was built by
	// region).
	minRegions = 4 << 20 >> regionShift
	// rowsRegional is set in the number of rows that mappings give eBPF
	// for a table built by region, with its number of regions.
	rowsRegional = uint32(progs.StacklineUnwindBoundsROWS_REGIONAL)
	// minSpareRows is the least spare room a table built by region is
	// made with: a page of rows.
	minSpareRows = 512
)

// regionShift is eBPF's REGION_SHIFT: this fails to compile otherwise (an
// index out of range, or a negative unsigned constant).
var _ = [1]struct{}{}[progs.StacklineUnwindBoundsREGION_SHIFT-regionShift]

// ruleUnbuilt is the rule of a region not built yet: the eBPF unwinder
// stops after the frame, as in a file with no table yet.
var ruleUnbuilt = uint32(progs.StacklineRuleKindRULE_UNBUILT)

// regionTable is the state of a table built by region. The Run goroutine
// writes its fields under the table store's lock; the build workers read
// them under it (tableStore.takeRegions).
type regionTable struct {
	// n is the file's number of regions; built has a bit set for each
	// region built, count of them.
	n     int
	built []uint64
	count int
	// tab is the table loaded, held open to add regions to; nil once all
	// regions are built. used is the number of its rows in use (the
	// index and the rows of the regions built), capacity the number of
	// rows of its array.
	tab            rowTable
	used, capacity int
	// goCode says the file is Go's: its regions not built are stepped by
	// frame pointer.
	goCode bool
	// asked are the regions asked for, not yet with a build worker;
	// building says a build of regions is with one.
	asked    []uint32
	building bool
	// full says no more regions are added (the table outgrew the
	// budget).
	full bool
	// from is where the last region was asked from, to hand the next
	// build from.
	from regionSource
	// loaded is when regions were last added: the next build waits
	// until regionCoalesce after it, for more regions to go with it.
	loaded time.Time
}

// due returns when the next build of rt's regions may run.
func (rt *regionTable) due(now time.Time) time.Time {
	if due := rt.loaded.Add(regionCoalesce); due.After(now) {
		return due
	}
	return now
}

// regionSource is a process mapping a file, through which its table is
// built.
type regionSource struct {
	pid uint32
	m   mapping
	fi  *fileInfo
}

// has reports whether region r is built.
func (rt *regionTable) has(r uint64) bool {
	return r < uint64(rt.n) && rt.built[r/64]&(1<<(r%64)) != 0
}

// complete reports whether every region is built.
func (rt *regionTable) complete() bool { return rt.count == rt.n }

// regionCount returns the number of regions of code that ends at file
// offset end.
func regionCount(end uint64) int {
	return int((end + regionBytes - 1) >> regionShift)
}

// regionRange returns the file offsets of region r of n: the last one
// reaches to the end of all offsets.
func regionRange(r uint32, n int) nativeunwind.Range {
	rg := nativeunwind.Range{Lo: uint64(r) << regionShift, Hi: uint64(r+1) << regionShift}
	if int(r) == n-1 {
		rg.Hi = nativeunwind.MaxAddr
	}
	return rg
}

// addAsked adds region r to those asked for a file, bounded. It reports
// whether it was added.
func addAsked(asked []uint32, r uint32) ([]uint32, bool) {
	if len(asked) >= maxAskedRegions || slices.Contains(asked, r) {
		return asked, false
	}
	return append(asked, r), true
}

// regionAsk is what a build worker takes to build regions of a file: the
// regions asked, and the state of the table they are added to (nil for
// the first).
type regionAsk struct {
	regions []uint32
	// prev is a copy of the regionTable's regions built, without its
	// table: the rows are added to it by the Run goroutine.
	prev *regionTable
}

// takeRegions takes the regions asked for id's table, and a copy of its
// state when part of it is built. ok is false when the table is known
// and not built by region (whole, or none).
func (s *tableStore) takeRegions(id trace.FileID) (ask regionAsk, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tb := s.tables[id]; tb != nil {
		rt := tb.regions
		if rt == nil || rt.full || rt.tab == nil {
			return regionAsk{}, false
		}
		ask.regions, rt.asked = rt.asked, nil
		ask.prev = &regionTable{n: rt.n, built: slices.Clone(rt.built), count: rt.count, goCode: rt.goCode}
		return ask, true
	}
	if u := s.unbuilt[id]; u != nil {
		ask.regions, u.regions = u.regions, nil
	}
	return ask, true
}

// askRegion asks for region r of tb's table, from src. It reports whether
// a build must be handed to a build worker: none is with one.
func (s *tableStore) askRegion(tb *unwindTable, r uint32, src regionSource) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := tb.regions
	if rt.asked, _ = addAsked(rt.asked, r); !slices.Contains(rt.asked, r) {
		return false // too many asked: a later sample asks again
	}
	rt.from = src
	if rt.building {
		return false
	}
	rt.building = true
	return true
}

// regionsBuilt adds the regions of bt, built for tb's table, to it, and
// reports whether regions were asked meanwhile: the caller hands their
// build to a worker (from rt.from).
func (s *tableStore) regionsBuilt(tb *unwindTable, bt *builtTable, now time.Time) (more bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := tb.regions
	rt.building = false
	s.stats.buildTime += bt.buildTime
	s.stats.invalidRows += bt.invalidRows
	err := bt.err
	if err == nil && bt.add != nil {
		err = s.addRegions(tb, bt.add)
	}
	if err != nil {
		rt.asked = nil
		if errors.Is(err, errTableBudget) || errors.Is(err, nativeunwind.ErrTooLarge) {
			// No more regions: frames in those not built stop
			// there.
			rt.full = true
			rt.drop()
			s.stats.skipped++
			s.log.Warn("unwind table regions not added: frames in them stop there",
				"file", tb.name, "rows", rt.used, "error", err)
			return false
		}
		// The file could not be read (the process it was opened
		// through exited): the next sample there asks again.
		s.log.Debug("unwind table regions not added", "file", tb.name, "error", err)
		return false
	}
	rt.loaded = now
	if rt.complete() {
		// No region is added any more: the spare room goes back now.
		s.shrinkRegions(tb)
		rt.drop()
		delete(s.partial, tb.id)
	}
	// Those asked again while the build was out are in.
	rt.asked = slices.DeleteFunc(rt.asked, func(r uint32) bool { return rt.has(uint64(r)) })
	if len(rt.asked) == 0 {
		return false
	}
	rt.building = true
	return true
}

// keep holds bt's table, just loaded, to add regions to, unless every
// region is built: the table is then unwind_tables', not bt's to close.
func (rt *regionTable) keep(bt *builtTable) {
	if rt.complete() {
		return
	}
	rt.tab = bt.table
	bt.table = nil
}

// drop closes the table held.
func (rt *regionTable) drop() {
	if rt.tab != nil {
		rt.tab.close()
		rt.tab = nil
	}
}

// regionRows are the rows of regions of a file built to add to its table
// built by region: those of regions[i] (sorted) are
// rows[ends[i-1]:ends[i]] (from 0 for the first), packed for eBPF, the
// first at the region's start.
type regionRows struct {
	regions []uint32
	ends    []int
	rows    []uint64
}

// span returns the rows of the i-th region of a.
func (a *regionRows) span(i int) (start, end int) {
	if i > 0 {
		start = a.ends[i-1]
	}
	return start, a.ends[i]
}

// without returns a without the regions rt has built already.
func (a *regionRows) without(rt *regionTable) *regionRows {
	if !slices.ContainsFunc(a.regions, func(r uint32) bool { return rt.has(uint64(r)) }) {
		return a
	}
	b := &regionRows{}
	for i, r := range a.regions {
		if rt.has(uint64(r)) {
			continue
		}
		start, end := a.span(i)
		b.regions = append(b.regions, r)
		b.rows = append(b.rows, a.rows[start:end]...)
		b.ends = append(b.ends, len(b.rows))
	}
	return b
}

// unbuiltEntry returns the index entry of a region not built.
func (rt *regionTable) unbuiltEntry() uint64 {
	if rt.goCode {
		return uint64(ruleInvalid) << 32
	}
	return uint64(ruleUnbuilt) << 32
}

// indexEntry returns the index entry of a region whose count rows start
// at row first.
func indexEntry(first, count int) uint64 {
	return uint64(first)<<32 | uint64(count)
}

// regionCapacity returns the rows of the array of a table built by region
// that needs need rows (at most maxRows): twice as many, at least
// minSpareRows more, all pages of rows. Growing a table then costs a
// constant time per row added, and happens a few times in its life: each
// growth makes a new map, which costs the kernel about half a millisecond
// of CPU whatever its size (BenchmarkAddRegion), more than copying the
// rows.
func regionCapacity(need, maxRows int) int {
	c := need + max(need, minSpareRows)
	c = (c + minSpareRows - 1) / minSpareRows * minSpareRows
	return max(min(c, maxRows), need)
}

// mark records the regions of a as built.
func (rt *regionTable) mark(a *regionRows) {
	for _, r := range a.regions {
		if !rt.has(uint64(r)) {
			rt.built[r/64] |= 1 << (r % 64)
			rt.count++
		}
	}
}

// newRegionTable makes the table of a file of n regions with the regions
// of a, for key, in a new array with spare room (see regionCapacity), on
// a build worker: its rows, then the index, every region not in a with
// the entry of one not built.
func newRegionTable(maps unwinderMaps, key uint64, n int, a *regionRows, goCode bool, maxRows int) (rowTable, *regionTable, error) {
	used := n + len(a.rows)
	if used > maxRows {
		return nil, nil, fmt.Errorf("%w: %d rows", nativeunwind.ErrTooLarge, used)
	}
	rt := &regionTable{n: n, built: make([]uint64, (n+63)/64), used: used, capacity: regionCapacity(used, maxRows), goCode: goCode}
	tab, err := maps.newTable(key, rt.capacity, func(rows []uint64) error {
		copy(rows[n:], a.rows)
		unbuilt := rt.unbuiltEntry()
		for r := range n {
			rows[r] = unbuilt
		}
		for i, r := range a.regions {
			start, end := a.span(i)
			rows[r] = indexEntry(n+start, end-start)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	rt.mark(a)
	return tab, rt, nil
}

// addRegions adds the regions of a, those not built yet, to tb's table,
// built by region: in place, into the spare room, when they fit, else
// into a larger table that replaces it (growRegions). In place, the rows
// go first into room no index entry covers, then each region's index
// entry with one 8-byte store: an eBPF lookup on another CPU meanwhile
// finds each region either not built or whole.
func (s *tableStore) addRegions(tb *unwindTable, a *regionRows) error {
	rt := tb.regions
	if rt.tab == nil {
		return errors.New("add regions: no table held")
	}
	a = a.without(rt)
	if len(a.regions) == 0 {
		return nil
	}
	if slices.ContainsFunc(a.regions, func(r uint32) bool { return int(r) >= rt.n }) {
		return fmt.Errorf("add regions: a region beyond the table's %d", rt.n)
	}
	if rt.used+len(a.rows) > rt.capacity {
		return s.growRegions(tb, a)
	}
	first := rt.used
	if err := rt.tab.write(first, len(a.rows), func(rows []uint64) error {
		copy(rows, a.rows)
		return nil
	}); err != nil {
		return fmt.Errorf("add regions: %w", err)
	}
	lo, hi := a.regions[0], a.regions[len(a.regions)-1]
	return rt.tab.write(int(lo), int(hi-lo)+1, func(index []uint64) error {
		for i, r := range a.regions {
			start, end := a.span(i)
			atomic.StoreUint64(&index[r-lo], indexEntry(first+start, end-start))
		}
		// Entered: the room they cover is in use, whatever comes of
		// unmapping it.
		rt.used += len(a.rows)
		tb.rows = uint32(rt.used)
		rt.mark(a)
		return nil
	})
}

// growRegions copies tb's table, built by region, and the regions of a
// into a new array with spare room, which replaces it in unwind_tables
// within the budget (idle tables are unloaded to make room, not tb).
func (s *tableStore) growRegions(tb *unwindTable, a *regionRows) error {
	rt := tb.regions
	limit := maxRows(s.maxBytes)
	used := rt.used + len(a.rows)
	if used > limit {
		return fmt.Errorf("%w: %d rows", nativeunwind.ErrTooLarge, used)
	}
	return s.copyRegions(tb, a, regionCapacity(used, limit))
}

// copyRegions copies the used part of tb's table, built by region, and
// the regions of a (nil: none) map-to-map into a new array of capacity
// rows, which replaces it in unwind_tables within the budget (idle
// tables are unloaded to make room, not tb). The mappings of the file
// stay right: they name the table by key and number of regions.
func (s *tableStore) copyRegions(tb *unwindTable, a *regionRows, capacity int) error {
	rt := tb.regions
	if a == nil {
		a = &regionRows{}
	}
	used := rt.used + len(a.rows)
	tab, err := s.maps.newTable(tb.key, capacity, func(rows []uint64) error {
		if err := rt.tab.read(rt.used, func(old []uint64) { copy(rows, old) }); err != nil {
			return fmt.Errorf("read the table to copy: %w", err)
		}
		copy(rows[rt.used:], a.rows)
		for i, r := range a.regions {
			start, end := a.span(i)
			rows[r] = indexEntry(rt.used+start, end-start)
		}
		return nil
	})
	if err != nil {
		return err
	}
	need := tab.size()
	if s.used-tb.bytes+need > s.maxBytes {
		tb.refs++
		s.evictIdle(need - tb.bytes)
		tb.refs--
	}
	if s.used-tb.bytes+need > s.maxBytes {
		tab.close()
		return fmt.Errorf("%w: %d bytes needed, %d of %d used", errTableBudget, need, s.used, s.maxBytes)
	}
	if err := s.maps.putTable(tb.key, tab); err != nil {
		tab.close()
		return err
	}
	s.used += need - tb.bytes
	tb.bytes = need
	rt.tab.close()
	rt.tab, rt.used, rt.capacity = tab, used, capacity
	tb.rows = uint32(used)
	rt.mark(a)
	return nil
}

// regionIdle is how long a table built by region gains no region before
// its spare room is given back (shrinkIdle): the regions a long-lived
// process runs in are asked within seconds of its start, or of a change
// in what it does, and then no more.
const regionIdle = time.Minute

// shrunkCapacity returns the rows of the array that a table built by
// region with used rows in use, in an array of capacity rows, is copied
// into once it stopped growing: the pages of rows in use, whose last
// one's rest is the margin. ok is false when that gives back less than
// two pages or an eighth of the array: not worth a new map.
func shrunkCapacity(used, capacity int) (c int, ok bool) {
	c = (used + minSpareRows - 1) / minSpareRows * minSpareRows
	saved := capacity - c
	return c, saved >= 2*minSpareRows && saved >= capacity/8
}

// shrinkRegions copies tb's table, built by region, into an array of the
// rows it uses (shrunkCapacity) when that gives back enough of its
// spare room, and reports whether it did. A region asked later grows the
// table again (growRegions).
func (s *tableStore) shrinkRegions(tb *unwindTable) bool {
	rt := tb.regions
	c, ok := shrunkCapacity(rt.used, rt.capacity)
	if !ok || rt.tab == nil {
		return false
	}
	before := tb.bytes
	if err := s.copyRegions(tb, nil, c); err != nil {
		s.log.Debug("unwind table spare room not given back", "file", tb.name, "error", err)
		return false
	}
	s.log.Debug("unwind table spare room given back", "file", tb.name, "rows", rt.used,
		"bytes", tb.bytes, "before", before)
	return true
}

// shrinkIdle gives back the spare room of the tables built by region,
// held to add regions to, that gained none for regionIdle and wait for no
// build, of files processes map (an idle one is unloaded soon anyway).
// The caller holds s.mu.
func (s *tableStore) shrinkIdle(now time.Time) {
	for _, tb := range s.partial {
		rt := tb.regions
		if tb.refs == 0 || rt.tab == nil || rt.full || rt.building || len(rt.asked) > 0 || now.Sub(rt.loaded) < regionIdle {
			continue
		}
		s.shrinkRegions(tb)
	}
}
