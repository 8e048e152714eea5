package tracer

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
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
// stay unbuilt.
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
	first, firstAt := waitFor("libregion.so's first region", func(ti TableInfo) bool { return ti.Rows > 0 }, 3*time.Second)
	t.Logf("first: %d of %d regions built, %d rows (%d whole)", first.RegionsBuilt, first.Regions, first.Rows, whole.Len())
	if first.Regions < minRegions || first.RegionsBuilt != 1 || int(first.Rows)*5 > whole.Len() {
		t.Errorf("table of the first region: %+v, want 1 region built of minRegions or more and less than a fifth of the %d rows", first, whole.Len())
	}
	second, secondAt := waitFor("the second region", func(ti TableInfo) bool { return ti.RegionsBuilt > first.RegionsBuilt }, 7*time.Second)
	t.Logf("second: %d of %d regions built, %d rows", second.RegionsBuilt, second.Regions, second.Rows)
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

// TestComposeRegions: a file's table composed region by region, in any
// order and any grouping, has the rows of the whole table in its built
// regions and a marker at the start of the others, and once all are built
// it is the whole table.
func TestComposeRegions(t *testing.T) {
	path, err := filepath.EvalSymlinks("/lib/x86_64-linux-gnu/libc.so.6")
	if err != nil {
		t.Skip(err)
	}
	libc := openELFFile(t, path)
	b := &nativeunwind.Builder{}
	whole, err := nativeunwind.Build(libc, nil, nativeunwind.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := encodeAll(t, whole)
	n := regionCount(nativeunwind.CodeEnd(libc))
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 3 {
		order := rnd.Perm(n)
		var prev *regionTable
		var rows, built []uint64
		var count int
		for len(order) > 0 {
			k := min(len(order), 1+rnd.IntN(3))
			var regions []uint32
			for _, r := range order[:k] {
				regions = append(regions, uint32(r))
			}
			order = order[k:]
			slices.Sort(regions)
			var ranges []nativeunwind.Range
			for _, r := range regions {
				ranges = append(ranges, regionRange(r, n))
			}
			tab, err := b.BuildRanges(libc, nil, nativeunwind.Options{}, ranges)
			if err != nil {
				t.Fatal(err)
			}
			piece := encodeAll(t, tab)
			b.Release()
			var prevRows []uint64
			if prev != nil {
				prevRows = rows
			}
			rows, built, count = composeRegions(prev, prevRows, n, regions, piece, ruleUnbuilt)
			prev = &regionTable{n: n, built: built, count: count}
			for r := range uint32(n) {
				rg := regionRange(r, n)
				got := appendRegion(nil, rows, rg)
				if !prev.has(uint64(r)) {
					if len(got) != 1 || uint32(got[0]>>rowRuleShift) != ruleUnbuilt {
						t.Fatalf("round %d: region %d not built has rows %x", round, r, got)
					}
					continue
				}
				if w := appendRegion(nil, want, rg); !slices.Equal(got, w) {
					t.Fatalf("round %d: region %d: %d rows, want %d", round, r, len(got), len(w))
				}
			}
		}
		if !prev.complete() {
			t.Fatalf("round %d: %d of %d regions built", round, prev.count, n)
		}
		got := rows
		if len(got) > 0 && uint32(got[0]>>rowRuleShift) == ruleInvalid && (len(want) == 0 || got[0] != want[0]) {
			got = got[1:] // the row at 0: none before the first
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: all regions: %d rows, want the whole table's %d", round, len(got), len(want))
		}
	}
}

// encodeAll returns the rows of tab packed for eBPF.
func encodeAll(t *testing.T, tab *nativeunwind.Table) []uint64 {
	t.Helper()
	enc := encodeRules(tab.Rules())
	out := make([]uint64, tab.Len())
	for i := range out {
		addr, rule := tab.At(i)
		out[i] = enc[rule]&^1 | addr
	}
	return out
}
