package tracer

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// A file with at least minRegions regions of code whose call frame information
// can be built by region (nativeunwind.Regional) gets its table region by
// region: a region is an aligned range of regionBytes of file offsets.
// When a trace first has a frame in the file, only the region of that
// frame is built; the table holds, at the start of every region not
// built, one row of the rule ruleUnbuilt (Go code: ruleInvalid, which the
// unwinder steps by frame pointer, as it does Go code with no table), and
// a frame there asks for its region. Regions asked while one build is
// with a build worker go together in the next. Each time regions are
// added, the file's table is made again with them and replaces the one
// under its key in unwind_tables; mappings give partial tables
// maxTableRows as their number of rows, a bound the eBPF search stops
// short of, so they need not change.
//
// 256 KiB: a region of cc1, node or libjvm has 3,000-9,000 rows and
// takes about half a millisecond to build (BenchmarkBuildRegion); 64 KiB
// regions take a fifth of that but four times as many builds and marker
// rows for a process spread over its code, 1 MiB four times as long and
// as many rows, mostly of code no sample reaches.
const (
	regionShift = 18
	regionBytes = 1 << regionShift
	// maxAskedRegions bounds the regions of a file asked for and not
	// built yet; more are asked again by later samples.
	maxAskedRegions = 64
	// minRegions is the least number of regions of code of a file built
	// by region (4 MiB); a smaller one is built whole. Samples reach
	// most regions of such files anyway (libc 6 of 6, libpython 9 of 13
	// on the bench), whose whole tables cost under 10 ms, and each
	// region found one after the other costs the samples that stop
	// there until it is built (the Python tests fell to 94%).
	minRegions = 16
)

