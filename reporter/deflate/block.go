package deflate

import (
	"math/bits"
	"slices"
)

const (
	endOfBlock   = 256
	numLitLen    = 286 // literal/length symbols a block may use
	numDist      = 30
	numCodeLen   = 19
	maxCodeBits  = 15 // longest literal/length or distance code
	maxCLenBits  = 7  // longest code-length code
	maxStoredLen = 1<<16 - 1
)

// Length symbols 257-285: the first length of each and its extra bits;
// distance symbols 0-29 likewise (RFC 1951, 3.2.5).
var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	// The order code-length code lengths are sent in.
	codeLenOrder = [numCodeLen]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

// lengthSymbols holds the index into lengthBase of each match length
// (minus minMatch): one load per match where a search took five.
var lengthSymbols = func() (t [maxMatch - minMatch + 1]uint8) {
	for length := minMatch; length <= maxMatch; length++ {
		s, _ := slices.BinarySearch(lengthBase[:], uint16(length))
		if s == len(lengthBase) || int(lengthBase[s]) > length {
			s--
		}
		t[length-minMatch] = uint8(s)
	}
	return t
}()

// lengthSymbol returns the index into lengthBase of a match length.
func lengthSymbol(length int) int { return int(lengthSymbols[length-minMatch]) }

// distSymbol returns the distance symbol of a match distance.
func distSymbol(dist int) int {
	if dist <= 4 {
		return dist - 1
	}
	// Two symbols per power of two above 4: the bit below the top one
	// picks between them.
	d := uint32(dist - 1)
	top := bits.Len32(d) - 1
	return 2*top + int(d>>(top-1)&1)
}

// fixedLitLenBits is the length of each literal/length symbol's code in
// the fixed Huffman code (RFC 1951, 3.2.6); every distance code is 5 bits.
func fixedLitLenBits(sym int) uint8 {
	switch {
	case sym < 144:
		return 8
	case sym < 256:
		return 9
	case sym < 280:
		return 7
	}
	return 8
}

// huffman is a canonical Huffman code: each symbol's code length and its
// code, bit-reversed as DEFLATE sends codes most significant bit first
// into a least-significant-first stream.
type huffman struct {
	bits []uint8
	code []uint16
}

// freqs counts the symbols of a run of tokens.
type freqs struct {
	lit  [numLitLen]int
	dist [numDist]int
	// extra is the number of extra bits the matches take; raw the
	// number of input bytes the tokens stand for.
	extra, raw int
}

func (f *freqs) add(t token) {
	if t&matchFlag == 0 {
		f.lit[t]++
		f.raw++
		return
	}
	length := int(t&0xff) + minMatch
	ls, ds := lengthSymbol(length), distSymbol(int(t>>8&0x7fff)+1)
	f.lit[257+ls]++
	f.dist[ds]++
	f.extra += int(lengthExtra[ls]) + int(distExtra[ds])
	f.raw += length
}

// merge sets f to the counts of a and b together.
func (f *freqs) merge(a, b *freqs) {
	for i := range f.lit {
		f.lit[i] = a.lit[i] + b.lit[i]
	}
	for i := range f.dist {
		f.dist[i] = a.dist[i] + b.dist[i]
	}
	f.extra, f.raw = a.extra+b.extra, a.raw+b.raw
}

// blockCoder sizes and writes blocks; it keeps its tables between blocks.
type blockCoder struct {
	litFreq  [numLitLen]int
	clFreq   [numCodeLen]int
	lit      huffman
	dist     huffman
	clen     huffman
	fixedLit huffman
	fixedDst huffman
	// lens holds the literal/length then distance code lengths; rle their
	// run-length encoding, a code-length symbol in the low 5 bits and its
	// extra bits' value above.
	lens  []uint8
	rle   []uint16
	nlit  int
	ndist int
	nclen int
	tb    treeBuilder
}

// Block types.
const (
	stored = iota
	fixed
	dynamic
)

// plan makes the dynamic codes of a block of tokens counted by f (with
// its end-of-block symbol) and returns the cheapest type of block for
// them and its size in bits.
func (c *blockCoder) plan(f *freqs) (kind, size int) {
	c.litFreq = f.lit
	c.litFreq[endOfBlock]++
	c.tb.lengths(c.litFreq[:], maxCodeBits, &c.lit)
	c.tb.lengths(f.dist[:], maxCodeBits, &c.dist)
	c.nlit, c.ndist = usedCodes(c.lit.bits, 257), usedCodes(c.dist.bits, 1)
	c.lens = append(append(c.lens[:0], c.lit.bits[:c.nlit]...), c.dist.bits[:c.ndist]...)
	c.runLengths()
	c.tb.lengths(c.clFreq[:], maxCLenBits, &c.clen)
	c.nclen = numCodeLen
	for c.nclen > 4 && c.clen.bits[codeLenOrder[c.nclen-1]] == 0 {
		c.nclen--
	}

	dynamicBits := 3 + 5 + 5 + 4 + 3*c.nclen + f.extra
	for i, n := range c.clFreq {
		dynamicBits += n * int(c.clen.bits[i])
	}
	dynamicBits += 2*c.clFreq[16] + 3*c.clFreq[17] + 7*c.clFreq[18]
	fixedBits := 3 + f.extra
	for i, n := range c.litFreq {
		dynamicBits += n * int(c.lit.bits[i])
		fixedBits += n * int(fixedLitLenBits(i))
	}
	for i, n := range f.dist {
		dynamicBits += n * int(c.dist.bits[i])
		fixedBits += n * 5
	}
	// A stored block starts at a byte boundary and has a 4-byte header;
	// more than 65535 bytes take several.
	nstored := max(1, (f.raw+maxStoredLen-1)/maxStoredLen)
	storedBits := nstored*(3+7+32) + 8*f.raw

	switch {
	case storedBits < dynamicBits && storedBits < fixedBits:
		return stored, storedBits
	case fixedBits <= dynamicBits:
		return fixed, fixedBits
	}
	return dynamic, dynamicBits
}

