// Package deflate compresses whole buffers into gzip members (RFC 1952)
// holding one DEFLATE stream (RFC 1951), for the OTLP senders.
//
// Its output is standard gzip, which any gzip reader decodes; on the
// whole-agent benchmark's exports (protobuf) it is about 6 % smaller than
// compress/gzip's at its default level (5.5 % on the captured export),
// for 20-40 % less CPU (BenchmarkExport, BenchmarkExportStd, on a shared
// host). Two things make the difference in size:
//   - It finds matches of three bytes, where compress/flate never emits a
//     match shorter than four. Protobuf is full of three-byte repeats (a
//     field's tag followed by a two-byte index or length). This alone
//     gives zlib's size, 1.6 % smaller.
//   - It cuts blocks where the data changes (see appendDeflate), where
//     zlib and compress/flate cut them at a fixed number of symbols. An
//     export's parts (names, indices, addresses, timestamps) each get
//     Huffman codes of their own.
//
// The match search follows zlib's: hash chains over a 32 KiB window and
// lazy matching. Each block is sent with its own codes, the fixed codes
// or stored, whichever is smallest.
package deflate

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/bits"
)

const (
	windowSize = 1 << 15
	windowMask = windowSize - 1
	minMatch   = 3
	maxMatch   = 258
	// maxDist is the farthest a match may reach back. It stays below the
	// window so that a hash chain never follows a slot of prev that a
	// newer position has overwritten (as zlib's MAX_DIST).
	maxDist = windowSize - maxMatch - minMatch - 1
	// tooFar is the distance beyond which a three-byte match is taken
	// to cost more than its literals (zlib's TOO_FAR is 4096; 1024 fits
	// protobuf better: 0.1-0.2 % smaller).
	tooFar   = 1024
	hashBits = 15
	hashSize = 1 << hashBits
	// maxBlockTokens bounds the symbols of one block.
	maxBlockTokens = 1 << 15
	// chunkTokens is how many symbols blocks are cut between.
	chunkTokens = 256
	// MaxInput is the largest input AppendGzip takes.
	MaxInput = 1<<31 - 2
)

// limits configure the match search as zlib's levels do: a match at
// least good long shortens the search for a longer one, a match at least
// lazy long is taken without looking one byte further, a match nice long
// ends the search, and chain bounds the candidates tried.
type limits struct {
	good, lazy, nice, chain int
}

// searchLimits are zlib's level 5 with a sixteenth of its chain. On the
// captured export, against the limits of session 8 (good 8, lazy 32,
// nice 128, chain 16: zlib's level 6 with an eighth of its chain), the
// output is 1.05 % larger for a fifth less CPU (chain 8 alone: 0.6 %
// larger, 13 % less CPU; chain 4 and nice 64: 1.3 % larger, 20 % less).
// The search was half of the encoder's time, most of it in the chains.
var searchLimits = limits{good: 4, lazy: 16, nice: 64, chain: 8}

// An Encoder compresses buffers. It holds about 400 KB of tables, reused
// by every call; it is not safe for concurrent use.
type Encoder struct {
	lim limits
	// head holds, for each hash of three bytes, the latest position with
	// that hash plus one (0: none); prev holds, for a position (modulo
	// the window), the position before it with the same hash, plus one.
	head [hashSize]int32
	prev [windowSize]int32

	// tokens are the current block's symbols, then those of the chunk
	// being counted; cur, chunk and merged count them.
	tokens             []token
	cur, chunk, merged freqs
	bw                 bitWriter
	blk                blockCoder
}

// NewEncoder returns an Encoder.
func NewEncoder() *Encoder {
	return &Encoder{lim: searchLimits, tokens: make([]token, 0, maxBlockTokens+chunkTokens)}
}

// ErrTooLarge is returned for an input of more than MaxInput bytes.
var ErrTooLarge = errors.New("deflate: input too large")

