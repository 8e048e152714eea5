package v8

import (
	"errors"
	"fmt"
	"sort"
)

// A source position table (V8's SourcePositionTableBuilder) is a byte
// string of entries, each two VLQ-encoded signed deltas from the entry
// before: the code offset (a bytecode offset, or a pc offset in machine
// code), stored as d when the position is a statement and -d-1 when it is
// an expression, then the SourcePosition value. VLQ: 7 bits a byte, low
// groups first, the high bit set on every byte but the last; the value is
// zig-zag encoded ((n << 1) ^ (n >> 63)). The deltas start from code
// offset -1 (kFunctionEntryBytecodeOffset: bytecode's first entry is the
// stack check on function entry, before the first bytecode) and source
// position 0.

// ErrBadPositionTable says a source position table does not decode.
var ErrBadPositionTable = errors.New("bad source position table")

// functionEntryOffset is the code offset before the first entry.
const functionEntryOffset = -1

// maxVLQBytes bounds one encoded value: 64 bits in 7-bit groups.
const maxVLQBytes = 10

// decodeVLQ decodes one signed VLQ value at b[i:], returning it and the
// index after it.
func decodeVLQ(b []byte, i int) (int64, int, error) {
	var u uint64
	for n := 0; ; n++ {
		if i >= len(b) {
			return 0, i, fmt.Errorf("%w: value cut at byte %d", ErrBadPositionTable, i)
		}
		if n == maxVLQBytes {
			return 0, i, fmt.Errorf("%w: value over %d bytes at byte %d", ErrBadPositionTable, maxVLQBytes, i)
		}
		c := b[i]
		i++
		u |= uint64(c&0x7f) << (7 * n)
		if c&0x80 == 0 {
			break
		}
	}
	return int64(u>>1) ^ -int64(u&1), i, nil
}

// SourcePosition is V8's 64-bit source position: bit 0 says external
// (a line in another file, wasm only), bits 1-30 the script offset plus
// one, bits 31-46 the inlining id plus one (0: not inlined).
type SourcePosition uint64

// External reports whether p is an external (file and line) position.
func (p SourcePosition) External() bool { return p&1 != 0 }

// ScriptOffset returns the offset in the script's source, in characters,
// or -1 when unknown.
func (p SourcePosition) ScriptOffset() int { return int(p>>1&(1<<30-1)) - 1 }

// InliningID returns the index into the code's inlining positions of
// the function inlined here, or -1 when the position is in the
// optimized function itself.
func (p SourcePosition) InliningID() int { return int(p>>31&(1<<16-1)) - 1 }

// PositionEntry is one decoded entry of a source position table.
type PositionEntry struct {
	CodeOffset int64
	Position   SourcePosition
	Statement  bool
}

// maxPositionEntries bounds the entries decoded from one table.
const maxPositionEntries = 1 << 20

// DecodePositions decodes a whole source position table.
func DecodePositions(table []byte) ([]PositionEntry, error) {
	var out []PositionEntry
	code, pos := int64(functionEntryOffset), int64(0)
	for i := 0; i < len(table); {
		if len(out) == maxPositionEntries {
			return nil, fmt.Errorf("%w: over %d entries", ErrBadPositionTable, maxPositionEntries)
		}
		d, next, err := decodeVLQ(table, i)
		if err != nil {
			return nil, err
		}
		statement := d >= 0
		if !statement {
			d = -d - 1
		}
		p, next, err := decodeVLQ(table, next)
		if err != nil {
			return nil, err
		}
		i = next
		code += d
		pos += p
		if code < functionEntryOffset {
			return nil, fmt.Errorf("%w: negative code offset %d", ErrBadPositionTable, code)
		}
		out = append(out, PositionEntry{CodeOffset: code, Position: SourcePosition(pos), Statement: statement})
	}
	return out, nil
}

// PositionAt returns the position of the code at offset: the last entry
// whose code offset is not past it (the table is sorted by code offset).
// ok is false when offset precedes every entry.
func PositionAt(entries []PositionEntry, offset int64) (SourcePosition, bool) {
	i := sort.Search(len(entries), func(i int) bool { return entries[i].CodeOffset > offset })
	if i == 0 {
		return 0, false
	}
	return entries[i-1].Position, true
}

// InliningPosition is one entry of optimized code's inlining positions:
// the call site (in its caller, which may itself be inlined) of the
// function inlined under that id, and the index of that function in the
// deoptimization literals.
type InliningPosition struct {
	CallSite SourcePosition
	Function int32
}

// inliningPositionSize is sizeof(InliningPosition): a uint64 position, an
// int, padding.
const inliningPositionSize = 16

// DecodeInliningPositions decodes the bytes of an inlining positions
// byte array.
func DecodeInliningPositions(b []byte) ([]InliningPosition, error) {
	if len(b)%inliningPositionSize != 0 {
		return nil, fmt.Errorf("%w: inlining positions of %d bytes, not a multiple of %d", ErrBadPositionTable, len(b), inliningPositionSize)
	}
	out := make([]InliningPosition, len(b)/inliningPositionSize)
	for i := range out {
		e := b[i*inliningPositionSize:]
		out[i] = InliningPosition{
			CallSite: SourcePosition(le64(e)),
			Function: int32(le32(e[8:])),
		}
	}
	return out, nil
}

// InlineFrame is one function of an inlining chain: the literal index of
// its SharedFunctionInfo (-1 for the optimized function itself) and the
// script offset in it.
type InlineFrame struct {
	Function     int32
	ScriptOffset int
}

// maxInlineDepth bounds an inlining chain (V8 inlines at most a few
// levels; a cycle in corrupt data stops here).
const maxInlineDepth = 64

// InlineChain expands the position p of optimized code into its
// functions, innermost first, by following the call sites of the
// inlining positions to the optimized function itself.
func InlineChain(p SourcePosition, inl []InliningPosition) ([]InlineFrame, error) {
	var out []InlineFrame
	for {
		id := p.InliningID()
		if id < 0 {
			return append(out, InlineFrame{Function: -1, ScriptOffset: p.ScriptOffset()}), nil
		}
		if id >= len(inl) {
			return nil, fmt.Errorf("%w: inlining id %d of %d", ErrBadPositionTable, id, len(inl))
		}
		if len(out) == maxInlineDepth {
			return nil, fmt.Errorf("%w: inlining deeper than %d", ErrBadPositionTable, maxInlineDepth)
		}
		out = append(out, InlineFrame{Function: inl[id].Function, ScriptOffset: p.ScriptOffset()})
		p = inl[id].CallSite
	}
}

// LineColumn returns the 1-based line and column of the character at
// offset in a script whose line ends (the offsets of its '\n's, and
// perhaps the source's length last) are ends. ok is false when offset is
// negative or past the last end.
func LineColumn(ends []int32, offset int) (line, column int, ok bool) {
	if offset < 0 {
		return 0, 0, false
	}
	i := sort.Search(len(ends), func(i int) bool { return int(ends[i]) >= offset })
	if i == len(ends) {
		return 0, 0, false
	}
	start := 0
	if i > 0 {
		start = int(ends[i-1]) + 1
	}
	return i + 1, offset - start + 1, true
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func le32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
