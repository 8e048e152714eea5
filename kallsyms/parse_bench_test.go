package kallsyms

import (
	"bytes"
	"os"
	"testing"
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
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(text)); err != nil {
			b.Fatal(err)
		}
	}
}
