package v8

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// encodeVLQ appends n the way V8's source position table builder does
// (zig-zag, 7 bits a byte, low groups first).
func encodeVLQ(b []byte, n int64) []byte {
	u := uint64(n<<1) ^ uint64(n>>63)
	for {
		c := byte(u & 0x7f)
		u >>= 7
		if u != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

// encodePositions builds a table from entries, as V8 does: deltas from
// code offset -1 and position 0, the code delta negated for expressions.
func encodePositions(entries []PositionEntry) []byte {
	var b []byte
	code, pos := int64(-1), int64(0)
	for _, e := range entries {
		d := e.CodeOffset - code
		if !e.Statement {
			d = -d - 1
		}
		b = encodeVLQ(b, d)
		b = encodeVLQ(b, int64(e.Position)-pos)
		code, pos = e.CodeOffset, int64(e.Position)
	}
	return b
}

// position builds a SourcePosition of a script offset and inlining id.
func position(offset, inlining int) SourcePosition {
	return SourcePosition(uint64(offset+1)<<1 | uint64(inlining+1)<<31)
}

func TestDecodePositionsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var entries []PositionEntry
		code := int64(-1)
		for range r.IntN(50) {
			code += r.Int64N(300)
			entries = append(entries, PositionEntry{
				CodeOffset: code,
				Position:   position(r.IntN(1<<20), r.IntN(40)-1),
				Statement:  r.IntN(2) == 0,
			})
		}
		got, err := DecodePositions(encodePositions(entries))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, entries) {
			t.Fatalf("decoded %v, want %v", got, entries)
		}
	}
}