// ruleUnbuilt is the rule of the row at the start of a region not built
// yet: the eBPF unwinder stops after the frame, as in a file with no
// table yet.
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
	// tab is the table loaded, held open to make the next one with
	// more regions from (its rows read in place, not kept on the heap),
	// and rows its number of rows; nil once all regions are built.
	tab  rowTable
	rows int
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
	// loaded is when the table was last loaded: the next build waits
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
// regions asked, and the table they are added to (nil for the first).
type regionAsk struct {
	regions []uint32
	// prev is a copy of the regionTable, with a handle of its own on
	// the table, which the build worker closes.
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
		if rt == nil || rt.full {
			return regionAsk{}, false
		}
		if rt.tab == nil {
			return regionAsk{}, false
		}
		tab, err := rt.tab.clone()
		if err != nil {
			s.log.Debug("unwind table regions", "file", tb.name, "error", err)
			return regionAsk{}, false
		}
		ask.regions, rt.asked = rt.asked, nil
		ask.prev = &regionTable{n: rt.n, built: slices.Clone(rt.built), count: rt.count, tab: tab, rows: rt.rows, goCode: rt.goCode}
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

// regionsBuilt enters bt, tb's table with more regions built, in place of
// tb's, and reports whether regions were asked meanwhile: the caller
// hands their build to a worker (from rt.from).
func (s *tableStore) regionsBuilt(tb *unwindTable, bt *builtTable, now time.Time) (more bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := tb.regions
	rt.building = false
	s.stats.buildTime += bt.buildTime
	s.stats.invalidRows += bt.invalidRows
	err := bt.err
	if err == nil {
		err = s.replace(tb, bt)
	}
	if err != nil {
		rt.asked = nil
		if errors.Is(err, errTableBudget) || errors.Is(err, nativeunwind.ErrTooLarge) {
			// No more regions: frames in those not built stop
			// there.
			rt.full = true
			s.stats.skipped++
			s.log.Warn("unwind table regions not added: frames in them stop there",
				"file", tb.name, "rows", bt.rows, "error", err)
			return false
		}
		// The file could not be read (the process it was opened
		// through exited): the next sample there asks again.
		s.log.Debug("unwind table regions not added", "file", tb.name, "error", err)
		return false
	}
	old := rt.tab
	*rt = regionTable{n: rt.n, built: bt.regions.built, count: bt.regions.count, goCode: rt.goCode, asked: rt.asked, from: rt.from, loaded: now}
	rt.keep(bt)
	if old != nil {
		old.close()
	}
	// Those asked again while the build was out are in.
	rt.asked = slices.DeleteFunc(rt.asked, func(r uint32) bool { return rt.has(uint64(r)) })
	if rt.complete() {
		delete(s.partial, tb.id)
	}
	if len(rt.asked) == 0 {
		return false
	}
	rt.building = true
	return true
}

// keep holds bt's table, just loaded, to make the next one from, unless
// every region is built: the table is then rt's, not bt's to close.
func (rt *regionTable) keep(bt *builtTable) {
	if rt.complete() {
		return
	}
	rt.tab, rt.rows = bt.table, bt.rows
	bt.table = nil
}

// drop closes the table held.
func (rt *regionTable) drop() {
	if rt.tab != nil {
		rt.tab.close()
		rt.tab = nil
	}
}

// replace puts bt's table in unwind_tables in place of tb's, within the
// budget. Idle tables are unloaded to make room, not tb.
func (s *tableStore) replace(tb *unwindTable, bt *builtTable) error {
	need := bt.table.size()
	if s.used-tb.bytes+need > s.maxBytes {
		tb.refs++
		s.evictIdle(need - tb.bytes)
		tb.refs--
	}
	if s.used-tb.bytes+need > s.maxBytes {
		return fmt.Errorf("%w: %d bytes needed, %d of %d used", errTableBudget, need, s.used, s.maxBytes)
	}
	if err := s.maps.putTable(tb.key, bt.table); err != nil {
		return err
	}
	s.used += need - tb.bytes
	tb.bytes = need
	tb.rows = uint32(bt.rows)
	return nil
}

// appendRegion appends to out the rows of rows (packed for eBPF, sorted)
// in the file offsets r: a row at r.Lo with the rule in effect there
// (ruleInvalid when none is), then those inside. A row whose rule is that of the row before it
// is dropped.
func appendRegion(out, rows []uint64, r nativeunwind.Range) []uint64 {
	i, found := slices.BinarySearchFunc(rows, r.Lo, func(p, lo uint64) int { return cmp.Compare(p&0xffffffff, lo) })
	switch {
	case found:
	case i > 0:
		out = appendRow(out, packRow(uint32(rows[i-1]>>rowRuleShift), r.Lo))
	default:
		// No rule before the region's first row: none, as in front
		// of a table's first row, rather than the rule of the region
		// before (a marker, maybe).
		out = appendRow(out, packRow(ruleInvalid, r.Lo))
	}
	for ; i < len(rows) && rows[i]&0xffffffff < r.Hi; i++ {
		out = appendRow(out, rows[i])
	}
	return out
}

// appendRow appends the packed row p to out unless the row before has its
// rule.
func appendRow(out []uint64, p uint64) []uint64 {
	if n := len(out); n > 0 && out[n-1]>>rowRuleShift == p>>rowRuleShift {
		return out
	}
	return append(out, p)
}

// composeRegions returns the rows of the table of a file of n regions
// whose regions built are those of prev (nil: none), whose rows are
// prevRows, and those of regions, whose rows are piece (all packed for
// eBPF): the rows of each region built, and a row of marker at the start
// of each other. It returns the new set of regions built.
func composeRegions(prev *regionTable, prevRows []uint64, n int, regions []uint32, piece []uint64, marker uint32) (rows, built []uint64, count int) {
	built = make([]uint64, (n+63)/64)
	if prev != nil {
		copy(built, prev.built)
	}
	fresh := make([]uint64, len(built))
	for _, r := range regions {
		fresh[r/64] |= 1 << (r % 64)
	}
	hint := len(piece) + n + len(prevRows)
	rows = make([]uint64, 0, hint)
	for r := range uint32(n) {
		rg := regionRange(r, n)
		switch {
		case fresh[r/64]&(1<<(r%64)) != 0:
			rows = appendRegion(rows, piece, rg)
			built[r/64] |= 1 << (r % 64)
		case prev != nil && prev.has(uint64(r)):
			rows = appendRegion(rows, prevRows, rg)
		default:
			rows = appendRow(rows, packRow(marker, rg.Lo))
		}
	}
	for _, w := range built {
		for ; w != 0; w &= w - 1 {
			count++
		}
	}
	return rows, built, count
}