// AppendGzip appends to dst src compressed as one gzip member, with no
// name and no modification time, and returns the extended slice.
func (e *Encoder) AppendGzip(dst, src []byte) ([]byte, error) {
	if len(src) > MaxInput {
		return dst, ErrTooLarge
	}
	// ID1, ID2, CM (deflate), FLG, MTIME (none), XFL, OS (unknown).
	dst = append(dst, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255)
	dst = e.appendDeflate(dst, src)
	dst = binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(src))
	return binary.LittleEndian.AppendUint32(dst, uint32(len(src))), nil
}

// appendDeflate appends the DEFLATE stream of src to dst.
//
// Blocks are cut greedily: tokens are counted in chunks of chunkTokens,
// and each chunk joins the block before it unless the two take fewer
// bits as blocks of their own (by estimate), each with codes fitted to
// its part of the input. A protobuf's parts differ (names, then indices,
// then timestamps), and blocks cut where they change make the output
// about 5 % smaller than zlib's blocks of a fixed number of symbols.
func (e *Encoder) appendDeflate(dst, src []byte) []byte {
	clear(e.head[:])
	e.tokens = e.tokens[:0]
	e.bw = bitWriter{out: dst}
	e.cur, e.chunk = freqs{}, freqs{}
	curTokens, curBits, blockStart := 0, 0, 0
	endChunk := func() {
		chunkBits := estimate(&e.chunk)
		switch {
		case curTokens == 0:
			e.cur, curBits = e.chunk, chunkBits
		default:
			e.merged.merge(&e.cur, &e.chunk)
			mergedBits := estimate(&e.merged)
			if mergedBits <= curBits+chunkBits && len(e.tokens) <= maxBlockTokens {
				e.cur, curBits = e.merged, mergedBits
				break
			}
			e.blk.write(&e.bw, &e.cur, e.tokens[:curTokens], src[blockStart:blockStart+e.cur.raw], false)
			blockStart += e.cur.raw
			e.tokens = e.tokens[:copy(e.tokens, e.tokens[curTokens:])]
			e.cur, curBits = e.chunk, chunkBits
		}
		curTokens = len(e.tokens)
		e.chunk = freqs{}
	}
	emit := func(t token) {
		e.tokens = append(e.tokens, t)
		e.chunk.add(t)
		if len(e.tokens)-curTokens == chunkTokens {
			endChunk()
		}
	}

	// Lazy matching, as zlib's deflate_slow: a match found at i-1 is
	// emitted only if the match at i is no longer.
	lim := e.lim
	n := len(src)
	prevLen, prevDist := minMatch-1, 0
	pending := false // src[i-1] is not emitted yet
	for i := 0; i < n; {
		curLen, curDist := minMatch-1, 0
		if i+minMatch <= n {
			cand := e.insert(src, i)
			if cand >= 0 && prevLen < lim.lazy && i-cand <= maxDist {
				curLen, curDist = e.longestMatch(src, i, cand, prevLen)
				if curLen == minMatch && curDist > tooFar {
					curLen = minMatch - 1
				}
			}
		}
		if prevLen >= minMatch && curLen <= prevLen {
			emit(matchToken(prevLen, prevDist))
			end := i - 1 + prevLen
			for j := i + 1; j < end && j+minMatch <= n; j++ {
				e.insert(src, j)
			}
			i = end
			pending = false
			prevLen = minMatch - 1
			continue
		}
		if pending {
			emit(literalToken(src[i-1]))
		}
		pending = true
		prevLen, prevDist = curLen, curDist
		i++
	}
	if pending {
		emit(literalToken(src[n-1]))
	}
	if len(e.tokens) > curTokens {
		endChunk()
	}
	e.blk.write(&e.bw, &e.cur, e.tokens, src[blockStart:], true)
	return e.bw.flush()
}

func hash3(b []byte) uint32 {
	v := uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
	return (v * 2654435761) >> (32 - hashBits)
}

// insert records position i under the hash of its three bytes and
// returns the position recorded there before it, or -1.
func (e *Encoder) insert(src []byte, i int) int {
	h := hash3(src[i:])
	prev := e.head[h]
	e.prev[i&windowMask] = prev
	e.head[h] = int32(i + 1)
	return int(prev) - 1
}

