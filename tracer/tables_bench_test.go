package tracer

import (
	"os"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// builtBuilder is a TableBuilder that hands out a table built before, so
// that a benchmark measures what the tracer does with a table, not the
// build.
type builtBuilder struct{ tab *nativeunwind.Table }

func (b builtBuilder) Build(_, _ *elffile.File, _ nativeunwind.Options) (*nativeunwind.Table, error) {
	return b.tab, nil
}

func (builtBuilder) Release() {}

// newTable returns a table of the given rows, as they are.
func newTable(tb testing.TB, rows []nativeunwind.Row, src nativeunwind.Source) *nativeunwind.Table {
	tb.Helper()
	t, err := nativeunwind.NewTable(rows, src)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// cc1 is GCC's C compiler, the largest table (479k rows) of the
// whole-agent benchmark's mix, which runs a build loop.
const cc1 = "/usr/lib/gcc/x86_64-linux-gnu/12/cc1"

// largeTables are the large files whose tables BenchmarkLoadTable loads:
// node's executable, HotSpot's libjvm and GCC's cc1, the largest tables
// of the whole-agent benchmark's mix.
func largeTables() map[string]string {
	files := map[string]string{"libjvm": "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"}
	if p, err := exec.LookPath("node"); err == nil {
		files["node"] = p
	}
	if _, err := os.Stat(cc1); err == nil {
		files["cc1"] = cc1
	}
	return files
}

// openELFFile opens the ELF file at path (closed at the end of the test),
// skipping the test when the host lacks it.
func openELFFile(b testing.TB, path string) *elffile.File {
	fh, err := os.Open(path)
	if err != nil {
		b.Skip(err)
	}
	f, err := elffile.NewFile(fh, elffile.Source{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// buildFileTable builds the table of the ELF file at path.
func buildFileTable(b testing.TB, path string) *nativeunwind.Table {
	f := openELFFile(b, path)
	tab, err := (&nativeunwind.Builder{}).Build(f, nil, nativeunwind.Options{MaxRows: maxTableRows})
	if err != nil {
		b.Fatal(err)
	}
	return tab
}

// tableMaps returns what the tracer makes its tables with, from the
// eBPF object, and the object's unwind_tables map, created alone (closed
// at the end of the test).
func tableMaps(t testing.TB) (bpfMaps, *ebpf.Map) {
	spec, err := progs.LoadStackline()
	if err != nil {
		t.Fatal(err)
	}
	outer, err := ebpf.NewMap(spec.Maps[progs.StacklineMapUnwindTables])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outer.Close() })
	objs := &progs.StacklineObjects{}
	objs.UnwindTables = outer
	maps, err := newBPFMaps(spec, objs)
	if err != nil {
		t.Fatal(err)
	}
	return maps, outer
}

// BenchmarkLoadTable packs a large real table for the eBPF unwinder into
// a new inner map of unwind_tables, as a build worker does with each
// table it builds, and reports the CPU time that takes (the kernel's
// included: cpu-ns/op), the rows, and the bytes the kernel charges. The
// table is entered in unwind_tables once, outside the timing (each entry
// waits for an RCU grace period: wall time, not CPU).
func BenchmarkLoadTable(b *testing.B) {
	testenv.RequireBPF(b)
	maps, _ := tableMaps(b)
	for name, path := range largeTables() {
		b.Run(name, func(b *testing.B) {
			builder := builtBuilder{buildFileTable(b, path)}
			key := uint64(len(name))
			tab, _, _, _, err := encodeTable(builder, maps, key, nil, nil, 1<<30)
			if err != nil {
				b.Fatal(err)
			}
			if err := maps.putTable(key, tab); err != nil {
				b.Fatal(err)
			}
			tab.close()
			if err := maps.deleteTable(key); err != nil {
				b.Fatal(err)
			}
			var kernelBytes uint64
			b.ReportAllocs()
			b.ResetTimer()
			cpu := testenv.ProcessCPU(b)
			for range b.N {
				tab, _, _, _, err := encodeTable(builder, maps, key, nil, nil, 1<<30)
				if err != nil {
					b.Fatal(err)
				}
				kernelBytes = tab.size()
				tab.close()
			}
			b.ReportMetric(float64((testenv.ProcessCPU(b)-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(builder.tab.Len()), "rows")
			b.ReportMetric(float64(kernelBytes), "kernel-bytes")
		})
	}
}

// BenchmarkBuildTable builds a large real table and packs it into a new
// inner map of unwind_tables, as a build worker does with each file: the
// whole of a table's CPU (cpu-ns/op, the kernel's included) and
// allocation (B/op) on the build worker. The worker's Builder is reused
// from one build to the next, keeping what it keeps by default.
func BenchmarkBuildTable(b *testing.B) {
	testenv.RequireBPF(b)
	maps, _ := tableMaps(b)
	for name, path := range largeTables() {
		b.Run(name, func(b *testing.B) {
			f := openELFFile(b, path)
			builder := &nativeunwind.Builder{}
			key := uint64(len(name))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := testenv.ProcessCPU(b)
			var rows int
			for range b.N {
				tab, n, _, _, err := encodeTable(builder, maps, key, f, nil, 1<<30)
				if err != nil {
					b.Fatal(err)
				}
				rows = n
				tab.close()
			}
			b.ReportMetric(float64((testenv.ProcessCPU(b)-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(rows), "rows")
		})
	}
}
