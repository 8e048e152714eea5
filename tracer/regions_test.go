package tracer

import (
	"cmp"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// regionLibSource is a library whose code the calls of run visit in two
// places 4 MiB apart, with 1,500 functions never called in between: a
// process running it spends its first part in the region of spin_a, the
// second in that of spin_b. Built -O2 -fomit-frame-pointer, only its
// table unwinds it; -fno-toplevel-reorder keeps the source's order.
const regionLibSource = `
#include <time.h>
static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
volatile unsigned long sink;
__attribute__((noinline)) void spin_a(long long until) {
	unsigned long x = sink;
	while (now_ns() < until) {
		for (int i = 0; i < 100000; i++)
			x = x * 2862933555777941757UL + 3037000493UL;
		sink = x;
	}
}
__attribute__((noinline)) void mid_a(long long until) { spin_a(until); sink++; }
__attribute__((noinline)) void spin_b(long long until);
__attribute__((noinline)) void mid_b(long long until);
void run(long ms_a, long ms_b) {
	mid_a(now_ns() + ms_a * 1000000LL);
	mid_b(now_ns() + ms_b * 1000000LL);
	sink++;
}
__asm__(".text\n.p2align 12\n.skip 2097152, 0xcc\n");
`

const regionLibTail = `
__asm__(".text\n.p2align 12\n.skip 2097152, 0xcc\n");
__attribute__((noinline)) void spin_b(long long until) {
	unsigned long x = sink;
	while (now_ns() < until) {
		for (int i = 0; i < 100000; i++)
			x = x * 2862933555777941757UL + 3037000493UL;
		sink = x;
	}
}
__attribute__((noinline)) void mid_b(long long until) { spin_b(until); sink++; }
`

// regionMainSource runs run(argv[1], argv[2]) of libregion.
const regionMainSource = `
#include <stdlib.h>
void run(long ms_a, long ms_b);
int main(int argc, char **argv) {
	run(atol(argv[1]), atol(argv[2]));
	return 0;
}
`

// TestTableBuiltByRegion: a process runs in one region of a large library
// (no frame pointers), then in another 4 MiB further. Its table first
// has the rows of the first region only, a small part of the library's
// rows, and >= 95% of the samples there unwind fully once it is in; when
// the process moves on, the second region is added, and >= 95% of the
// samples there unwind fully too, while the regions no sample reached
// stay unbuilt. The second region goes into the table in place: its
// map in unwind_tables stays the same.
func TestTableBuiltByRegion(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	lib := filepath.Join(dir, "libregion.so")
	testenv.Run(t, dir, "gcc", "-O2", "-g", "-fomit-frame-pointer", "-fno-toplevel-reorder", "-shared", "-fPIC", "-o", lib,
		writeSource(t, dir, "region.c", regionLibSource+filler("fill", 1500)+regionLibTail))
	bin := filepath.Join(dir, "regions")
	testenv.Run(t, dir, "gcc", "-O2", "-fomit-frame-pointer", "-o", bin, writeSource(t, dir, "main.c", regionMainSource),
		"-L"+dir, "-lregion", "-Wl,-rpath,"+dir)
	whole, err := nativeunwind.Build(openELFFile(t, lib), nil, nativeunwind.Options{})
	if err != nil {
		t.Fatal(err)
	}

	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 256 << 20}, symbolizer.Options{CacheSize: 64, MaxBytes: 256 << 20})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}
	cmd := exec.Command(bin, "4000", "4000")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	table := func() TableInfo {
		for _, ti := range tr.Tables() {
			if ti.File == "libregion.so" {
				return ti
			}
		}
		return TableInfo{}
	}
	traces := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.traces)
	}
	// waitFor returns the table once ok says it is as wanted, and the
	// number of traces recorded a little later (those after it were
	// all sampled with that table).
	waitFor := func(what string, ok func(TableInfo) bool, within time.Duration) (TableInfo, int) {
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			if ti := table(); ok(ti) {
				time.Sleep(100 * time.Millisecond)
				return ti, traces()
			}
			if time.Since(start) > within {
				t.Fatalf("%s not within %v: %+v", what, within, table())
			}
		}
	}
	// inner returns the ID of libregion.so's table's map in
	// unwind_tables, and the rows of its array.
	inner := func() (id uint32, capacity int) {
		tr.tables.mu.Lock()
		defer tr.tables.mu.Unlock()
		for _, tb := range tr.tables.tables {
			if tb.name != "libregion.so" || tb.rows == 0 {
				continue
			}
			if err := tr.maps.(bpfMaps).objs.UnwindTables.Lookup(tb.key, &id); err != nil {
				t.Fatal(err)
			}
			if tb.regions != nil {
				capacity = tb.regions.capacity
			}
			return id, capacity
		}
		t.Fatal("libregion.so's table is not loaded")
		return 0, 0
	}
	first, firstAt := waitFor("libregion.so's first region", func(ti TableInfo) bool { return ti.Rows > 0 }, 3*time.Second)
	firstID, capacity := inner()
	t.Logf("first: %d of %d regions built, %d rows (%d whole), map %d of %d rows", first.RegionsBuilt, first.Regions, first.Rows, whole.Len(), firstID, capacity)
	if first.Regions < minRegions || first.RegionsBuilt != 1 || int(first.Rows)*5 > whole.Len() {
		t.Errorf("table of the first region: %+v, want 1 region built of minRegions or more and less than a fifth of the %d rows", first, whole.Len())
	}
	second, secondAt := waitFor("the second region", func(ti TableInfo) bool { return ti.RegionsBuilt > first.RegionsBuilt }, 7*time.Second)
	secondID, _ := inner()
	t.Logf("second: %d of %d regions built, %d rows, map %d", second.RegionsBuilt, second.Regions, second.Rows, secondID)
	if int(second.Rows) <= capacity && secondID != firstID {
		t.Errorf("the second region, %d rows in all, went into a new map (%d, was %d) though the table had room for %d", second.Rows, secondID, firstID, capacity)
	}
	if int(second.Rows) > capacity {
		t.Errorf("the second region, %d rows in all, did not fit the first table's %d rows: the test wants it added in place", second.Rows, capacity)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	last := table()
	tr.stop(t)
	if last.RegionsBuilt != 2 || int(last.Rows)*5 > whole.Len() {
		t.Errorf("table at the end: %+v, want 2 regions and less than a fifth of the %d rows", last, whole.Len())
	}

	pid := uint32(cmd.Process.Pid)
	rec.mu.Lock()
	var at []int // index among the process's traces of firstAt, secondAt
	k := 0
	for i, r := range rec.traces {
		if i == firstAt || i == secondAt {
			at = append(at, k)
		}
		if r.meta.PID == pid {
			k++
		}
	}
	rec.mu.Unlock()
	all := rec.userTraces(func(m trace.TraceMeta) bool { return m.PID == pid })
	for len(at) < 2 {
		at = append(at, len(all))
	}
	check := func(what string, frames [][]userFrame, chain ...string) {
		t.Helper()
		total, full := 0, 0
		var bad []string
		for _, f := range frames {
			if len(f) == 0 || f[0].name != chain[0] {
				continue
			}
			total++
			if namedChain(f, chain...) && complete(f) && f[len(f)-1].name == "_start" {
				full++
			} else if len(bad) < 5 {
				bad = append(bad, describe(f))
			}
		}
		t.Logf("%s: %d of %d traces %v down to _start", what, full, total, chain)
		if total < 50 {
			t.Fatalf("%s: only %d traces", what, total)
		}
		checkShare(t, what, full, total, bad, 0.95)
	}
	check("first region", all[at[0]:at[1]], "spin_a", "mid_a", "run", "main")
	check("second region", all[at[1]:], "spin_b", "mid_b", "run", "main")
	// The samples in spin_b before its region was in show their frame.
	shown := slices.ContainsFunc(all[:at[1]], func(f []userFrame) bool { return len(f) > 0 && f[0].name == "spin_b" })
	if !shown {
		t.Error("no trace taken before spin_b's region was built shows its frame")
	}
}

