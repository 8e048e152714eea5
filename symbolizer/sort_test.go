package symbolizer

import (
	"debug/elf"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestSortCandidatesMatchesComparisonSort checks that sortCandidates
// orders the candidates of real symbol tables, and of synthetic ones full
// of aliases, exactly as a comparison sort by cmpCandidates does.
func TestSortCandidatesMatchesComparisonSort(t *testing.T) {
	for _, path := range symbolTestFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			fh, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			ef, err := elf.NewFile(fh)
			if err != nil {
				t.Fatal(err)
			}
			b := tableBuilder{limit: 1 << 30}
			defer b.release()
			for _, sec := range ef.Sections {
				if sec.Type == elf.SHT_SYMTAB || sec.Type == elf.SHT_DYNSYM {
					if err := b.addSymbols(ef, fh, sec); err != nil {
						t.Fatal(err)
					}
				}
			}
			if len(b.cands) < 100 {
				t.Fatalf("only %d candidates", len(b.cands))
			}
			checkSortCandidates(t, b.cands)
		})
	}
	t.Run("aliases", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, n := range []int{2, 10, 1000, 50000} {
			cands := make([]candidate, n)
			for i := range cands {
				cands[i] = candidate{
					value:       rng.Uint64N(uint64(n)/4 + 1),
					rank:        uint8(rng.IntN(8)),
					underscores: uint8(rng.IntN(3)),
					seq:         uint32(i),
				}
			}
			checkSortCandidates(t, cands)
		}
	})
	t.Run("high addresses", func(t *testing.T) {
		// Addresses too large to pack beside an index take the
		// comparison sort.
		cands := []candidate{{value: 1 << 63, seq: 0}, {value: 5, rank: 1, seq: 1}, {value: 5, rank: 4, seq: 2}}
		checkSortCandidates(t, cands)
	})
}

func checkSortCandidates(t *testing.T, cands []candidate) {
	t.Helper()
	want := slices.Clone(cands)
	slices.SortFunc(want, cmpCandidates)
	sortCandidates(cands)
	if !slices.Equal(cands, want) {
		t.Fatalf("sortCandidates differs from slices.SortFunc(cmpCandidates) on %d candidates", len(cands))
	}
}