// write writes one block of tokens, counted by f, which cover raw (needed
// for a stored block), as the smallest of a dynamic, fixed or stored
// block.
func (c *blockCoder) write(w *bitWriter, f *freqs, tokens []token, raw []byte, final bool) {
	kind, _ := c.plan(f)
	switch kind {
	case stored:
		writeStored(w, raw, final)
	case fixed:
		if c.fixedLit.bits == nil {
			c.fixedLit, c.fixedDst = fixedCodes()
		}
		w.write(boolBit(final)|1<<1, 3)
		writeTokens(w, tokens, &c.fixedLit, &c.fixedDst)
	default:
		w.write(boolBit(final)|2<<1, 3)
		w.write(uint32(c.nlit-257), 5)
		w.write(uint32(c.ndist-1), 5)
		w.write(uint32(c.nclen-4), 4)
		for _, s := range codeLenOrder[:c.nclen] {
			w.write(uint32(c.clen.bits[s]), 3)
		}
		for _, r := range c.rle {
			sym := r & 0x1f
			w.write(uint32(c.clen.code[sym]), uint(c.clen.bits[sym]))
			switch sym {
			case 16:
				w.write(uint32(r>>5), 2)
			case 17:
				w.write(uint32(r>>5), 3)
			case 18:
				w.write(uint32(r>>5), 7)
			}
		}
		writeTokens(w, tokens, &c.lit, &c.dist)
	}
}

