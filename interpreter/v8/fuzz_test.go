package v8

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stackline-dev/stackline/interpreter/namecache"
)

// synthetic is an image holding one function: a JSFunction, its
// SharedFunctionInfo named name, its bytecode's source positions and
// its Script.
type synthetic struct {
	*image
	function, sfi, script uint64
}

const syntheticSource = "function f() {\n  let a = 1;\n  return a + 2;\n}\n"

func newSynthetic(t testing.TB, consts, name string) *synthetic {
	im := newImage(t, consts)
	lay := im.lay
	s := &synthetic{image: im}
	table := encodePositions([]PositionEntry{
		{CodeOffset: -1, Position: position(11, -1)},
		{CodeOffset: 0, Position: position(17, -1), Statement: true},  // let a = 1 (line 2)
		{CodeOffset: 4, Position: position(30, -1), Statement: true},  // return (line 3)
		{CodeOffset: 6, Position: position(37, -1), Statement: false}, // a + 2
	})
	positions := im.object(im.lay.Types.ByteArrays[0], int(lay.FixedArrayData)+len(table))
	im.put64(positions, lay.FixedArrayLength, im.smi(int64(len(table))))
	copy(im.b[positions-1-im.base+uint64(lay.FixedArrayData):], table)
	bytecode := im.object(lay.Types.BytecodeArray, int(lay.BytecodeArrayData)+16)
	im.put64(bytecode, lay.BytecodeArrayLength, im.smi(16))
	im.put64(bytecode, lay.BytecodeArrayPositions, positions)
	s.script = im.object(lay.Types.Script, int(max(lay.ScriptName, lay.ScriptSource, lay.ScriptLineEnds))+8)
	im.put64(s.script, lay.ScriptName, im.seqOne(t, "/srv/app.js"))
	im.put64(s.script, lay.ScriptSource, im.seqOne(t, syntheticSource))
	im.put64(s.script, lay.ScriptLineEnds, im.smi(0))
	s.sfi = im.object(lay.Types.SharedFunctionInfo, int(max(lay.SFINameOrScopeInfo, lay.SFIFunctionData, lay.SFIScript))+8)
	im.put64(s.sfi, lay.SFINameOrScopeInfo, im.seqOne(t, name))
	im.put64(s.sfi, lay.SFIFunctionData, bytecode)
	im.put64(s.sfi, lay.SFIScript, s.script)
	s.function = im.object(lay.Types.FirstJSFunction, int(lay.JSFunctionShared)+8)
	im.put64(s.function, lay.JSFunctionShared, s.sfi)
	return s
}

func (s *synthetic) process() *Process {
	return &Process{loader: &Loader{layout: s.lay}, heap: heap{mem: s.image, lay: s.lay}, cache: newCache(1<<20, namecache.NewBudget(1<<20))}
}

// TestNameSynthetic names a function built in an image, and names it
// again after its SharedFunctionInfo changed in place: the check value
// keeps the cached name from being used.
func TestNameSynthetic(t *testing.T) {
	for _, consts := range []string{"node18", "node20", "node22", "node24"} {
		t.Run(consts, func(t *testing.T) {
			s := newSynthetic(t, consts, "compute")
			p := s.process()
			for off, want := range map[int64]Position{
				-1: {"compute", "/srv/app.js", 1, 12},
				0:  {"compute", "/srv/app.js", 2, 3},
				5:  {"compute", "/srv/app.js", 3, 3},
				9:  {"compute", "/srv/app.js", 3, 10},
			} {
				got, err := p.NameInterpreted(s.function, off)
				if err != nil || got != want {
					t.Errorf("offset %d: %+v, %v; want %+v", off, got, err, want)
				}
			}
			// Another function's SharedFunctionInfo at the same
			// address (the memory reused after a collection).
			s.put64(s.sfi, s.lay.SFINameOrScopeInfo, s.seqOne(t, ""))
			got, err := p.NameInterpreted(s.function, 0)
			if err != nil || got.Function != Anonymous {
				t.Errorf("after the SFI changed: %+v, %v; want %s", got, err, Anonymous)
			}
			if st := p.Stats(); st.Stale != 1 || st.Hits == 0 {
				t.Errorf("stats %+v: want 1 stale entry dropped and hits", st)
			}
			p.Close()
			if st := p.Stats(); st.Bytes != 0 {
				t.Errorf("%d bytes held after Close", st.Bytes)
			}
		})
	}
}

func FuzzDecodePositions(f *testing.F) {
	f.Add(encodePositions([]PositionEntry{{CodeOffset: -1, Position: position(3, -1)}, {CodeOffset: 7, Position: position(90, 2), Statement: true}}))
	f.Add([]byte{0x80, 0x80, 0x01, 0x7f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodePositions(b)
		if err != nil {
			return
		}
		if len(e) > len(b)/2 {
			t.Fatalf("%d entries from %d bytes", len(e), len(b))
		}
		for i := 1; i < len(e); i++ {
			if e[i].CodeOffset < e[i-1].CodeOffset {
				t.Fatalf("code offsets fall: %v", e)
			}
		}
		if !bytes.Equal(encodePositions(e), b) {
			// Not canonical (a value with extra zero groups): it
			// must still decode to the same entries.
			again, err := DecodePositions(encodePositions(e))
			if err != nil || len(again) != len(e) {
				t.Fatalf("re-encoded table decodes to %v, %v", again, err)
			}
		}
	})
}

