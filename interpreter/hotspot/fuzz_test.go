package hotspot

import (
	"path/filepath"
	"testing"
)

// fixtureSeeds returns the code fixtures dumped from the JDKs, for seeds.
func fixtureSeeds(f *testing.F) []codeFixture {
	var out []codeFixture
	for _, jdk := range fixtureJDKs {
		var fx codeFixture
		if err := readGzipJSON(filepath.Join("testdata", "code-"+jdk+".json.gz"), &fx); err != nil {
			f.Fatal(err)
		}
		out = append(out, fx)
	}
	return out
}

// FuzzReadLayout reads VM tables from arbitrary memory: the image of a
// small valid set of tables (whose symbols stay where they are), mutated.
// ReadLayout returns a Layout or an error, never panics, and stays within
// its bounds.
func FuzzReadLayout(f *testing.F) {
	seed := smallImage()
	f.Add(seed.b)
	f.Add(make([]byte, len(seed.b)))
	f.Fuzz(func(t *testing.T, image []byte) {
		m := &tableImage{b: image, syms: seed.syms}
		c := &countingMemory{mem: m}
		l, err := ReadLayout(c, m.sym)
		if err == nil {
			fields, types, _ := l.Counts()
			if fields == 0 || types == 0 {
				t.Fatalf("a Layout of %d fields and %d types", fields, types)
			}
		}
	})
}

// FuzzStream reads values of both encodings from arbitrary bytes: every
// read returns a value that consumed one to five bytes, or an error that
// consumed none.
func FuzzStream(f *testing.F) {
	f.Add([]byte{0, 191, 192, 1, 255, 255, 255, 255, 255}, false)
	f.Add(appendInt(appendUint(nil, 0x308207F, EncodingUnsigned5), -5, EncodingUnsigned5), true)
	f.Add([]byte{200}, true)
	f.Fuzz(func(t *testing.T, b []byte, u5 bool) {
		enc := EncodingJDK17
		if u5 {
			enc = EncodingUnsigned5
		}
		s := NewStream(b, 0, enc)
		for i := 0; i <= len(b); i++ {
			pos := s.Pos()
			var err error
			if i%2 == 0 {
				_, err = s.Uint()
			} else {
				_, err = s.Int()
			}
			if err != nil {
				if s.Pos() != pos {
					t.Fatalf("a failed read moved from %d to %d", pos, s.Pos())
				}
				return
			}
			if n := s.Pos() - pos; n < 1 || n > 5 {
				t.Fatalf("a value of %d bytes", n)
			}
		}
		if s.Pos() != len(b) {
			t.Fatalf("stopped at %d of %d without an error", s.Pos(), len(b))
		}
	})
}

// FuzzDecodeLineTable decodes arbitrary bytes as a line table: a table
// and its length within the data, or an error; Line answers any bci.
func FuzzDecodeLineTable(f *testing.F) {
	f.Add([]byte{0xFF, 0, 54, 2<<3 | 1, 8<<3 | 2, 0}, false, 12)
	f.Add(encodeLineTable(LineTable{{0, 27}, {40, 31}, {7, 29}, {302, 1000}}, EncodingUnsigned5), true, 300)
	f.Add([]byte{0xFF, 0xFF}, true, 0)
	for _, fx := range fixtureSeeds(f) {
		for _, m := range fx.Methods {
			f.Add(m.LineTable, fx.Encoding == EncodingUnsigned5.String(), 10)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, u5 bool, bci int) {
		enc := EncodingJDK17
		if u5 {
			enc = EncodingUnsigned5
		}
		lt, n, err := DecodeLineTable(b, enc)
		if err != nil {
			return
		}
		if n < 1 || n > len(b) || b[n-1] != 0 || len(lt) > n {
			t.Fatalf("%d entries in %d of %d bytes", len(lt), n, len(b))
		}
		lt.Line(bci)
	})
}

// FuzzScopes finds a PcDesc in an arbitrary table and decodes arbitrary
// scope data from its offset: a bounded chain or an error.
func FuzzScopes(f *testing.F) {
	w := newScopeWriter(EncodingUnsigned5)
	outer := w.scope(0, 1, 7)
	inner := w.scope(outer, 2, 30)
	f.Add(pcTable(PcDesc{PCOffset: -1}, PcDesc{PCOffset: 0x20, ScopeDecodeOffset: int32(inner)}), w.b, uint32(0x10), true)
	w17 := newScopeWriter(EncodingJDK17)
	o17 := w17.scope(0, 1, 7)
	f.Add(pcTable(PcDesc{PCOffset: 0x8, ScopeDecodeOffset: int32(w17.scope(o17, 3, 0))}), w17.b, uint32(0x8), false)
	for _, fx := range fixtureSeeds(f) {
		for _, nm := range fx.NMethods {
			f.Add(nm.PcDescs, nm.Scopes, uint32(0), fx.Encoding == EncodingUnsigned5.String())
		}
	}
	f.Fuzz(func(t *testing.T, pcs, scopes []byte, pc uint32, u5 bool) {
		enc := EncodingJDK17
		if u5 {
			enc = EncodingUnsigned5
		}
		d, ok := FindPcDesc(pcs, pcDesc16, pc)
		if !ok {
			return
		}
		if d.PCOffset < int32(pc) {
			t.Fatalf("PcDesc at %d for pc %d", d.PCOffset, pc)
		}
		got, err := DecodeScopes(scopes, int(d.ScopeDecodeOffset), enc)
		if err == nil && len(got) > maxScopeDepth {
			t.Fatalf("%d scopes", len(got))
		}
	})
}

// FuzzJavaName names methods from arbitrary strings without panicking,
// in at most nine bytes a byte of input ("Z" is "boolean, ").
func FuzzJavaName(f *testing.F) {
	f.Add("java/util/HashMap", "get", "(Ljava/lang/Object;)Ljava/lang/Object;")
	f.Add("a/B$$Lambda/0x0000000800c03000", "run", "([[I[Ljava/lang/String;J)V")
	f.Add("", "", "(L;[")
	f.Fuzz(func(t *testing.T, class, method, sig string) {
		got := JavaName(class, method, sig)
		if len(got) > 9*(len(class)+len(method)+len(sig))+3 {
			t.Fatalf("%d bytes from %d", len(got), len(class)+len(method)+len(sig))
		}
	})
}

// FuzzNMethodSections computes an nmethod's sections from arbitrary
// header bytes with each JDK's layout: sections within bounds, or an
// error.
func FuzzNMethodSections(f *testing.F) {
	var layouts []NMethodLayout
	for _, jdk := range fixtureJDKs {
		n, err := NMethodLayoutOf(layoutFixture(f, jdk))
		if err != nil {
			f.Fatal(err)
		}
		layouts = append(layouts, n)
	}
	for i, fx := range fixtureSeeds(f) {
		for _, nm := range fx.NMethods {
			f.Add(uint8(i), nm.Addr, nm.Header)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, addr uint64, header []byte) {
		n := layouts[int(which)%len(layouts)]
		s, err := n.Sections(addr, header)
		if err != nil {
			return
		}
		for _, sp := range []Span{s.PcDescs, s.Scopes, s.Metadata} {
			if sp.End < sp.Start || sp.Len() > maxNMethodData {
				t.Fatalf("section %#x-%#x", sp.Start, sp.End)
			}
		}
	})
}