// lookupRule is find_rule of support/ebpf/native.h in Go: the rule of the
// row of the table rows (the array's values) covering file offset off,
// for a mapping that gives n as its number of rows.
func lookupRule(rows []uint64, n uint32, off uint64) uint32 {
	if off > 0xffffffff {
		return ruleInvalid
	}
	lo, hi := uint32(0), n
	if n&rowsRegional != 0 {
		regions := n &^ rowsRegional
		r := uint32(off >> regionShift)
		if r >= regions {
			r = regions - 1
		}
		if int(r) >= len(rows) {
			return ruleInvalid
		}
		e := rows[r]
		count := uint32(e)
		lo = uint32(e >> 32)
		if count == 0 {
			return lo
		}
		hi = lo + count
	}
	for range progs.StacklineUnwindBoundsMAX_ROWS_LOG2 + 1 {
		if hi-lo <= 1 {
			break
		}
		mid := lo + (hi-lo)/2
		if int(mid) >= len(rows) || uint32(rows[mid]) > uint32(off) {
			hi = mid
		} else {
			lo = mid
		}
	}
	if int(lo) >= len(rows) || uint64(uint32(rows[lo])) > off {
		return ruleInvalid
	}
	return uint32(rows[lo] >> rowRuleShift)
}

// regionFile is a file whose table the tests build region by region: its
// whole table packed for eBPF, and its number of regions.
type regionFile struct {
	f     *elffile.File
	whole []uint64
	n     int
}

