// Package keysort sorts records by a 64-bit key with a radix sort of
// packed (key, index) words, then moves the records into place: for the
// tens to hundreds of thousands of symbols or FDEs of a large binary,
// several times faster than a comparison sort of the records themselves,
// which moves whole records at every step. Words that hold their own key
// (Words) are sorted by the same radix sort directly.
package keysort

import "math/bits"

// Buffer holds the words a sort works in, kept from one sort to the next
// by its owner. The zero Buffer is ready to use.
type Buffer struct {
	words, tmp []uint64
}

// Bytes returns the memory the buffer holds.
func (b *Buffer) Bytes() int { return 8 * (cap(b.words) + cap(b.tmp)) }

// Trim frees the buffer's memory when it is more than max bytes.
func (b *Buffer) Trim(max int) {
	if b.Bytes() > max {
		*b = Buffer{}
	}
}

// Stable sorts recs by key, keeping the order of records with equal keys,
// and reports true. It reports false and leaves recs as they were when a
// key does not fit beside an index of recs in 64 bits (key ≥ 2^(64-k),
// where 2^k ≥ len(recs)); the caller then sorts by other means. buf, when
// not nil, lends its words.
func Stable[T any](recs []T, key func(*T) uint64, buf *Buffer) bool {
	n := len(recs)
	if n < 2 {
		return true
	}
	if buf == nil {
		buf = new(Buffer)
	}
	shift := uint(bits.Len(uint(n - 1)))
	words := grow(buf.words, n)
	buf.words = words
	var all uint64 // the bits set in any key
	sorted := true
	prev := uint64(0)
	for i := range recs {
		k := key(&recs[i])
		all |= k
		if k < prev {
			sorted = false
		}
		prev = k
		words[i] = k<<shift | uint64(i)
	}
	if shift > 0 && all>>(64-shift) != 0 {
		return false
	}
	if sorted {
		return true
	}
	tmp := grow(buf.tmp, n)
	buf.tmp = tmp
	words = radix(words, tmp, shift, bits.Len64(all))
	permute(recs, words, uint64(1)<<shift-1)
	return true
}

// Words sorts words by their bits above shift, keeping the order of
// words equal there, in place. It is Stable for records that are their
// own keys: without a word of key and index per record, nor the moves
// that put the records in the order of those words, which are most of
// Stable's time on words. buf, when not nil, lends its scratch words.
func Words(words []uint64, shift uint, buf *Buffer) {
	if len(words) < 2 || shift >= 64 {
		return
	}
	var all uint64
	sorted := true
	for i, w := range words {
		all |= w
		if i > 0 && w>>shift < words[i-1]>>shift {
			sorted = false
		}
	}
	if sorted {
		return
	}
	if buf == nil {
		buf = new(Buffer)
	}
	tmp := grow(buf.tmp, len(words))
	buf.tmp = tmp
	if out := radix(words, tmp, shift, bits.Len64(all>>shift)); &out[0] != &words[0] {
		copy(words, out)
	}
}

// grow returns s resized to n elements, reallocated when it is too small.
func grow(s []uint64, n int) []uint64 {
	if cap(s) < n {
		return make([]uint64, n)
	}
	return s[:n]
}

// maxDigitBits is the widest digit radix sorts by: 2^11 counts (16 KiB)
// stay in the first-level cache, and the scatter of a pass writes to as
// many places at once, which the caches still absorb.
const maxDigitBits = 11

// radix sorts words by their bits above shift (keys of keyBits bits),
// stably, with tmp as scratch, and returns the slice that holds the
// result (words or tmp). Since the words are in index order, which is in
// their bits below shift, the result is in the words' full order.
//
// Each pass reads and moves every word, so the keys are cut into as few
// digits as digits of maxDigitBits allow, of equal width: a symbol
// table's 27-bit addresses take three passes of 9 bits rather than four
// of 8.
func radix(words, tmp []uint64, shift uint, keyBits int) []uint64 {
	if keyBits == 0 {
		return words
	}
	passes := (keyBits + maxDigitBits - 1) / maxDigitBits
	digitBits := uint((keyBits + passes - 1) / passes)
	mask := uint64(1)<<digitBits - 1
	var counts [1 << maxDigitBits]int
	for lo := uint(0); lo < uint(keyBits); lo += digitBits {
		s := shift + lo
		c := counts[:mask+1]
		clear(c)
		for _, w := range words {
			c[w>>s&mask]++
		}
		if c[words[0]>>s&mask] == len(words) {
			continue // all share this digit
		}
		pos := 0
		for d, n := range c {
			c[d] = pos
			pos += n
		}
		for _, w := range words {
			d := w >> s & mask
			tmp[c[d]] = w
			c[d]++
		}
		words, tmp = tmp, words
	}
	return words
}

// permute moves recs into the order of words: position j receives the
// record whose index is in the low bits (mask) of words[j]. It follows
// each cycle of the permutation once, marking a word done by setting its
// index to its own position.
func permute[T any](recs []T, words []uint64, mask uint64) {
	for start := range words {
		if int(words[start]&mask) == start {
			continue
		}
		saved := recs[start]
		j := start
		for {
			src := int(words[j] & mask)
			words[j] = words[j]&^mask | uint64(j)
			if src == start {
				recs[j] = saved
				break
			}
			recs[j] = recs[src]
			j = src
		}
	}
}
