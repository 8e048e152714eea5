package nativeunwind

import (
	"fmt"
	"testing"

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
// whole table, row for row.
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
			var b Builder
			for _, shift := range []uint{16, 18, 20} {
				got, built := mergeRegions(t, &b, f, dbg, shift)
				if err := sameRows(got, want); err != nil {
					t.Fatalf("regions of %d KiB: %v", 1<<shift>>10, err)
				}
				t.Logf("regions of %4d KiB: %d rows built for %d", 1<<shift>>10, built, len(want))
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