// openRegionFile opens the ELF file at path and builds its whole table.
func openRegionFile(t testing.TB, path string) regionFile {
	t.Helper()
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Skip(err)
	}
	f := openELFFile(t, real)
	whole, err := nativeunwind.Build(f, nil, nativeunwind.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return regionFile{f: f, whole: encodeAll(t, whole), n: regionCount(nativeunwind.CodeEnd(f))}
}

// regionFiles are the files TestRegionsAddedInPlace builds: libc, and the
// bench's large files when installed.
var regionFiles = map[string]string{
	"libc":   "/lib/x86_64-linux-gnu/libc.so.6",
	"cc1":    cc1,
	"node":   "/usr/bin/node",
	"libjvm": "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so",
}

// regionStore returns a table store of a table of rf built by region from
// regions (sorted), in maps, within maxBytes.
func regionStore(t testing.TB, maps unwinderMaps, rf regionFile, regions []uint32, goCode bool, maxBytes uint64) (*tableStore, *unwindTable) {
	t.Helper()
	s := newTableStore(maps, maxBytes, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var b nativeunwind.Builder
	add, _, _, err := encodeRegions(&b, rf.f, nil, maxBytes, rf.n, regions)
	if err != nil {
		t.Fatal(err)
	}
	id := trace.FileID{1}
	bt := &builtTable{id: id, name: "test"}
	bt.table, bt.regions, err = newRegionTable(maps, tableKey(id), rf.n, add, goCode, maxRows(maxBytes))
	if err != nil {
		t.Fatal(err)
	}
	bt.rows = bt.regions.used
	tb := s.acquire(id, fileKey{}, "test", bt, time.Now())
	if tb == nil || tb.err != nil || tb.regions == nil {
		t.Fatalf("table not loaded: %+v", tb)
	}
	return s, tb
}

// addBuilt builds regions (sorted) of rf and adds them to tb's table, as
// the build worker and the Run goroutine do.
func addBuilt(t testing.TB, s *tableStore, tb *unwindTable, rf regionFile, regions []uint32) {
	t.Helper()
	var b nativeunwind.Builder
	add, _, _, err := encodeRegions(&b, rf.f, nil, s.maxBytes, rf.n, regions)
	bt := &builtTable{id: tb.id, name: tb.name, update: true, add: add, err: err}
	tb.regions.building = true
	s.regionsBuilt(tb, bt, time.Now())
}

// checkRegions checks the table rows, of a file whose whole table is
// rf.whole, built by region as rt says: each region built has the rows of
// the whole table there, and a lookup anywhere in it finds the whole
// table's rule (at every stride-th row's offset, and the one before);
// each other region has the entry of one not built.
func checkRegions(t testing.TB, rows []uint64, rf regionFile, rt *regionTable, stride int) {
	t.Helper()
	unbuilt := rt.unbuiltEntry()
	for r := range uint32(rf.n) {
		rg := regionRange(r, rf.n)
		e := rows[r]
		if !rt.has(uint64(r)) {
			if e != unbuilt {
				t.Fatalf("region %d not built has entry %#x, want %#x", r, e, unbuilt)
			}
			continue
		}
		first, count := int(e>>32), int(uint32(e))
		if first < rf.n || first+count > rt.used {
			t.Fatalf("region %d: rows %d to %d, outside the %d rows in use after the index of %d", r, first, first+count, rt.used, rf.n)
		}
		if got, want := rows[first:first+count], appendRegion(nil, rf.whole, rg); !slices.Equal(got, want) {
			t.Fatalf("region %d: %d rows, want the whole table's %d", r, len(got), len(want))
		}
	}
	n := rowsRegional | uint32(rf.n)
	for i, w := range rf.whole {
		if i%stride != 0 {
			continue
		}
		for _, off := range []uint64{w & 0xffffffff, w&0xffffffff - 1} {
			if !rt.has(off>>regionShift) && int(off>>regionShift) < rf.n {
				continue
			}
			if got, want := lookupRule(rows, n, off), lookupRule(rf.whole, uint32(len(rf.whole)), off); got != want {
				t.Fatalf("offset %#x: rule %#x, the whole table's %#x", off, got, want)
			}
		}
	}
}

// TestRegionsAddedInPlace: a file's table built region by region, in any
// order and grouping, has in each region built exactly the rows of the
// whole table there (a lookup finds the whole table's rule), and the
// entry of a region not built elsewhere; regions go into the table in
// place until its room runs out, then into a larger table that keeps
// every region.
func TestRegionsAddedInPlace(t *testing.T) {
	for name, path := range regionFiles {
		t.Run(name, func(t *testing.T) {
			rf := openRegionFile(t, path)
			rnd := rand.New(rand.NewPCG(1, uint64(rf.n)))
			rounds := 2
			if rf.n > 32 {
				rounds = 1
			}
			for round := range rounds {
				maps := newMemMaps()
				order := rnd.Perm(rf.n)
				take := func() []uint32 {
					k := min(len(order), 1+rnd.IntN(3))
					var regions []uint32
					for _, r := range order[:k] {
						regions = append(regions, uint32(r))
					}
					order = order[k:]
					slices.Sort(regions)
					return regions
				}
				s, tb := regionStore(t, maps, rf, take(), round == 1, 1<<30)
				rt := tb.regions
				checkRegions(t, maps.tables[tb.key], rf, rt, 1)
				inPlace, grown := 0, 0
				for len(order) > 0 {
					before := &maps.tables[tb.key][0]
					capacity := rt.capacity
					addBuilt(t, s, tb, rf, take())
					if rt.full {
						t.Fatal("the table is full")
					}
					rows := maps.tables[tb.key]
					switch {
					case rt.complete():
						// Every region in: the spare room is
						// given back (checked below).
					case &rows[0] == before:
						inPlace++
					default:
						grown++
						if len(rows) <= capacity {
							t.Fatalf("grown from %d rows to %d", capacity, len(rows))
						}
					}
					if tb.rows != uint32(rt.used) || tb.bytes != uint64(len(rows))*rowBytes || s.used != tb.bytes {
						t.Fatalf("table of %d rows, %d bytes (store: %d), want %d rows in use of %d", tb.rows, tb.bytes, s.used, rt.used, len(rows))
					}
					stride := 7
					if len(order) == 0 {
						stride = 1
					}
					checkRegions(t, rows, rf, rt, stride)
				}
				if !rt.complete() || rt.tab != nil || s.partial[tb.id] != nil {
					t.Fatalf("all regions added: %d of %d built, table held %v", rt.count, rf.n, rt.tab != nil)
				}
				if rows := maps.tables[tb.key]; len(rows) > rt.used+minSpareRows {
					t.Errorf("all regions added: %d rows in use of %d: spare room not given back", rt.used, len(rows))
				}
				t.Logf("round %d: %d regions, %d rows (whole: %d), %d additions in place, %d grown", round, rf.n, rt.used, len(rf.whole), inPlace, grown)
				if rf.n > minRegions && (inPlace == 0 || grown == 0) {
					t.Errorf("%d additions in place, %d grown: want both", inPlace, grown)
				}
			}
		})
	}
}

// TestRegionsOverBudget: regions that would grow a table past the budget
// are not added; the table keeps those it has, and asks for no more.
func TestRegionsOverBudget(t *testing.T) {
	rf := openRegionFile(t, regionFiles["libc"])
	// A budget of the first table: the first region and its spare room.
	first := appendRegion(nil, rf.whole, regionRange(0, rf.n))
	maxBytes := uint64(regionCapacity(rf.n+len(first), maxTableRows)) * rowBytes
	maps := newMemMaps()
	s, tb := regionStore(t, maps, rf, []uint32{0}, false, maxBytes)
	rt := tb.regions
	for r := uint32(1); r < uint32(rf.n) && !rt.full; r++ {
		addBuilt(t, s, tb, rf, []uint32{r})
		if rt.full {
			if rt.has(uint64(r)) || rt.tab != nil {
				t.Fatalf("region %d over the budget: added %v, table held %v", r, rt.has(uint64(r)), rt.tab != nil)
			}
			break
		}
		if !rt.has(uint64(r)) {
			t.Fatalf("region %d not added within the budget", r)
		}
	}
	if !rt.full {
		t.Fatalf("all %d regions fit in %d bytes", rf.n, maxBytes)
	}
	rows := maps.tables[tb.key]
	if uint64(len(rows))*rowBytes != maxBytes || s.used != maxBytes {
		t.Fatalf("table of %d rows (%d bytes used), want the first one's %d bytes", len(rows), s.used, maxBytes)
	}
	checkRegions(t, rows, rf, rt, 1)
	t.Logf("%d of %d regions in %d bytes", rt.count, rf.n, maxBytes)
}

// steppedTable is a table of memMaps whose writes are applied one row at
// a time, in order, with check called after each: the states an eBPF
// lookup on another CPU could see meanwhile.
type steppedTable struct {
	memTable
	check func(rows memTable)
}

func (t steppedTable) write(off, n int, fn func(rows []uint64) error) error {
	next := slices.Clone(t.memTable[off : off+n])
	err := fn(next)
	for i, v := range next {
		if t.memTable[off+i] != v {
			t.memTable[off+i] = v
			t.check(t.memTable)
		}
	}
	return err
}

// TestRegionWriteOrder: while regions are added in place, every state of
// the table between two row stores gives a lookup, anywhere in the file,
// either the whole table's rule or the rule of a region not built, never
// another.
func TestRegionWriteOrder(t *testing.T) {
	rf := openRegionFile(t, regionFiles["libc"])
	// All regions but the two with the most rows, added then: they fit
	// in the spare room, as large as the others' rows.
	regions := make([]uint32, rf.n)
	for r := range regions {
		regions[r] = uint32(r)
	}
	size := func(r uint32) int { return len(appendRegion(nil, rf.whole, regionRange(r, rf.n))) }
	slices.SortFunc(regions, func(a, b uint32) int { return size(b) - size(a) })
	added := regions[:2]
	first := slices.Sorted(slices.Values(regions[2:]))
	maps := newMemMaps()
	s, tb := regionStore(t, maps, rf, first, false, 1<<30)
	table := &maps.tables[tb.key][0]
	// The offsets of every row of the regions added, of every 8th of
	// the others, and their rules in the whole table.
	var offs []uint64
	var wants []uint32
	for i, w := range rf.whole {
		off := w & 0xffffffff
		if i%8 == 0 || slices.Contains(added, uint32(off>>regionShift)) {
			offs = append(offs, off)
			wants = append(wants, lookupRule(rf.whole, uint32(len(rf.whole)), off))
		}
	}
	n := rowsRegional | uint32(rf.n)
	checks := 0
	tb.regions.tab = steppedTable{memTable: maps.tables[tb.key], check: func(rows memTable) {
		checks++
		for i, off := range offs {
			if got, want := lookupRule(rows, n, off), wants[i]; got != want && got != ruleUnbuilt {
				t.Fatalf("offset %#x: rule %#x, want the whole table's %#x or %#x (not built)", off, got, want, ruleUnbuilt)
			}
		}
	}}
	for _, r := range added {
		addBuilt(t, s, tb, rf, []uint32{r})
		rows := maps.tables[tb.key]
		// The last one completes the table, whose spare room is
		// then given back: a smaller copy replaces it.
		shrunk := tb.regions.complete() && len(rows) <= tb.regions.used+minSpareRows
		if !tb.regions.has(uint64(r)) || &rows[0] != table && !shrunk {
			t.Fatalf("region %d not added in place", r)
		}
	}
	if checks == 0 {
		t.Fatal("no write checked")
	}
	t.Logf("%d states checked", checks)
}

// encodeAll returns the rows of tab packed for eBPF.
func encodeAll(t testing.TB, tab *nativeunwind.Table) []uint64 {
	t.Helper()
	enc := encodeRules(tab.Rules())
	out := make([]uint64, tab.Len())
	for i := range out {
		addr, rule := tab.At(i)
		out[i] = enc[rule]&^1 | addr
	}
	return out
}

// appendRegion appends to out the rows of rows (packed for eBPF, sorted)
// in the file offsets r, as a region of a table built by region has them
// (the tests' reference, from the whole table): a row at r.Lo with the rule in effect there
// (ruleInvalid when none is), then those inside. A row whose rule is that
// of the row before it is dropped.
func appendRegion(out, rows []uint64, r nativeunwind.Range) []uint64 {
	i, found := slices.BinarySearchFunc(rows, r.Lo, func(p, lo uint64) int { return cmp.Compare(p&0xffffffff, lo) })
	switch {
	case found:
	case i > 0:
		out = appendRow(out, packRow(uint32(rows[i-1]>>rowRuleShift), r.Lo))
	default:
		// No rule before the region's first row: none, as in front
		// of a table's first row.
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
