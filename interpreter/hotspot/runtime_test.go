package hotspot

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
)

// fixtureLayout reads the layout of the JDK fixture jdk ("17", "21", "25").
func fixtureLayout(t testing.TB, jdk string) *Layout {
	t.Helper()
	s, err := readSnapshot("testdata/vmstructs-jdk" + jdk + ".json.gz")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ReadLayout(s, s.sym)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestFieldsFixtures: every field the unwinder and the naming read is
// found in the layouts of JDK 17, 21 and 25, with the differences between
// them told apart.
func TestFieldsFixtures(t *testing.T) {
	for _, tc := range []struct {
		jdk                                        string
		codeOffset, frameComplete16, immutableData bool
	}{
		{"17", false, false, false},
		{"21", false, false, false},
		{"25", true, true, true},
	} {
		t.Run("jdk"+tc.jdk, func(t *testing.T) {
			f, err := fieldsOf(fixtureLayout(t, tc.jdk))
			if err != nil {
				t.Fatal(err)
			}
			if f.codeBeginIsOffset != tc.codeOffset || f.frameComplete16 != tc.frameComplete16 || f.nmethod.Immutable != tc.immutableData {
				t.Errorf("code offset %v, 16-bit frame complete %v, immutable data %v; want %v, %v, %v",
					f.codeBeginIsOffset, f.frameComplete16, f.nmethod.Immutable, tc.codeOffset, tc.frameComplete16, tc.immutableData)
			}
			if f.cpoolSourceFile == noField {
				t.Error("no ConstantPool::_source_file_name_index")
			}
			if f.constMethodSize == 0 || f.cpoolSize == 0 || f.heapBlockSize == 0 {
				t.Errorf("sizes: ConstMethod %d, ConstantPool %d, HeapBlock %d", f.constMethodSize, f.cpoolSize, f.heapBlockSize)
			}
		})
	}
}

// TestFieldsMissing: a layout without a needed field names it.
func TestFieldsMissing(t *testing.T) {
	l := fixtureLayout(t, "17")
	delete(l.fields, fieldKey{"Method", "_constMethod"})
	if _, err := fieldsOf(l); err == nil || !strings.Contains(err.Error(), "Method::_constMethod") {
		t.Errorf("err = %v, want one naming Method::_constMethod", err)
	}
}

// TestCacheBounds: a process's entries stay within its bound and all
// processes' within the global one, the least recently used evicted and
// counted; closing a process gives its bytes back.
func TestCacheBounds(t *testing.T) {
	c := NewCache(CacheConfig{MaxBytes: 1000, MaxProcessBytes: 600})
	a, b := c.newProcess(), c.newProcess()
	for i := range 10 {
		a.Add(cacheKey{kind: keyMethod, addr: uint64(i)}, i, 100)
	}
	if a.Bytes() > 600 || c.Stats().Bytes != a.Bytes() {
		t.Fatalf("process holds %d bytes, cache %d; bound 600", a.Bytes(), c.Stats().Bytes)
	}
	if _, ok := a.Get(cacheKey{kind: keyMethod, addr: 9}); !ok {
		t.Error("the newest entry was evicted")
	}
	if _, ok := a.Get(cacheKey{kind: keyMethod, addr: 0}); ok {
		t.Error("the oldest entry was kept")
	}
	for i := range 10 {
		b.Add(cacheKey{kind: keyMethod, addr: uint64(i)}, i, 100)
	}
	if got := c.Stats().Bytes; got > 1000 {
		t.Errorf("cache holds %d bytes, bound 1000", got)
	}
	if b.Bytes() > 600 {
		t.Errorf("process b holds %d bytes", b.Bytes())
	}
	st := c.Stats()
	if st.Evictions == 0 || st.Hits != 1 || st.Misses != 1 {
		t.Errorf("stats %+v", st)
	}
	// An entry larger than a process's bound is not kept.
	b.Add(cacheKey{kind: keyStub, addr: 1}, 0, 601)
	if _, ok := b.Get(cacheKey{kind: keyStub, addr: 1}); ok {
		t.Error("an entry over the process bound was kept")
	}
	a.Purge()
	b.Purge()
	if got := c.Stats().Bytes; got != 0 {
		t.Errorf("%d bytes held after every process closed", got)
	}
}

// fuzzImage is process memory holding one region.
type fuzzImage struct {
	base uint64
	b    []byte
}

func (m fuzzImage) ReadAt(p []byte, addr uint64) error {
	if addr < m.base || addr-m.base > uint64(len(m.b)) || uint64(len(p)) > uint64(len(m.b))-(addr-m.base) {
		return fmt.Errorf("%w: %d bytes at %#x", interpreter.ErrUnreadable, len(p), addr)
	}
	copy(p, m.b[addr-m.base:])
	return nil
}

// FuzzFrame names frames of every type over arbitrary process memory: it
// never panics, fails with an error rather than a made-up name, and keeps
// names bounded.
func FuzzFrame(f *testing.F) {
	l := fixtureLayout(f, "17")
	fl, err := fieldsOf(l)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(0), uint32(0), uint32(0), uint32(0), make([]byte, 512))
	f.Add(uint8(1), uint32(8), uint32(16), uint32(1), make([]byte, 1024))
	f.Add(uint8(2), uint32(0), uint32(64), uint32(0), make([]byte, 256))
	f.Fuzz(func(t *testing.T, typ uint8, off, aux, extra uint32, image []byte) {
		const base = 0x10000
		mem := fuzzImage{base: base, b: image}
		p := &instance{layout: l, f: fl, mem: mem, names: NewCache(DefaultCacheConfig).newProcess(), enc: EncodingFor(l.Version())}
		p.pcDesc, _ = PcDescLayoutOf(l)
		types := []trace.FrameType{trace.FrameJVMInterpreted, trace.FrameJVMCompiled, trace.FrameJVMStub}
		fr := interpreter.Frame{Type: types[int(typ)%len(types)], Addr: base + uint64(off), Aux: aux, Extra: extra, ReturnAddress: typ&4 != 0}
		if fr.Type == trace.FrameJVMCompiled && extra&1 == 0 {
			// Mostly the image's check value, so the fuzzer gets
			// past it to the method and the scopes.
			var id [4]byte
			var m [8]byte
			if mem.ReadAt(id[:], fr.Addr+fl.nmethodCompileID) == nil && mem.ReadAt(m[:], fr.Addr+fl.nmethodMethod) == nil {
				if mc, err := p.methodCheckNow(binary.LittleEndian.Uint64(m[:])); err == nil {
					fr.Extra = compiledCheck(binary.LittleEndian.Uint32(id[:]), mc)
				}
			}
		}
		sym, err := p.Frame(fr)
		if err != nil {
			if sym.Function != "" {
				t.Fatalf("error %v with a name %q", err, sym.Function)
			}
			return
		}
		if len(sym.Function) > 8*maxSymbolBytes || len(sym.Inlined) > maxScopeDepth {
			t.Fatalf("name of %d bytes, %d lines", len(sym.Function), len(sym.Inlined))
		}
	})
}