func FuzzInlineChain(f *testing.F) {
	inl := make([]byte, 2*inliningPositionSize)
	binary.LittleEndian.PutUint64(inl, uint64(position(120, -1)))
	binary.LittleEndian.PutUint64(inl[inliningPositionSize:], uint64(position(50, 0)))
	inl[inliningPositionSize+8] = 2
	f.Add(uint64(position(7, 1)), inl)
	f.Add(uint64(position(1, 0)), inl[:inliningPositionSize])
	f.Fuzz(func(t *testing.T, pos uint64, b []byte) {
		ip, err := DecodeInliningPositions(b)
		if err != nil {
			return
		}
		chain, err := InlineChain(SourcePosition(pos), ip)
		if err != nil {
			return
		}
		if len(chain) == 0 || len(chain) > maxInlineDepth+1 || chain[len(chain)-1].Function != -1 {
			t.Fatalf("chain %v", chain)
		}
	})
}

func FuzzBaselineBytecodeOffset(f *testing.F) {
	sizes := fixture(f, "node24").BytecodeSizes
	f.Add([]byte{10, 4, 0, 7, 3}, []byte{0x0b, 0x03, 0x0c, 0xce, 0xb3}, int64(15))
	f.Add([]byte{0x80}, []byte{0}, int64(0))
	f.Fuzz(func(t *testing.T, table, bytecodes []byte, pc int64) {
		off, err := BaselineBytecodeOffset(table, bytecodes, sizes, pc)
		if err == nil && (off < -1 || off >= int64(len(bytecodes))) {
			t.Fatalf("bytecode offset %d of %d bytes", off, len(bytecodes))
		}
	})
}

func FuzzParseConstants(f *testing.F) {
	for _, name := range []string{"node18", "node20", "node22", "node24"} {
		b, err := os.ReadFile(filepath.Join("testdata", name+".consts"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("version 12.4.1.1\nHeapObjectTag 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConstants(b)
		if err != nil {
			return
		}
		lay, err := NewLayout(c)
		if err != nil {
			return
		}
		if lay.SmiShift == 0 || lay.SmiShift > 32 {
			t.Fatalf("Smi shift %d", lay.SmiShift)
		}
	})
}

// FuzzString reads strings from a mutated memory image of strings.
func FuzzString(f *testing.F) {
	im := newImage(f, "node24")
	hello := im.seqOne(f, "hello, ")
	world := im.seqTwo(f, "wörld 函数")
	top := im.cons(f, im.sliced(f, im.cons(f, hello, world), 2, 7), im.thin(f, im.external(f, "node:fs")))
	f.Add(bytes.Clone(im.b), top-im.base)
	f.Add(bytes.Clone(im.b), world-im.base)
	f.Fuzz(func(t *testing.T, mem []byte, at uint64) {
		fim := &image{base: im.base, b: mem, lay: im.lay}
		s, err := fim.heap().str(im.base+at, 64)
		if err == nil && len(s) > 64 {
			t.Fatalf("string of %d bytes, bound 64", len(s))
		}
	})
}

// FuzzName names a function from a mutated memory image of one function.
func FuzzName(f *testing.F) {
	for _, consts := range []string{"node20", "node24"} {
		s := newSynthetic(f, consts, "compute")
		f.Add(consts == "node24", bytes.Clone(s.b), s.function-s.base, int64(5))
	}
	layouts := map[bool]*Layout{false: fixtureLayout(f, "node20"), true: fixtureLayout(f, "node24")}
	f.Fuzz(func(t *testing.T, v24 bool, mem []byte, at uint64, off int64) {
		im := &image{base: 0x100000, b: mem, lay: layouts[v24]}
		p := (&synthetic{image: im}).process()
		fn := im.base + at
		if pos, err := p.NameInterpreted(fn, off); err == nil && (len(pos.Function) > maxNameBytes || len(pos.Script) > maxNameBytes) {
			t.Fatalf("names over the bound: %+v", pos)
		}
		p.NameOptimized(fn, off, off&1 == 0)
		p.NameBaseline(fn, fn, off, false)
		p.FunctionCode(fn)
		if p.Stats().Bytes > 1<<20 {
			t.Fatal("cache over its bound")
		}
	})
}

// BenchmarkNameInterpreted names a function whose entries are cached (the
// check value read again each time) and one read afresh each time.
func BenchmarkNameInterpreted(b *testing.B) {
	s := newSynthetic(b, "node24", "compute")
	b.Run("cached", func(b *testing.B) {
		p := s.process()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.NameInterpreted(s.function, 5); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(p.Stats().Bytes), "cache-bytes")
	})
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p := s.process()
			if _, err := p.NameInterpreted(s.function, 5); err != nil {
				b.Fatal(err)
			}
		}
	})
}