// longestMatch walks the hash chain from cand for the longest match at
// i longer than best, and returns its length and distance (best and 0
// if there is none).
func (e *Encoder) longestMatch(src []byte, i, cand, best int) (length, dist int) {
	lim := e.lim
	chain := lim.chain
	if best >= lim.good {
		chain = max(1, chain>>2)
	}
	maxLen := min(maxMatch, len(src)-i)
	nice := min(lim.nice, maxLen)
	length = best
	cur := src[i : i+maxLen]
	for stop := i - maxDist; cand >= 0 && cand > stop; {
		c := src[cand:]
		// The byte that would make the match longer first: most
		// candidates fail on it.
		if length < maxLen && c[length] == cur[length] && c[0] == cur[0] && c[1] == cur[1] {
			if l := matchLen(c, cur); l > length {
				length, dist = l, i-cand
				if l >= nice {
					break
				}
			}
		}
		if chain--; chain == 0 {
			break
		}
		cand = int(e.prev[cand&windowMask]) - 1
	}
	return length, dist
}

// matchLen returns how many bytes a and b (the shorter) share from their
// start, comparing eight at a time.
func matchLen(a, b []byte) int {
	n := 0
	for len(b)-n >= 8 {
		if x := binary.LittleEndian.Uint64(a[n:]) ^ binary.LittleEndian.Uint64(b[n:]); x != 0 {
			return n + bits.TrailingZeros64(x)/8
		}
		n += 8
	}
	for n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// A token is a literal byte or a match: length-3 in bits 0-7, distance-1
// in bits 8-22, bit 31 set.
type token uint32

const matchFlag = 1 << 31

func literalToken(b byte) token { return token(b) }

func matchToken(length, dist int) token {
	return token(matchFlag | uint32(dist-1)<<8 | uint32(length-minMatch))
}

// bitWriter writes bits least significant first, as DEFLATE packs them.
type bitWriter struct {
	out  []byte
	bits uint64
	n    uint
}

func (w *bitWriter) write(v uint32, nbits uint) {
	w.bits |= uint64(v) << w.n
	w.n += nbits
	if w.n >= 32 {
		w.out = binary.LittleEndian.AppendUint32(w.out, uint32(w.bits))
		w.bits >>= 32
		w.n -= 32
	}
}

// align pads with zero bits to a byte boundary.
func (w *bitWriter) align() {
	w.write(0, (8-w.n%8)%8)
	for w.n >= 8 {
		w.out = append(w.out, byte(w.bits))
		w.bits >>= 8
		w.n -= 8
	}
}

// flush writes what remains, padded to a byte, and returns the output.
func (w *bitWriter) flush() []byte {
	w.align()
	return w.out
}

// estimate returns about how many bits a block of the tokens f counts
// takes with codes of its own: the entropy of their symbols, their extra
// bits, and a header of about 3 bits for each symbol used and 60 more.
// It decides where blocks are cut, for a fifth of the CPU building the
// codes would take; cutting on it rather than on the codes' sizes gives
// 0.3 % smaller output on the benchmark's exports.
func estimate(f *freqs) int {
	bits := float64(3 + 14 + 60 + f.extra)
	for _, counts := range [...][]int{f.lit[:], f.dist[:]} {
		total := 0
		for _, n := range counts {
			total += n
		}
		if total == 0 {
			continue
		}
		lt := log2(total)
		for _, n := range counts {
			if n > 0 {
				bits += float64(n)*(lt-log2(n)) + 3
			}
		}
	}
	return int(bits)
}

// log2Table holds math.Log2 of the counts below its length, which most
// counts of estimate are (those of a chunk all are): a load instead of
// a call that took a fifth of the encoder's time.
var log2Table = func() (t [1024]float64) {
	for i := 1; i < len(t); i++ {
		t[i] = math.Log2(float64(i))
	}
	return t
}()

// log2 returns math.Log2(n) for n > 0.
func log2(n int) float64 {
	if uint(n) < uint(len(log2Table)) {
		return log2Table[n]
	}
	return math.Log2(float64(n))
}
