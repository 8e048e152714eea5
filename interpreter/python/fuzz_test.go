package python

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/namecache"
)

// imageMemory is a process memory image: b mapped at base.
type imageMemory struct {
	base uint64
	b    []byte
}

func (m imageMemory) ReadAt(p []byte, addr uint64) error {
	if addr < m.base || addr-m.base > uint64(len(m.b)) || uint64(len(p)) > uint64(len(m.b))-(addr-m.base) {
		return fmt.Errorf("%w: %#x", interpreter.ErrUnreadable, addr)
	}
	copy(p, m.b[addr-m.base:])
	return nil
}

// FuzzFrame names frames from arbitrary process memory: whatever the
// memory holds, Frame returns a name or an error, never panics, and reads
// within its bounds.
func FuzzFrame(f *testing.F) {
	f.Add(uint8(11), uint32(0), uint32(0), uint32(0), make([]byte, 512))
	f.Add(uint8(8), uint32(16), uint32(4), uint32(7), make([]byte, 300))
	f.Fuzz(func(t *testing.T, minor uint8, off, aux, extra uint32, image []byte) {
		o, ok := OffsetsFor(int(minor%6) + 8)
		if !ok {
			t.Fatal("no offsets")
		}
		const base = 0x10000
		l := &loader{minor: int(minor%6) + 8, offsets: o}
		mem := imageMemory{base: base, b: image}
		p := &instance{loader: l, mem: mem, codes: namecache.New[codeKey, *code](namecache.NewBudget(1<<16), 1<<12)}
		addr := base + uint64(off)
		// Mostly, the fingerprint the image's code object has, so the
		// fuzzer gets past it to the strings and the line table.
		var first [4]byte
		var name [8]byte
		if extra&1 == 0 && mem.ReadAt(first[:], addr+uint64(o.CodeFirstLineno)) == nil && mem.ReadAt(name[:], addr+uint64(o.CodeName)) == nil {
			extra = fingerprint(binary.LittleEndian.Uint64(name[:]), int32(binary.LittleEndian.Uint32(first[:])))
		}
		sym, err := p.Frame(interpreter.Frame{Addr: addr, Aux: aux, Extra: extra})
		if err == nil && (len(sym.Function) > 4*maxNameChars || len(sym.File) > 4*maxNameChars) {
			t.Fatalf("name of %d bytes", len(sym.Function))
		}
	})
}
