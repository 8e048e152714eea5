package hotspot

import (
	"encoding/binary"
	"errors"
	"testing"
)

// pcDesc16 is the PcDesc layout of JDK 17 to 25 (TestReadLayoutFixtures).
var pcDesc16 = PcDescLayout{Size: 16, PCOffset: 0, ScopeDecodeOffset: 4, ObjDecodeOffset: 8, Flags: 12}

// pcTable writes PcDescs as an nmethod holds them.
func pcTable(descs ...PcDesc) []byte {
	b := make([]byte, 16*len(descs))
	for i, d := range descs {
		binary.LittleEndian.PutUint32(b[16*i:], uint32(d.PCOffset))
		binary.LittleEndian.PutUint32(b[16*i+4:], uint32(d.ScopeDecodeOffset))
		binary.LittleEndian.PutUint32(b[16*i+8:], uint32(d.ObjDecodeOffset))
		binary.LittleEndian.PutUint32(b[16*i+12:], uint32(d.Flags))
	}
	return b
}

func TestFindPcDesc(t *testing.T) {
	table := pcTable(
		PcDesc{PCOffset: -1}, // the sentinel every table starts with
		PcDesc{PCOffset: 0x20, ScopeDecodeOffset: 5},
		PcDesc{PCOffset: 0x48, ScopeDecodeOffset: 12, Flags: 4},
		PcDesc{PCOffset: 0x90, ScopeDecodeOffset: 30, ObjDecodeOffset: 2},
	)
	for _, tc := range []struct {
		pc   uint32
		want int32 // ScopeDecodeOffset; -1: none
	}{
		{0, 5}, {0x1f, 5}, {0x20, 5}, {0x21, 12}, {0x48, 12}, {0x49, 30}, {0x90, 30}, {0x91, -1}, {1 << 31, -1},
	} {
		d, ok := FindPcDesc(table, pcDesc16, tc.pc)
		if tc.want < 0 {
			if ok {
				t.Errorf("FindPcDesc(%#x) = %+v, want none", tc.pc, d)
			}
			continue
		}
		if !ok || d.ScopeDecodeOffset != tc.want {
			t.Errorf("FindPcDesc(%#x) = %+v, %v; want scope %d", tc.pc, d, ok, tc.want)
		}
	}
	if d, ok := FindPcDesc(table, pcDesc16, 0x48); !ok || d.Flags != 4 || d.PCOffset != 0x48 {
		t.Errorf("FindPcDesc(0x48) = %+v", d)
	}
	if d, ok := FindPcDesc(table, pcDesc16, 0x90); !ok || d.ObjDecodeOffset != 2 {
		t.Errorf("FindPcDesc(0x90) = %+v", d)
	}
	// A table cut mid-entry uses its whole entries only.
	if _, ok := FindPcDesc(table[:len(table)-3], pcDesc16, 0x90); ok {
		t.Error("found a PcDesc in a cut entry")
	}
	if _, ok := FindPcDesc(nil, pcDesc16, 0); ok {
		t.Error("found a PcDesc in an empty table")
	}
	for _, bad := range []PcDescLayout{{}, {Size: 16, Flags: 13}, {Size: 1 << 20}} {
		if _, ok := FindPcDesc(table, bad, 0); ok {
			t.Errorf("found a PcDesc with layout %+v", bad)
		}
	}
}

func TestPcDescLayoutOf(t *testing.T) {
	for _, jdk := range []string{"jdk17", "jdk21", "jdk25"} {
		d, err := PcDescLayoutOf(layoutFixture(t, jdk))
		if err != nil || d != pcDesc16 {
			t.Errorf("%s: PcDescLayoutOf = %+v, %v; want %+v", jdk, d, err, pcDesc16)
		}
	}
	m := smallImage()
	l, err := ReadLayout(m, m.sym)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PcDescLayoutOf(l); err == nil {
		t.Error("PcDescLayoutOf of a VM without PcDesc succeeded")
	}
}

// scopeWriter writes scope data as DebugInformationRecorder does: a
// leading byte so no scope is at offset 0, then scopes, callers first.
type scopeWriter struct {
	b   []byte
	enc Encoding
}

func newScopeWriter(enc Encoding) *scopeWriter {
	return &scopeWriter{b: appendUint(nil, 0, enc), enc: enc}
}

// scope writes a scope (with empty locals, expressions and monitors)
// and returns its offset.
func (w *scopeWriter) scope(sender int, method int, bci int) int {
	off := len(w.b)
	for _, v := range []uint32{uint32(sender), uint32(method), uint32(bci + 1), 0, 0, 0} {
		w.b = appendUint(w.b, v, w.enc)
	}
	return off
}

func TestDecodeScopes(t *testing.T) {
	for _, enc := range []Encoding{EncodingJDK17, EncodingUnsigned5} {
		w := newScopeWriter(enc)
		outer := w.scope(0, 1, 7)
		middle := w.scope(outer, 2, 300)
		inner := w.scope(middle, 3, -1)
		got, err := DecodeScopes(w.b, inner, enc)
		if err != nil {
			t.Fatalf("%v: %v", enc, err)
		}
		want := []Scope{{3, -1}, {2, 300}, {1, 7}}
		if len(got) != len(want) {
			t.Fatalf("%v: %v, want %v", enc, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%v: scope %d = %v, want %v", enc, i, got[i], want[i])
			}
		}
		if got, err := DecodeScopes(w.b, 0, enc); err != nil || got != nil {
			t.Errorf("%v: serialized_null: %v, %v", enc, got, err)
		}
	}
}

func TestDecodeScopesErrors(t *testing.T) {
	enc := EncodingUnsigned5
	w := newScopeWriter(enc)
	ok := w.scope(0, 1, 0)
	loop := w.scope(0, 1, 0)
	// A scope whose sender is itself or after it.
	self := len(w.b)
	w.scope(self, 1, 0)
	forward := len(w.b)
	w.scope(forward+100, 1, 0)
	nullMethod := w.scope(ok, 0, 0)
	_ = loop
	for _, tc := range []struct {
		name string
		b    []byte
		off  int
		want error
	}{
		{"outside", w.b, len(w.b), ErrTruncated},
		{"negative", w.b, -3, ErrTruncated},
		{"cut", w.b[:ok+1], ok, ErrTruncated},
		{"self sender", w.b, self, nil},
		{"forward sender", w.b, forward, nil},
		{"null method", w.b, nullMethod, nil},
		{"excluded byte", []byte{1, 0, 0, 0}, 1, ErrExcludedByte},
	} {
		got, err := DecodeScopes(tc.b, tc.off, enc)
		if err == nil {
			t.Errorf("%s: %v, want an error", tc.name, got)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Deeper than the bound.
	d := newScopeWriter(enc)
	prev := 0
	for range maxScopeDepth + 1 {
		prev = d.scope(prev, 1, 0)
	}
	if _, err := DecodeScopes(d.b, prev, enc); err == nil {
		t.Error("a chain over the depth bound decoded")
	}
}
