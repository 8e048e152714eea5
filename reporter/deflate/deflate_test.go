package deflate

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// replayExport is the reporter's captured export of the whole-agent
// benchmark (gzipped): real protobuf, what the encoder is for.
const replayExport = "../testdata/agentbench-export.pb.gz"

func loadExport(tb testing.TB) []byte {
	tb.Helper()
	_, raw := otlptest.CapturedExport(tb, replayExport)
	return raw
}

// roundTrip compresses src at level and checks that compress/gzip reads
// back exactly src; it returns the compressed size.
func roundTrip(tb testing.TB, e *Encoder, src []byte) int {
	tb.Helper()
	prefix := []byte("prefix")
	out, err := e.AppendGzip(prefix, src)
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.HasPrefix(out, prefix) {
		tb.Fatal("AppendGzip changed what dst held")
	}
	zr, err := gzip.NewReader(bytes.NewReader(out[len(prefix):]))
	if err != nil {
		tb.Fatalf("%d-byte input: gzip header: %v", len(src), err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		tb.Fatalf("%d-byte input: decoding: %v", len(src), err)
	}
	if !bytes.Equal(got, src) {
		tb.Fatalf("%d-byte input: decoded %d bytes that differ", len(src), len(got))
	}
	return len(out) - len(prefix)
}

func stdSize(tb testing.TB, src []byte, level int) int {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		tb.Fatal(err)
	}
	zw.Write(src)
	zw.Close()
	return buf.Len()
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 200<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	// Few distinct bytes: long runs of short matches and skewed codes.
	skewed := make([]byte, 300<<10)
	for i := range skewed {
		skewed[i] = byte(rng.ExpFloat64() * 3)
	}
	export := loadExport(t)
	inputs := map[string][]byte{
		"empty":       nil,
		"one byte":    {7},
		"two bytes":   {7, 7},
		"three bytes": {1, 2, 3},
		"zeros":       make([]byte, 1<<20),
		"text":        []byte(strings.Repeat("the quick brown fox jumps over the lazy dog; ", 3000)),
		"random":      random, // stored blocks
		"skewed":      skewed,
		"export":      export,
		// A repeat as far back as a match may reach.
		"far repeat": append(append(slices64(random[:1000]), random[5000:5000+maxDist-1001]...), random[:1000]...),
	}
	e := NewEncoder()
	for name, src := range inputs {
		n := roundTrip(t, e, src)
		t.Logf("%s: %d -> %d bytes", name, len(src), n)
	}
}

func slices64(b []byte) []byte { return append([]byte(nil), b...) }

// TestSmallerThanStandardLibrary checks the reason the package exists: on
// a real export the encoder's output is at least 4 % smaller than
// compress/gzip's at its default level (5.5 % now).
func TestSmallerThanStandardLibrary(t *testing.T) {
	export := loadExport(t)
	ours := roundTrip(t, NewEncoder(), export)
	std := stdSize(t, export, gzip.DefaultCompression)
	t.Logf("%d bytes, compress/gzip %d (%.1f %% less)", ours, std, 100*(1-float64(ours)/float64(std)))
	if float64(ours) > 0.96*float64(std) {
		t.Errorf("%d bytes, compress/gzip %d: want at least 4 %% less", ours, std)
	}
}

// TestEncoderReuse checks that an encoder's tables from one input do not
// leak into the next: a second input compresses as by a new encoder.
func TestEncoderReuse(t *testing.T) {
	export := loadExport(t)
	e := NewEncoder()
	first, _ := e.AppendGzip(nil, export)
	other := []byte(strings.Repeat("abcdefgh", 10000))
	roundTrip(t, e, other)
	again, _ := e.AppendGzip(nil, export)
	if !bytes.Equal(first, again) {
		t.Error("the same input compressed differently by a reused encoder")
	}
	fresh, _ := NewEncoder().AppendGzip(nil, other)
	reused, _ := e.AppendGzip(nil, other)
	if !bytes.Equal(fresh, reused) {
		t.Error("a reused encoder's output differs from a new one's")
	}
}

func FuzzAppendGzip(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("a"))
	f.Add([]byte("abcabcabcabcabc"))
	f.Add(bytes.Repeat([]byte{0, 1, 2, 0, 1, 3}, 500))
	export := loadExport(f)
	f.Add(export[:4096])
	f.Add(export[len(export)/2 : len(export)/2+20000])
	e := NewEncoder()
	f.Fuzz(func(t *testing.T, src []byte) {
		roundTrip(t, e, src)
	})
}

// BenchmarkExport compresses the captured export: bytes out and time,
// beside compress/gzip's at its default level (BenchmarkExportStd).
func BenchmarkExport(b *testing.B) {
	export := loadExport(b)
	e := NewEncoder()
	var out []byte
	b.SetBytes(int64(len(export)))
	b.ReportAllocs()
	cpu0 := testenv.ProcessCPU(b)
	for b.Loop() {
		out, _ = e.AppendGzip(out[:0], export)
	}
	b.ReportMetric(float64((testenv.ProcessCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(out)), "bytes-out")
}

func BenchmarkExportStd(b *testing.B) {
	export := loadExport(b)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	b.SetBytes(int64(len(export)))
	b.ReportAllocs()
	cpu0 := testenv.ProcessCPU(b)
	for b.Loop() {
		buf.Reset()
		zw.Reset(&buf)
		zw.Write(export)
		zw.Close()
	}
	b.ReportMetric(float64((testenv.ProcessCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(buf.Len()), "bytes-out")
}
