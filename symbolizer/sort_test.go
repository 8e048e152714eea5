package symbolizer

import (
	"debug/elf"
	"math"
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
	sortCandidates(cands, nil)
	if !slices.Equal(cands, want) {
		t.Fatalf("sortCandidates differs from slices.SortFunc(cmpCandidates) on %d candidates", len(cands))
	}
}

// TestAddrIndex checks addrIndex.find against a linear search, over sorted
// addresses with duplicates, gaps of every size and spans up to 2^64-1,
// for addresses at, between, below and above them.
func TestAddrIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 200 {
		n := rng.IntN(300)
		cands := make([]candidate, n)
		v := rng.Uint64N(1 << 20)
		if round%10 == 0 {
			v = rng.Uint64()
		}
		for i := range cands {
			cands[i].value = v
			switch rng.IntN(4) {
			case 0: // a duplicate
			case 1:
				v += rng.Uint64N(1 << 40)
			default:
				v += rng.Uint64N(64)
			}
			if v < cands[i].value {
				v = cands[i].value // no wrap-around: stay sorted
			}
		}
		// A buffer too small, then one that is large enough.
		buf := make([]int32, 1+rng.IntN(2*n+1))
		idx, whole := newAddrIndex(cands, buf), addrIndex{}
		if round%2 == 1 {
			idx = newAddrIndex(cands, idx.starts)
		}
		var probes []uint64
		for _, c := range cands {
			probes = append(probes, c.value, c.value-1, c.value+1)
		}
		probes = append(probes, 0, math.MaxUint64, rng.Uint64())
		for _, a := range probes {
			want := slices.IndexFunc(cands, func(c candidate) bool { return c.value >= a })
			if want < 0 {
				want = len(cands)
			}
			if got := idx.find(cands, a); got != want {
				t.Fatalf("round %d, %d candidates: find(%#x) = %d, want %d", round, n, a, got, want)
			}
			if got := whole.find(cands, a); got != want {
				t.Fatalf("round %d, %d candidates, no index: find(%#x) = %d, want %d", round, n, a, got, want)
			}
		}
	}
}
