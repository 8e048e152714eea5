package tracer

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// builtRegions is a RegionBuilder that hands out each region's table
// built before, so that a benchmark measures what the tracer does with a
// region's rows, not their build (nativeunwind's BenchmarkBuildRegion).
type builtRegions map[uint64]*nativeunwind.Table

func (b builtRegions) Build(_, _ *elffile.File, _ nativeunwind.Options) (*nativeunwind.Table, error) {
	panic("not built whole")
}

func (b builtRegions) BuildRanges(_, _ *elffile.File, _ nativeunwind.Options, ranges []nativeunwind.Range) (*nativeunwind.Table, error) {
	return b[ranges[0].Lo], nil
}

func (builtRegions) Release() {}

// benchRegions are the regions BenchmarkAddRegion adds to a table, one at
// a time: 32 of the file's n, in an order of their own, about as many as
// the bench's build loop reaches in cc1 in a minute.
func benchRegions(b *testing.B, f *elffile.File, n int) (builtRegions, []uint32) {
	built := builtRegions{}
	var order []uint32
	for _, r := range rand.New(rand.NewPCG(1, 2)).Perm(n)[:min(n, 32)] {
		rg := regionRange(uint32(r), n)
		tab, err := (&nativeunwind.Builder{}).BuildRanges(f, nil, nativeunwind.Options{}, []nativeunwind.Range{rg})
		if err != nil {
			b.Fatal(err)
		}
		built[rg.Lo] = tab
		order = append(order, uint32(r))
	}
	return built, order
}

// BenchmarkAddRegion makes the table of a large file built by region from
// one region and adds 31 more, one at a time, in real eBPF maps (each
// table entered in unwind_tables, as the Run goroutine does), and reports
// the CPU time (the kernel's included; of the process, and of the thread
// that adds them) and the bytes allocated per region added, without
// building the regions' rows (given, builtRegions). The process's time
// includes the Go runtime's while the thread waits for the RCU grace
// period of each entry in unwind_tables.
func BenchmarkAddRegion(b *testing.B) {
	testenv.RequireBPF(b)
	maps, _ := tableMaps(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, path := range largeTables() {
		b.Run(name, func(b *testing.B) {
			f := openELFFile(b, path)
			n := regionCount(nativeunwind.CodeEnd(f))
			builder, order := benchRegions(b, f, n)
			id := trace.FileID{byte(len(name))}
			var grown, rows int
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ResetTimer()
			cpu, own := testenv.ProcessCPU(b), threadCPU(b)
			for range b.N {
				s := newTableStore(maps, 1<<30, log)
				add, _, _, err := encodeRegions(builder, nil, nil, 1<<30, n, order[:1])
				if err != nil {
					b.Fatal(err)
				}
				bt := &builtTable{id: id, name: name}
				bt.table, bt.regions, err = newRegionTable(maps, tableKey(id), n, add, false, maxRows(1<<30))
				if err != nil {
					b.Fatal(err)
				}
				bt.rows = bt.regions.used
				tb := s.acquire(id, fileKey{}, name, bt, time.Now())
				if tb.err != nil {
					b.Fatal(tb.err)
				}
				for _, r := range order[1:] {
					add, _, _, err := encodeRegions(builder, nil, nil, 1<<30, n, []uint32{r})
					capacity := tb.regions.capacity
					tb.regions.building = true
					s.regionsBuilt(tb, &builtTable{id: id, update: true, add: add, err: err}, time.Now())
					if !tb.regions.has(uint64(r)) {
						b.Fatalf("region %d not added", r)
					}
					if tb.regions.capacity != capacity {
						grown++
					}
				}
				rows = int(tb.rows)
				s.remove(tb)
			}
			added := float64(b.N * (len(order) - 1))
			b.ReportMetric(float64((testenv.ProcessCPU(b)-cpu).Nanoseconds())/added, "cpu-ns/region")
			b.ReportMetric(float64((threadCPU(b)-own).Nanoseconds())/added, "thread-cpu-ns/region")
			b.ReportMetric(float64(grown)/float64(b.N), "grown")
			b.ReportMetric(float64(rows), "rows")
		})
	}
}

// threadCPU returns the CPU time of the calling thread.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
