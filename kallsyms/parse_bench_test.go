package kallsyms

import (
	"bytes"
	"os"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// BenchmarkParse parses a copy of the host's /proc/kallsyms held in
// memory: the package's own work in Load, without the kernel's, which
// formats the file as it is read and costs several times more.
func BenchmarkParse(b *testing.B) {
	loadReal(b)
	text, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	cpu0 := testenv.ProcessCPU(b).Nanoseconds()
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(text)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
}

// FuzzCanonicalLine checks the fast parse of a line as the kernel writes
// it against the parse field by field: whatever canonicalLine accepts,
// fieldsLine accepts with the same fields.
func FuzzCanonicalLine(f *testing.F) {
	f.Add([]byte("ffffffff81000000 T _stext\n"))
	f.Add([]byte("ffffffffc0a01000 t foo\t[mod]\n"))
	f.Add([]byte("ffffffffc0a01000 t foo\t[]\n"))
	f.Add([]byte("ffffffffc0a01000 t foo bar\n"))
	f.Add([]byte("ffffffffc0a01000 t foo\t[m d]"))
	f.Add([]byte("0000000000000000 A fixed_percpu_data\r\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		addr, typ, name, mod, ok := canonicalLine(line)
		if !ok {
			return
		}
		a, ty, n, m, blank, fok := fieldsLine(line)
		if blank || !fok || a != addr || ty != typ || !bytes.Equal(n, name) || !bytes.Equal(m, mod) || (m == nil) != (mod == nil) {
			t.Fatalf("canonicalLine %x %c %q %q, fieldsLine %x %c %q %q blank %v ok %v", addr, typ, name, mod, a, ty, n, m, blank, fok)
		}
	})
}

// TestCanonicalHost checks that every line of the host's /proc/kallsyms
// takes the fast parse.
func TestCanonicalHost(t *testing.T) {
	text, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		t.Skip(err)
	}
	lines, slow := 0, 0
	for line := range bytes.Lines(text) {
		lines++
		if _, _, _, _, ok := canonicalLine(line); !ok {
			if slow < 5 {
				t.Errorf("not canonical: %q", line)
			}
			slow++
		}
	}
	if lines < 1000 || slow > 0 {
		t.Errorf("%d of %d lines not canonical", slow, lines)
	}
}
