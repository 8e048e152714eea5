package nativeunwind

import "testing"

func BenchmarkBuild(b *testing.B) {
	for _, hf := range hostFiles {
		b.Run(hf.name, func(b *testing.B) {
			f, _ := openELF(b, hf.path(b))
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
