package nativeunwind

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/elffile"
)

// mergeRegions builds f's table by regions of 1<<shift bytes of file
// offsets, the last one reaching MaxAddr, and returns the rows of all of
// them concatenated, a row dropped where the one before has the same rule,
// and the rows the region builds made in all.
func mergeRegions(tb testing.TB, b *Builder, f, dbg *elffile.File, shift uint) (merged []Row, built int) {
	tb.Helper()
	n := (CodeEnd(f) + 1<<shift - 1) >> shift
	for i := range max(n, 1) {
		r := Range{i << shift, (i + 1) << shift}
		if i == max(n, 1)-1 {
			r.Hi = MaxAddr
		}
		tab, err := b.BuildRanges(f, dbg, Options{}, []Range{r})
		if err != nil {
			tb.Fatalf("region %d: %v", i, err)
		}
		built += tab.Len()
		for _, row := range tab.Rows() {
			if row.Addr < r.Lo || row.Addr >= r.Hi {
				tb.Fatalf("region %#x-%#x has a row at %#x", r.Lo, r.Hi, row.Addr)
			}
			if k := len(merged); k > 0 && sameRule(merged[k-1], row) {
				continue
			}
			merged = append(merged, row)
		}
	}
	return merged, built
}

// TestRegionsMergeToWhole checks, for the golden files (C, C++, Go with
// and without cgo, .debug_frame in the file and in a debug file, GCC's
// cc1, node and libjvm where installed) and regions of 64 KiB, 256 KiB and
// 1 MiB, that the tables of all the regions of a file, merged, are its
// whole table, row for row; with the file's sections kept mapped between
// the builds (Builder.Keep) too.
func TestRegionsMergeToWhole(t *testing.T) {
	for _, g := range goldenFiles(t) {
		t.Run(g.name, func(t *testing.T) {
			path := g.path(t)
			f, _ := openELF(t, path)
			var dbg *elffile.File
			if dp := g.dbg(t, path); dp != "" {
				dbg, _ = openELF(t, dp)
			}
			whole, err := Build(f, dbg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := whole.Rows()
			var b, kept Builder
			kept.Keep(f)
			defer kept.Forget(f)
			for _, shift := range []uint{16, 18, 20} {
				got, built := mergeRegions(t, &b, f, dbg, shift)
				if err := sameRows(got, want); err != nil {
					t.Fatalf("regions of %d KiB: %v", 1<<shift>>10, err)
				}
				t.Logf("regions of %4d KiB: %d rows built for %d", 1<<shift>>10, built, len(want))
				// The same with the file's sections kept mapped
				// (Builder.Keep).
				got, _ = mergeRegions(t, &kept, f, dbg, shift)
				if err := sameRows(got, want); err != nil {
					t.Fatalf("regions of %d KiB, file kept: %v", 1<<shift>>10, err)
				}
			}
		})
	}
}

// sameRows returns an error describing the first difference of got from
// want.
func sameRows(got, want []Row) error {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Errorf("row %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("%d rows, want %d", len(got), len(want))
	}
	return nil
}

// TestBuildRangesSeveral checks that several ranges built at once give
// the rows of each built alone, and that a build of one region of a large
// file makes a small part of its rows.
func TestBuildRangesSeveral(t *testing.T) {
	for _, hf := range benchFiles[len(benchFiles)-3:] {
		t.Run(hf.name, func(t *testing.T) {
			f, _ := openELF(t, hf.path(t))
			whole, err := Build(f, nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			end := CodeEnd(f)
			const size = 256 << 10
			ranges := []Range{{end / 4 / size * size, end/4/size*size + size}, {end / 2 / size * size, end/2/size*size + 2*size}}
			var b Builder
			var alone []Row
			for _, r := range ranges {
				tab, err := b.BuildRanges(f, nil, Options{}, []Range{r})
				if err != nil {
					t.Fatal(err)
				}
				alone = append(alone, tab.Rows()...)
			}
			tab, err := b.BuildRanges(f, nil, Options{}, ranges)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameRows(tab.Rows(), alone); err != nil {
				t.Fatal(err)
			}
			if tab.Len()*10 > whole.Len() {
				t.Errorf("%d rows for 3 regions of %d KiB, of %d in all", tab.Len(), size>>10, whole.Len())
			}
			if _, err := b.BuildRanges(f, nil, Options{}, []Range{ranges[1], ranges[0]}); err == nil {
				t.Error("unsorted ranges built")
			}
		})
	}
}

// TestKeptSections checks that a Builder that keeps a large Go binary
// (Builder.Keep) builds its regions as one that does not, maps each of
// its sections once, holds none of their pages in memory between builds,
// and unmaps them when it forgets the file.
func TestKeptSections(t *testing.T) {
	f, _ := openELF(t, goBinary(t))
	var plain, kept Builder
	kept.Keep(f)
	fh := f.OSFile()
	var mapped map[uint64]keptSection
	buildKept(t, f, &plain, &kept, func(lo uint64) {
		k := kept.kept[fh]
		if k == nil || len(k.sections) == 0 || k.goTab == nil {
			t.Fatalf("after a build: %+v kept", k)
		}
		if mapped == nil {
			mapped = maps.Clone(k.sections)
		} else if !maps.EqualFunc(mapped, k.sections, func(a, b keptSection) bool { return &a.mapping[0] == &b.mapping[0] }) {
			t.Fatal("sections mapped again")
		}
	})
	kept.Forget(f)
	if kept.Kept() != 0 {
		t.Fatalf("%d files kept after Forget", kept.Kept())
	}
	for _, s := range mapped {
		if rss := mappingRSS(t, s.mapping); rss != -1 {
			t.Errorf("section still mapped after Forget (%d kB resident)", rss)
		}
	}
}

// buildKept builds 24 regions spread over f's code with plain and with
// kept (which keeps f), checks that they give the same rows and that none
// of the sections kept has a page resident after the build, and calls
// check after each with the region's start.
func buildKept(t *testing.T, f *elffile.File, plain, kept *Builder, check func(lo uint64)) {
	t.Helper()
	n := CodeEnd(f) >> 16
	for i := range min(n, 24) {
		lo := (n * i / 24) << 16
		r := []Range{{lo, lo + 1<<16}}
		want, err := plain.BuildRanges(f, nil, Options{}, r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := kept.BuildRanges(f, nil, Options{}, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameRows(got.Rows(), want.Rows()); err != nil {
			t.Fatalf("region at %#x: %v", lo, err)
		}
		check(lo)
		for off, s := range kept.kept[f.OSFile()].sections {
			if rss := mappingRSS(t, s.mapping); rss != 0 {
				t.Errorf("region at %#x: section at %#x has %d kB resident after the build", lo, off, rss)
			}
		}
	}
}

// mappingRSS returns the resident kilobytes of the mapping that starts at
// m's first byte, as /proc/self/smaps shows them, or -1 when there is
// none.
func mappingRSS(t *testing.T, m []byte) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&m[0])))
	in := false
	for line := range strings.Lines(string(data)) {
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = strings.HasPrefix(line, start)
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			kb, err := strconv.Atoi(strings.Fields(line)[1])
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	return -1
}

// TestKeptFrames checks that a Builder that keeps a C library
// (Builder.Keep) builds its regions as one that does not, keeping the
// CIEs of its .eh_frame parsed and samples of its .eh_frame_hdr table
// from one build to the next, and none of the sections' pages.
func TestKeptFrames(t *testing.T) {
	f, _ := openELF(t, hostFiles[0].path(t))
	var plain, kept Builder
	kept.Keep(f)
	defer kept.Forget(f)
	var cies int
	buildKept(t, f, &plain, &kept, func(lo uint64) {
		k := kept.kept[f.OSFile()]
		fr := k.frames
		if fr == nil || len(fr.cieIndex) != len(fr.cies) {
			t.Fatalf("region at %#x: frames kept %+v", lo, fr)
		}
		if want := (fr.hdrN + searchBlock - 1) / searchBlock; fr.hdrN == 0 || len(fr.hdrBlocks) != want {
			t.Fatalf("region at %#x: %d samples of .eh_frame_hdr's %d entries, want %d", lo, len(fr.hdrBlocks), fr.hdrN, want)
		}
		if len(fr.cies) < cies {
			t.Fatalf("region at %#x: %d CIEs kept, %d before", lo, len(fr.cies), cies)
		}
		cies = len(fr.cies)
	})
	if cies == 0 {
		t.Fatal("no CIE kept")
	}
	// Again: no CIE is parsed twice.
	lo := CodeEnd(f) >> 16 / 2 << 16
	if _, err := kept.BuildRanges(f, nil, Options{}, []Range{{lo, lo + 1<<16}}); err != nil {
		t.Fatal(err)
	}
	if got := len(kept.kept[f.OSFile()].frames.cies); got != cies {
		t.Errorf("%d CIEs kept after a region built again, %d before", got, cies)
	}
}

// TestSearchFirst checks that searchFirst, with samples of the table or
// without, finds what sort.Search does in sorted tables of every size
// around the samples' blocks, with runs of equal keys.
func TestSearchFirst(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 2, searchBlock - 1, searchBlock, searchBlock + 1, 3*searchBlock - 1, 3 * searchBlock, 5*searchBlock + 7} {
		keys := make([]uint64, n)
		for i := range keys {
			keys[i] = rng.Uint64N(uint64(n)*2 + 1)
		}
		slices.Sort(keys)
		key := func(i int) uint64 { return keys[i] }
		blocks := searchBlocks(n, key)
		if want := (n + searchBlock - 1) / searchBlock; len(blocks) != want {
			t.Fatalf("%d entries: %d samples, want %d", n, len(blocks), want)
		}
		for v := uint64(0); v <= uint64(n)*2+2; v++ {
			want := sort.Search(n, func(i int) bool { return keys[i] >= v })
			if got := searchFirst(n, key, blocks, v); got != want {
				t.Fatalf("%d entries, %d: %d with samples, want %d", n, v, got, want)
			}
			if got := searchFirst(n, key, nil, v); got != want {
				t.Fatalf("%d entries, %d: %d, want %d", n, v, got, want)
			}
		}
	}
}
