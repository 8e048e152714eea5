package nativeunwind

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// benchFiles are the files BenchmarkBuild builds tables of: the host files
// of the tests, two large C++ programs and GCC's C compiler.
var benchFiles = append(hostFiles[:len(hostFiles):len(hostFiles)], []struct {
	name string
	path func(testing.TB) string
}{
	{"libjvm", installed("/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so")},
	{"node", installed("/usr/bin/node")},
	{"cc1", installed("/usr/lib/gcc/x86_64-linux-gnu/12/cc1")},
}...)

// installed returns a path function for a file that may not be installed
// (the tests and benchmarks that use it are skipped without it, even in
// CI: they are about files of the host).
func installed(path string) func(testing.TB) string {
	return func(tb testing.TB) string {
		tb.Helper()
		p, err := filepath.EvalSymlinks(path)
		if err == nil {
			_, err = os.Stat(p)
		}
		if err != nil {
			tb.Skipf("%s not installed: %v", path, err)
		}
		return p
	}
}

// BenchmarkBuild measures building the tables of large files, cold (with
// a new Builder each time, as Build does) and warm (with one Builder that
// keeps all its buffers, so that a build allocates nothing). Besides the
// time and allocations per build, it reports the CPU time per build, the
// table's rows, their bytes
// in the eBPF encoding, and peak-heap-B: how far the heap grew above its
// level before one cold build, measured with the collector off (so it is
// all the build allocated: an upper bound of its peak live heap).
func BenchmarkBuild(b *testing.B) {
	for _, hf := range benchFiles {
		b.Run(hf.name, func(b *testing.B) {
			f, _ := openELF(b, hf.path(b))
			peak := peakHeap(func() {
				var bld Builder
				if _, err := bld.Build(f, nil, Options{}); err != nil {
					b.Fatal(err)
				}
			})
			for _, warm := range []bool{false, true} {
				name := "cold"
				if warm {
					name = "warm"
				}
				b.Run(name, func(b *testing.B) {
					bld := &Builder{KeepBytes: 1 << 30}
					if warm {
						if _, err := bld.Build(f, nil, Options{}); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportAllocs()
					b.ResetTimer()
					cpu0 := testenv.ProcessCPU(b).Nanoseconds()
					var rows int
					for b.Loop() {
						if !warm {
							bld = &Builder{}
						}
						t, err := bld.Build(f, nil, Options{})
						if err != nil {
							b.Fatal(err)
						}
						rows = t.Len()
					}
					b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
					b.ReportMetric(float64(rows), "rows")
					b.ReportMetric(float64(8*rows), "table-B")
					b.ReportMetric(float64(peak), "peak-heap-B")
				})
			}
		})
	}
}

// peakHeap returns how many bytes of heap fn allocates, with the collector
// off.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// BenchmarkBuildRegion measures building the table of one region (the
// one holding the middle of the code) of each large file, with a Builder
// kept from one build to the next as the build workers do, for regions of
// 64 KiB to 1 MiB, against the whole table (BenchmarkBuild). Besides time
// and allocations it reports the CPU time, the rows built and peak-heap-B
// of one build with a new Builder (see BenchmarkBuild).
func BenchmarkBuildRegion(b *testing.B) {
	for _, hf := range benchFiles {
		b.Run(hf.name, func(b *testing.B) {
			f, _ := openELF(b, hf.path(b))
			for _, shift := range []uint{16, 18, 20} {
				size := uint64(1) << shift
				lo := CodeEnd(f) / 2 / size * size
				r := []Range{{lo, lo + size}}
				b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
					benchBuildRanges(b, f, [][]Range{r}, false)
				})
			}
			// Each 64 KiB region of the code in turn, in an order of
			// their own, as the tracer builds them by region (see
			// Builder.Keep): what a build of a region costs when its
			// pages were not touched by the one before.
			var each [][]Range
			for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(int((CodeEnd(f) + 1<<16 - 1) >> 16)) {
				lo := uint64(i) << 16
				each = append(each, []Range{{lo, lo + 1<<16}})
			}
			b.Run("each", func(b *testing.B) { benchBuildRanges(b, f, each, false) })
			b.Run("each/kept", func(b *testing.B) { benchBuildRanges(b, f, each, true) })
		})
	}
}

// benchBuildRanges measures building ranges of f, builds[i] at the i-th
// build (in turn), with a Builder kept from one build to the next, which
// keeps f (Builder.Keep) when keep is set, as the tracer's build worker
// does for the files of tables built by region. Besides time and
// allocations it reports the CPU time, the page faults of a build (the
// pages of the file's sections it touches, mapped again after a build
// released them: a few microseconds each), the rows of a build (on
// average) and peak-heap-B of the first build with a new Builder (see
// BenchmarkBuild).
func benchBuildRanges(b *testing.B, f *elffile.File, builds [][]Range, keep bool) {
	peak := peakHeap(func() {
		var bld Builder
		if _, err := bld.BuildRanges(f, nil, Options{}, builds[0]); err != nil {
			b.Fatal(err)
		}
	})
	bld := &Builder{}
	if keep {
		bld.Keep(f)
		defer bld.Forget(f)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.ProcessCPU(b).Nanoseconds()
	faults0 := minorFaults(b)
	var rows, n int
	for b.Loop() {
		t, err := bld.BuildRanges(f, nil, Options{}, builds[n%len(builds)])
		if err != nil {
			b.Fatal(err)
		}
		rows += t.Len()
		n++
		bld.Release()
	}
	b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(minorFaults(b)-faults0)/float64(b.N), "faults/op")
	b.ReportMetric(float64(rows)/float64(n), "rows")
	b.ReportMetric(float64(peak), "peak-heap-B")
}

// minorFaults returns the page faults of the process so far that read no
// disk.
func minorFaults(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Minflt
}
