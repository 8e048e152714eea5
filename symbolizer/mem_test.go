package symbolizer

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// benchFiles are the files the load and lookup benchmarks read: the
// host's libc (with its debug file when installed), libpython and the go
// command, a large Go binary.
func benchFiles(b *testing.B) map[string]string {
	b.Helper()
	return map[string]string{
		"libc":      testenv.Libc(b),
		"libpython": testenv.SystemLibpython(b),
		"go":        filepath.Join(goroot(b), "bin", "go"),
	}
}

// goroot returns the Go installation's root directory.
func goroot(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command(testenv.GoTool(), "env", "GOROOT").Output()
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// largeFiles are large C++ programs of the host that BenchmarkLoadLarge
// loads when they are installed.
var largeFiles = []struct{ name, path string }{
	{"node", "/usr/bin/node"},
	{"libjvm", "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"},
	{"cc1", "/usr/lib/gcc/x86_64-linux-gnu/12/cc1"},
}

// BenchmarkLoadLarge loads the symbols (no line tables) of large programs
// with hundreds of thousands of symbols, where sorting and deduplicating
// them is most of the work. A program that is not installed is skipped.
func BenchmarkLoadLarge(b *testing.B) {
	for _, lf := range largeFiles {
		b.Run(lf.name, func(b *testing.B) {
			path, err := filepath.EvalSymlinks(lf.path)
			if err == nil {
				_, err = os.Stat(path)
			}
			if err != nil {
				b.Skipf("%s not installed: %v", lf.path, err)
			}
			src := elffile.Source{Open: openPath(path), Path: path}
			opts := Options{Demangle: DemangleSimple}
			f, err := Load(src, opts)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0 := testenv.ProcessCPU(b).Nanoseconds()
			for b.Loop() {
				if _, err := Load(src, opts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(f.Bytes()), "bytes")
			b.ReportMetric(float64(f.Len()), "symbols")
			runtime.KeepAlive(f)
		})
	}
}

// BenchmarkLoad loads the symbols of a file, without line tables as with
// them. Besides time and allocations per load it reports the heap bytes
// the loaded table keeps alive (heldB, measured by the runtime; bytes, as
// File.Bytes counts them) and the bytes it maps (mappedB).
func BenchmarkLoad(b *testing.B) {
	files := benchFiles(b)
	for _, name := range []string{"libc", "libpython", "go"} {
		for _, lines := range []bool{false, true} {
			sub := name
			if lines {
				sub += "/lines"
			}
			b.Run(sub, func(b *testing.B) {
				path := files[name]
				src := elffile.Source{Open: openPath(path), Path: path}
				opts := Options{LineInfo: lines, Demangle: DemangleSimple}
				before := liveHeap()
				f, err := Load(src, opts)
				if err != nil {
					b.Fatal(err)
				}
				held := liveHeap() - before
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Load(src, opts); err != nil {
						b.Fatal(err)
					}
				}
				// Reported after the loop, which resets the metrics.
				b.ReportMetric(float64(held), "heldB")
				b.ReportMetric(float64(f.Bytes()), "bytes")
				b.ReportMetric(float64(f.MappedBytes()), "mappedB")
				b.ReportMetric(float64(f.Len()), "symbols")
				runtime.KeepAlive(f)
			})
		}
	}
}

// BenchmarkLookupFiles looks up random offsets in the text of each file.
func BenchmarkLookupFiles(b *testing.B) {
	files := benchFiles(b)
	for _, name := range []string{"libc", "libpython", "go"} {
		b.Run(name, func(b *testing.B) {
			path := files[name]
			f, err := Load(elffile.Source{Open: openPath(path), Path: path}, Options{Demangle: DemangleSimple})
			if err != nil {
				b.Fatal(err)
			}
			benchmarkLookup(b, f)
		})
	}
}
