package keysort

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
)

type rec struct {
	key  uint64
	id   int
	junk [3]uint64
}

func recKey(r *rec) uint64 { return r.key }

// TestStableMatchesSortStable compares Stable with the standard library's
// stable sort on inputs of many sizes and key spreads: sorted, reversed,
// nearly sorted, random, and with many equal keys.
func TestStableMatchesSortStable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf Buffer
	for _, n := range []int{0, 1, 2, 3, 17, 255, 256, 257, 1000, 65536, 100003} {
		for _, kind := range []string{"sorted", "reversed", "nearly", "random", "dups", "wide"} {
			recs := make([]rec, n)
			for i := range recs {
				var k uint64
				switch kind {
				case "sorted":
					k = uint64(i) * 16
				case "reversed":
					k = uint64(n-i) * 16
				case "nearly":
					k = uint64(i) * 16
					if rng.IntN(50) == 0 {
						k = rng.Uint64N(uint64(n)*16 + 1)
					}
				case "random":
					k = rng.Uint64N(1 << 40)
				case "dups":
					k = rng.Uint64N(8)
				case "wide":
					k = rng.Uint64() >> 20
				}
				recs[i] = rec{key: k, id: i, junk: [3]uint64{k, uint64(i), 7}}
			}
			want := slices.Clone(recs)
			slices.SortStableFunc(want, func(a, b rec) int { return cmp.Compare(a.key, b.key) })
			if !Stable(recs, recKey, &buf) {
				t.Fatalf("n=%d %s: keys did not fit", n, kind)
			}
			if !slices.Equal(recs, want) {
				t.Fatalf("n=%d %s: order differs from a stable sort", n, kind)
			}
		}
	}
}

// TestStableKeyWidths compares Stable with the standard library's stable
// sort on random keys of every width that fits beside the index, so that
// every number of radix passes and width of digit is sorted once, each
// key with its top bit set so that the width is the one chosen.
func TestStableKeyWidths(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var buf Buffer
	const n = 3000 // 12 bits of index
	for width := 1; width <= 64-12; width++ {
		recs := make([]rec, n)
		for i := range recs {
			k := rng.Uint64N(1 << (width - 1))
			if i%2 == 0 {
				k |= 1 << (width - 1)
			}
			recs[i] = rec{key: k, id: i}
		}
		want := slices.Clone(recs)
		slices.SortStableFunc(want, func(a, b rec) int { return cmp.Compare(a.key, b.key) })
		if !Stable(recs, recKey, &buf) {
			t.Fatalf("%d-bit keys: did not fit", width)
		}
		if !slices.Equal(recs, want) {
			t.Fatalf("%d-bit keys: order differs from a stable sort", width)
		}
	}
}

// TestWordsMatchesSortStable compares Words with the standard library's
// stable sort by the bits above shift, on words of many sizes, shifts and
// spreads (sorted, random, many equal keys, the full 64 bits), so that
// the low bits tell equal keys apart and the order they keep shows.
func TestWordsMatchesSortStable(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var buf Buffer
	for _, n := range []int{0, 1, 2, 3, 100, 1000, 75000} {
		for _, shift := range []uint{0, 1, 24, 40, 63} {
			for _, kind := range []string{"sorted", "random", "dups", "full"} {
				words := make([]uint64, n)
				for i := range words {
					switch kind {
					case "sorted":
						words[i] = uint64(i)<<shift | rng.Uint64()&(1<<shift-1)
					case "random":
						words[i] = rng.Uint64N(1<<27)<<shift | rng.Uint64()&(1<<shift-1)
					case "dups":
						words[i] = rng.Uint64N(4)<<shift | rng.Uint64()&(1<<shift-1)
					case "full":
						words[i] = rng.Uint64()
					}
				}
				want := slices.Clone(words)
				slices.SortStableFunc(want, func(a, b uint64) int { return cmp.Compare(a>>shift, b>>shift) })
				Words(words, shift, &buf)
				if !slices.Equal(words, want) {
					t.Fatalf("n=%d shift=%d %s: order differs from a stable sort", n, shift, kind)
				}
			}
		}
	}
}

// TestStableRefusesWideKeys checks that keys that do not fit beside an
// index are refused, with the records left as they were.
func TestStableRefusesWideKeys(t *testing.T) {
	recs := []rec{{key: 1 << 63, id: 0}, {key: 1, id: 1}, {key: 0, id: 2}}
	orig := slices.Clone(recs)
	if Stable(recs, recKey, nil) {
		t.Fatal("Stable sorted keys that do not fit")
	}
	if !slices.Equal(recs, orig) {
		t.Fatal("Stable changed records it refused to sort")
	}
	// The same keys fit when there is one record fewer bit of index.
	recs = []rec{{key: 1<<63 - 1}, {key: 1}}
	if !Stable(recs, recKey, nil) || recs[0].key != 1 {
		t.Fatalf("Stable(%v) did not sort keys that fit", recs)
	}
}

// BenchmarkStable compares Stable with slices.SortFunc on 40-byte records
// with random 32-bit keys, the shape of a large binary's symbols.
func BenchmarkStable(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 200000
	orig := make([]rec, n)
	for i := range orig {
		orig[i] = rec{key: rng.Uint64N(1 << 32), id: i}
	}
	recs := make([]rec, n)
	b.Run("keysort", func(b *testing.B) {
		var buf Buffer
		b.ReportAllocs()
		for b.Loop() {
			copy(recs, orig)
			Stable(recs, recKey, &buf)
		}
	})
	b.Run("slices.SortFunc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			copy(recs, orig)
			slices.SortFunc(recs, func(a, b rec) int {
				if c := cmp.Compare(a.key, b.key); c != 0 {
					return c
				}
				return cmp.Compare(a.id, b.id)
			})
		}
	})
}

// BenchmarkStableWords sorts 100,000 words by 27-bit keys above 24 bits,
// the packed addresses and sizes of a large program's dynamic symbols,
// by Stable and by Words.
func BenchmarkStableWords(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 100000
	orig := make([]uint64, n)
	for i := range orig {
		orig[i] = rng.Uint64N(1<<27)<<24 | rng.Uint64N(1<<24)
	}
	words := make([]uint64, n)
	b.Run("Stable", func(b *testing.B) {
		key := func(w *uint64) uint64 { return *w >> 24 }
		var buf Buffer
		b.ReportAllocs()
		for b.Loop() {
			copy(words, orig)
			Stable(words, key, &buf)
		}
	})
	b.Run("Words", func(b *testing.B) {
		var buf Buffer
		b.ReportAllocs()
		for b.Loop() {
			copy(words, orig)
			Words(words, 24, &buf)
		}
	})
}
