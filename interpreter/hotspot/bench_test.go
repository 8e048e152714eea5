package hotspot

import (
	"path/filepath"
	"testing"
)

// BenchmarkReadLayout reads JDK 21's tables from the dumped snapshot (once
// per libjvm file a process maps; B/op is what a Layout costs to build).
func BenchmarkReadLayout(b *testing.B) {
	snap, err := readSnapshot(filepath.Join("testdata", "vmstructs-jdk21.json.gz"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadLayout(snap, snap.sym); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeScopes decodes the three-deep inlining chain of the
// JDK 21 fixture's Outer.a at each of its PcDescs.
func BenchmarkDecodeScopes(b *testing.B) {
	var f codeFixture
	if err := readGzipJSON(filepath.Join("testdata", "code-jdk21.json.gz"), &f); err != nil {
		b.Fatal(err)
	}
	var nm nmethodFixture
	for _, n := range f.NMethods {
		if n.Method == "Outer.a(I)J" {
			nm = n
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		for pc := uint32(0); pc < 4096; pc += 512 {
			d, ok := FindPcDesc(nm.PcDescs, pcDesc16, pc)
			if !ok {
				continue
			}
			if _, err := DecodeScopes(nm.Scopes, int(d.ScopeDecodeOffset), EncodingUnsigned5); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkDecodeLineTable decodes a line table of 40 entries and looks a
// line up in it.
func BenchmarkDecodeLineTable(b *testing.B) {
	var entries LineTable
	for i := range 40 {
		entries = append(entries, LineEntry{BCI: int32(i * 7), Line: int32(100 + i*2)})
	}
	raw := encodeLineTable(entries, EncodingUnsigned5)
	b.ReportAllocs()
	for b.Loop() {
		lt, _, err := DecodeLineTable(raw, EncodingUnsigned5)
		if err != nil {
			b.Fatal(err)
		}
		if lt.Line(150) == 0 {
			b.Fatal("no line")
		}
	}
}

func BenchmarkJavaName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		JavaName("java/util/concurrent/ConcurrentHashMap", "putVal", "(Ljava/lang/Object;Ljava/lang/Object;Z)Ljava/lang/Object;")
	}
}