func boolBit(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// usedCodes returns how many of a code's lengths must be sent: up to the
// last nonzero one, at least least.
func usedCodes(lens []uint8, least int) int {
	n := len(lens)
	for n > least && lens[n-1] == 0 {
		n--
	}
	return n
}

// runLengths encodes c.lens with the code-length alphabet's repeat
// symbols into c.rle and counts the symbols in c.clFreq. Runs may cross
// from the literal/length lengths into the distance lengths (RFC 1951,
// 3.2.7).
func (c *blockCoder) runLengths() {
	clear(c.clFreq[:])
	c.rle = c.rle[:0]
	add := func(sym, extra int) {
		c.rle = append(c.rle, uint16(sym|extra<<5))
		c.clFreq[sym]++
	}
	lens := c.lens
	for i := 0; i < len(lens); {
		l := lens[i]
		run := 1
		for i+run < len(lens) && lens[i+run] == l {
			run++
		}
		i += run
		if l == 0 {
			for run >= 11 {
				n := min(run, 138)
				add(18, n-11)
				run -= n
			}
			if run >= 3 {
				add(17, run-3)
				run = 0
			}
			for ; run > 0; run-- {
				add(0, 0)
			}
			continue
		}
		// The first of a run is sent as itself, the rest repeated.
		add(int(l), 0)
		run--
		for run >= 3 {
			n := min(run, 6)
			add(16, n-3)
			run -= n
		}
		for ; run > 0; run-- {
			add(int(l), 0)
		}
	}
}

func writeTokens(w *bitWriter, tokens []token, lit, dist *huffman) {
	for _, t := range tokens {
		if t&matchFlag == 0 {
			w.write(uint32(lit.code[t]), uint(lit.bits[t]))
			continue
		}
		length, d := int(t&0xff)+minMatch, int(t>>8&0x7fff)+1
		ls, ds := lengthSymbol(length), distSymbol(d)
		w.write(uint32(lit.code[257+ls]), uint(lit.bits[257+ls]))
		if eb := lengthExtra[ls]; eb > 0 {
			w.write(uint32(length-int(lengthBase[ls])), uint(eb))
		}
		w.write(uint32(dist.code[ds]), uint(dist.bits[ds]))
		if eb := distExtra[ds]; eb > 0 {
			w.write(uint32(d-int(distBase[ds])), uint(eb))
		}
	}
	w.write(uint32(lit.code[endOfBlock]), uint(lit.bits[endOfBlock]))
}

func writeStored(w *bitWriter, raw []byte, final bool) {
	for first := true; first || len(raw) > 0; first = false {
		n := min(len(raw), maxStoredLen)
		last := final && n == len(raw)
		w.write(boolBit(last), 3) // BTYPE 00
		w.align()
		w.out = append(w.out, byte(n), byte(n>>8), byte(^n), byte(^n>>8))
		w.out = append(w.out, raw[:n]...)
		raw = raw[n:]
	}
}

// fixedCodes returns the fixed literal/length and distance codes.
func fixedCodes() (lit, dist huffman) {
	lit.bits = make([]uint8, 288)
	for i := range lit.bits {
		lit.bits[i] = fixedLitLenBits(i)
	}
	dist.bits = make([]uint8, 30)
	for i := range dist.bits {
		dist.bits[i] = 5
	}
	assignCodes(&lit)
	assignCodes(&dist)
	return lit, dist
}

// assignCodes gives each symbol its canonical code from the lengths
// (RFC 1951, 3.2.2), bit-reversed.
func assignCodes(h *huffman) {
	var count [maxCodeBits + 1]uint16
	for _, b := range h.bits {
		count[b]++
	}
	count[0] = 0
	var next [maxCodeBits + 2]uint16
	code := uint16(0)
	for b := 1; b <= maxCodeBits; b++ {
		code = (code + count[b-1]) << 1
		next[b] = code
	}
	h.code = slices.Grow(h.code[:0], len(h.bits))[:len(h.bits)]
	for s, b := range h.bits {
		if b == 0 {
			h.code[s] = 0
			continue
		}
		h.code[s] = bits.Reverse16(next[b]) >> (16 - b)
		next[b]++
	}
}

// treeBuilder builds Huffman codes, keeping its scratch space.
type treeBuilder struct {
	syms  []uint64
	freq  []int
	nodes []node
	depth []uint8
}

type node struct {
	freq        int
	left, right int32 // children in nodes; -1 for a leaf
	sym         int32
}

// lengths sets h to a Huffman code for freq with no code longer than
// maxBits. At least two symbols get a code, as zlib does: decoders are
// not all content with a code of one symbol. If the optimal code is too
// deep, the frequencies are halved (keeping every used symbol) until it
// fits.
func (tb *treeBuilder) lengths(freq []int, maxBits int, h *huffman) {
	tb.freq = append(tb.freq[:0], freq...)
	used := 0
	for _, f := range tb.freq {
		if f > 0 {
			used++
		}
	}
	for s := 0; used < 2; s++ {
		if tb.freq[s] == 0 {
			tb.freq[s] = 1
			used++
		}
	}
	h.bits = slices.Grow(h.bits[:0], len(freq))[:len(freq)]
	for {
		clear(h.bits)
		if tb.build(h.bits) <= maxBits {
			break
		}
		for s, f := range tb.freq {
			if f > 0 {
				tb.freq[s] = max(1, f/2)
			}
		}
	}
	assignCodes(h)
}

// build writes each symbol's depth in an optimal code for tb.freq into
// depth, and returns the largest.
func (tb *treeBuilder) build(depth []uint8) int {
	// Symbols sorted by frequency, then symbol: one key each.
	tb.syms = tb.syms[:0]
	for s, f := range tb.freq {
		if f > 0 {
			tb.syms = append(tb.syms, uint64(f)<<16|uint64(s))
		}
	}
	slices.Sort(tb.syms)
	// Two queues: the leaves by frequency, and the internal nodes,
	// which are made in order of frequency.
	tb.nodes = tb.nodes[:0]
	for _, k := range tb.syms {
		tb.nodes = append(tb.nodes, node{freq: int(k >> 16), left: -1, right: -1, sym: int32(k & 0xffff)})
	}
	leaves := len(tb.nodes)
	nextLeaf, nextInner := 0, leaves
	take := func() int32 {
		if nextLeaf < leaves && (nextInner >= len(tb.nodes) || tb.nodes[nextLeaf].freq <= tb.nodes[nextInner].freq) {
			nextLeaf++
			return int32(nextLeaf - 1)
		}
		nextInner++
		return int32(nextInner - 1)
	}
	for len(tb.nodes) < 2*leaves-1 {
		a, b := take(), take()
		tb.nodes = append(tb.nodes, node{freq: tb.nodes[a].freq + tb.nodes[b].freq, left: a, right: b, sym: -1})
	}
	// Depths from the root (the last node) down: a node's children come
	// before it, so one backward pass gives every node its depth.
	d := slices.Grow(tb.depth[:0], len(tb.nodes))[:len(tb.nodes)]
	tb.depth = d
	d[len(d)-1] = 0
	maxDepth := 0
	for i := len(tb.nodes) - 1; i >= 0; i-- {
		n := tb.nodes[i]
		if n.left < 0 {
			depth[n.sym] = d[i]
			maxDepth = max(maxDepth, int(d[i]))
			continue
		}
		d[n.left], d[n.right] = d[i]+1, d[i]+1
	}
	return maxDepth
}