func TestDecodePositionsErrors(t *testing.T) {
	for name, b := range map[string][]byte{
		"cut value":      {0x80},
		"cut entry":      {0x02},
		"value too long": {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"code offset overflow": encodeVLQ(encodeVLQ(encodeVLQ(encodeVLQ(encodeVLQ(encodeVLQ(nil,
			1<<62), 0), 1<<62), 0), 1<<62), 0),
	} {
		if _, err := DecodePositions(b); !errors.Is(err, ErrBadPositionTable) {
			t.Errorf("%s: error %v, want ErrBadPositionTable", name, err)
		}
	}
}

func TestPositionAt(t *testing.T) {
	e := []PositionEntry{{CodeOffset: -1, Position: position(5, -1)}, {CodeOffset: 0, Position: position(10, -1)},
		{CodeOffset: 4, Position: position(20, -1)}, {CodeOffset: 9, Position: position(30, 0)}}
	for _, c := range []struct {
		off  int64
		want int
		ok   bool
	}{{-2, 0, false}, {-1, 5, true}, {0, 10, true}, {3, 10, true}, {4, 20, true}, {8, 20, true}, {9, 30, true}, {1000, 30, true}} {
		p, ok := PositionAt(e, c.off)
		if ok != c.ok || ok && p.ScriptOffset() != c.want {
			t.Errorf("offset %d: %d, %v; want %d, %v", c.off, p.ScriptOffset(), ok, c.want, c.ok)
		}
	}
	if p := position(77, 3); p.ScriptOffset() != 77 || p.InliningID() != 3 || p.External() {
		t.Errorf("position(77, 3) decodes as %d, %d, %v", p.ScriptOffset(), p.InliningID(), p.External())
	}
}

func TestInlineChain(t *testing.T) {
	// Function 2 inlined at offset 50 of function 0 (inlining id 0),
	// which is inlined at offset 120 of the optimized function.
	inl := []InliningPosition{
		{CallSite: position(120, -1), Function: 0},
		{CallSite: position(50, 0), Function: 2},
	}
	got, err := InlineChain(position(7, 1), inl)
	if err != nil {
		t.Fatal(err)
	}
	want := []InlineFrame{{Function: 2, ScriptOffset: 7}, {Function: 0, ScriptOffset: 50}, {Function: -1, ScriptOffset: 120}}
	if !slices.Equal(got, want) {
		t.Errorf("chain %v, want %v", got, want)
	}
	if _, err := InlineChain(position(7, 5), inl); !errors.Is(err, ErrBadPositionTable) {
		t.Errorf("inlining id out of range: %v", err)
	}
	cycle := []InliningPosition{{CallSite: position(1, 0), Function: 0}}
	if _, err := InlineChain(position(1, 0), cycle); !errors.Is(err, ErrBadPositionTable) {
		t.Errorf("cycle: %v", err)
	}
	b := make([]byte, 2*inliningPositionSize)
	for i, p := range inl {
		for k := range 8 {
			b[i*inliningPositionSize+k] = byte(uint64(p.CallSite) >> (8 * k))
		}
		b[i*inliningPositionSize+8] = byte(p.Function)
	}
	dec, err := DecodeInliningPositions(b)
	if err != nil || !slices.Equal(dec, inl) {
		t.Errorf("decoded %v, %v; want %v", dec, err, inl)
	}
	if _, err := DecodeInliningPositions(b[:20]); err == nil {
		t.Error("20 bytes of inlining positions decoded")
	}
}

func TestLineColumn(t *testing.T) {
	// "ab\ncd\n\nef": line ends at 2, 5, 6 and the length 9.
	ends := []int32{2, 5, 6, 9}
	for _, c := range []struct{ off, line, col int }{{0, 1, 1}, {1, 1, 2}, {2, 1, 3}, {3, 2, 1}, {6, 3, 1}, {7, 4, 1}, {8, 4, 2}} {
		l, col, ok := LineColumn(ends, c.off)
		if !ok || l != c.line || col != c.col {
			t.Errorf("offset %d: %d:%d %v, want %d:%d", c.off, l, col, ok, c.line, c.col)
		}
		if l, col := prefixLineColumn(ends[:2], c.off); c.off < 6 && (l != c.line || col != c.col) {
			t.Errorf("prefix, offset %d: %d:%d, want %d:%d", c.off, l, col, c.line, c.col)
		}
	}
	for _, off := range []int{-1, 10} {
		if _, _, ok := LineColumn(ends, off); ok {
			t.Errorf("offset %d has a line", off)
		}
	}
}

func TestBaselineBytecodeOffset(t *testing.T) {
	// Sizes: bytecode 4 is 2 bytes, 5 is 3 bytes (6 when wide), 6 is 1.
	const rows = 8
	sizes := make([]byte, 3*rows)
	for i := range sizes {
		sizes[i] = 1
	}
	sizes[4], sizes[5], sizes[rows+5] = 2, 3, 6
	bytecodes := []byte{4, 0xaa, 5, 0, 0, bytecodeWide, 5, 0, 0, 0, 0, 0, 6}
	// Prologue 10 bytes of code, then 4, 0, 7 and 3 bytes for the four
	// bytecodes at 0, 2, 5 (wide: a prefix and 6 bytes) and 12.
	var table []byte
	for _, d := range []uint64{10, 4, 0, 7, 3} {
		table = append(table, byte(d))
	}
	for pc, want := range map[int64]int64{0: -1, 9: -1, 10: 0, 13: 0, 14: 5, 20: 5, 21: 12, 23: 12} {
		got, err := BaselineBytecodeOffset(table, bytecodes, sizes, pc)
		if err != nil || got != want {
			t.Errorf("pc %d: bytecode %d, %v; want %d", pc, got, err, want)
		}
	}
	if _, err := BaselineBytecodeOffset(table, bytecodes, sizes, 24); !errors.Is(err, ErrBadBytecode) {
		t.Errorf("pc past the code: %v", err)
	}
	if _, err := BaselineBytecodeOffset(table, []byte{7, 7, 9}, sizes, 30); !errors.Is(err, ErrBadBytecode) {
		t.Errorf("bytecode outside the size table: %v", err)
	}
}
