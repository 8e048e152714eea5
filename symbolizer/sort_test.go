package symbolizer

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
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

// TestCoveredSorted checks coveredSorted against coveredEach, which looks
// each symbol up, on random kept candidates (sorted, one an address, of
// mixed ranks and sizes) and deferred tables of code symbols at their
// addresses, between, below and above them, in random order, with sizes
// and addresses too large to pack now and then.
func TestCoveredSorted(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const wins = rankGlobal | rankSymtab
	code := codeSections{false, true}
	seen := map[string]int{}
	for round := range 3000 {
		n := rng.IntN(40)
		kept := make([]candidate, 0, n)
		v := rng.Uint64N(1 << 20)
		if round%50 == 0 {
			v = rng.Uint64() >> 1
		}
		for range n {
			v += 1 + rng.Uint64N(64)
			if rng.IntN(3) == 0 {
				v += rng.Uint64N(1 << 30)
			}
			rank := uint8(wins | rankFunc)
			if rng.IntN(10) == 0 {
				rank = uint8(rng.IntN(8))
			}
			kept = append(kept, candidate{value: v, size: uint32(rng.IntN(100)), rank: rank})
		}
		b := &tableBuilder{}
		for range 1 + rng.IntN(2) {
			data := make([]byte, elf.Sym64Size) // the reserved entry
			for range rng.IntN(20) {
				value, size := rng.Uint64(), uint64(rng.IntN(100))
				if len(kept) > 0 && rng.IntN(8) != 0 {
					c := kept[rng.IntN(len(kept))]
					value, size = c.value, uint64(c.size)
					switch rng.IntN(8) {
					case 0:
						size++
					case 1:
						value--
					case 2:
						value++
					case 3:
						size = uint64(rng.IntN(int(c.size) + 1))
					}
				}
				if rng.IntN(40) == 0 {
					size = 1 << 30
				}
				e := make([]byte, elf.Sym64Size)
				e[4] = byte(elf.STB_GLOBAL)<<4 | byte(elf.STT_FUNC)
				if rng.IntN(10) == 0 {
					e[4] = byte(elf.STB_GLOBAL)<<4 | byte(elf.STT_OBJECT) // not code: not looked at
				}
				binary.LittleEndian.PutUint16(e[6:], 1)
				binary.LittleEndian.PutUint64(e[8:], value)
				binary.LittleEndian.PutUint64(e[16:], size)
				data = append(data, e...)
			}
			b.deferred = append(b.deferred, &symTable{data: data, entSize: elf.Sym64Size, le64: true, code: code})
		}
		var cur *symTable
		want := b.coveredEach(kept, &addrIndex{}, &cur)
		got, ok := b.coveredSorted(kept, &cur)
		if !ok {
			seen["not packed"]++
			continue
		}
		if got != want {
			t.Fatalf("round %d: coveredSorted = %v, coveredEach %v", round, got, want)
		}
		seen[fmt.Sprint(want)]++
	}
	if seen["true"] < 100 || seen["false"] < 100 || seen["not packed"] < 10 {
		t.Fatalf("rounds: %v, too few of one", seen)
	}
}
