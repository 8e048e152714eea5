package nativeunwind

import "testing"

// benchFiles are the files the benchmarks build tables for: a C library,
// a large C library and a large Go binary.
var benchFiles = []struct{ name, path string }{
	{"libc", libcPath},
	{"libpython3.11", pythonPath},
	{"go", goCmdPath},
}

func BenchmarkBuild(b *testing.B) {
	for _, bf := range benchFiles {
		b.Run(bf.name, func(b *testing.B) {
			f, _ := openELF(b, bf.path) // skips when the file is absent
			b.ReportAllocs()
			var rows int
			for b.Loop() {
				t, err := Build(f, nil, Options{})
				if err != nil {
					b.Fatal(err)
				}
				rows = len(t.Rows)
			}
			b.ReportMetric(float64(rows), "rows")
			b.ReportMetric(float64(8*rows), "bytes")
		})
	}
}
