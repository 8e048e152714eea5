package tracer

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/kallsyms"
	"github.com/stackline-dev/stackline/reporter"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

type discard struct{}

func (discard) Export(context.Context, *collectorpb.ExportProfilesServiceRequest) error { return nil }

// benchTracer returns a Tracer for the benchmarks of the per-record path:
// no eBPF (its maps in memory), real kernel symbols, symbolizer and
// reporter (exporting nowhere). The workers are not started.
func benchTracer(b testing.TB) *Tracer {
	kern, err := kallsyms.Load(kallsyms.Options{})
	if err != nil {
		b.Skip(err)
	}
	syms, err := symbolizer.New(symbolizer.Options{CacheSize: 16})
	if err != nil {
		b.Fatal(err)
	}
	rep, err := reporter.New(reporter.Config{Interval: 1 << 62, FrameCacheSize: 16384, ExecutableCacheSize: 1024, SamplesPerSecond: 19}, discard{})
	if err != nil {
		b.Fatal(err)
	}
	files, _ := newFileCache(64)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &Tracer{
		cfg:           Config{Reporter: rep, Symbolizer: syms, Kernel: kern, ProcRoot: "/proc"},
		log:           log,
		proc:          newProcFS("/proc", log),
		processes:     make(map[uint32]*process),
		inflight:      make(map[uint32]inflightSync),
		symbolLoads:   make(map[trace.FileID]uint64),
		symbolsLoaded: newSymbolsLoaded(64),
		exited:        newExited(),
		files:         files,
		kernelID:      trace.KernelFileID("vmlinux", kern.BuildID()),
		maps:          newMemMaps(),
		tables:        newTableStore(newMemMaps(), 0, log),
		lastSweep:     time.Now(),
	}
}

// handleTraceSetup returns a tracer of benchTracer's, its workers started
// (stopped when the test ends), and the raw record of a trace of 8 kernel
// and 24 user frames: real addresses, kernel text symbols and this test
// binary's code. The process is read and the symbols loaded.
func handleTraceSetup(b testing.TB) (*Tracer, []byte) {
	t := benchTracer(b)
	frames := kernelFrames(b, 8)
	nk := len(frames)
	code := []any{BenchmarkHandleTrace, parseCPUList, (*record).decode, (*Tracer).handleTrace,
		(*Tracer).nativeFrame, (*process).find, fdinfoMemlock, onlineCPUs, (*Tracer).sweep, isNotExist}
	for i := range 24 {
		pc := reflect.ValueOf(code[i%len(code)]).Pointer() + uintptr(8+i/len(code))
		frames = append(frames, rawFrame{addr: uint64(pc), typ: trace.FrameNative, flags: frameFlagReturnAddress})
	}
	raw := encodeTrace(uint32(os.Getpid()), uint32(os.Getpid()), "bench", frames, nk)
	t.w = t.startWorkers(context.Background(), nil)
	b.Cleanup(t.w.stop)
	t.handle(raw) // read the process
	t.settle()
	t.handle(raw) // load the symbols
	t.settle()
	if len(t.parked) > 0 || t.knownProcess(uint32(os.Getpid()), 0) == nil {
		b.Fatalf("%d traces parked after the sync of the process", len(t.parked))
	}
	time.Sleep(rereadInterval) // past the last read: the per-trace check runs in full
	return t, raw
}

// BenchmarkHandleTrace measures the tracer's per-sample path: decode a raw
// record of kernel and 24 user frames, map the user addresses to files,
// ask the reporter about every frame, report the trace ("new": as a trace
// not seen in the interval), or find it among the traces of the interval
// and report it again ("repeat"). "warm" handles the same trace again and
// again; "cold" lets the CPU's caches go cold (a walk through 32 MiB)
// every 40 traces, as the agent's sleep between reads of the ring buffer
// does (about 40 traces a read on the benchmark's host), and counts the
// CPU time of the traces only.
func BenchmarkHandleTrace(b *testing.B) {
	for _, cold := range []bool{false, true} {
		for _, repeat := range []bool{false, true} {
			name := map[bool]string{false: "warm", true: "cold"}[cold] + "-" + map[bool]string{false: "new", true: "repeat"}[repeat]
			b.Run(name, func(b *testing.B) { benchmarkHandleTrace(b, cold, repeat) })
		}
	}
}

func benchmarkHandleTrace(b *testing.B, cold, repeat bool) {
	t, raw := handleTraceSetup(b)
	var junk []byte
	if cold {
		junk = make([]byte, 32<<20)
	}
	const batch = 40
	b.ReportAllocs()
	b.ResetTimer()
	var cpu time.Duration
	hits := t.stats.repeatedTraces.Load()
	for i := 0; i < b.N; {
		if cold {
			for j := 0; j < len(junk); j += 64 {
				junk[j]++
			}
		}
		cpu0 := testenv.ProcessCPU(b)
		for range min(batch, b.N-i) {
			if !repeat {
				clear(t.repeats.index)
			}
			t.handle(raw)
			i++
		}
		// The process's CPU time, not the wall clock: on a loaded host
		// the wall clock also counts the time the benchmark waited for
		// a CPU.
		cpu += testenv.ProcessCPU(b) - cpu0
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	if len(t.parked) > 0 {
		b.Fatalf("%d traces parked", len(t.parked))
	}
	if got := t.stats.repeatedTraces.Load() - hits; repeat && got < uint64(b.N-1) || !repeat && got != 0 {
		b.Fatalf("%d traces of %d reported again", got, b.N)
	}
}

// BenchmarkKernelTraces measures the per-sample path of kernel stacks as a
// busy host's are: traces of 16 kernel frames at return addresses spread
// over 4,096 distinct text symbols of the running kernel, each already
// named (the reporter knows its frame). One op is one trace.
func BenchmarkKernelTraces(b *testing.B) {
	t := benchTracer(b)
	const symbols, depth = 4096, 16
	all := kernelFrames(b, 1<<20)
	if len(all) < symbols {
		b.Skipf("only %d kernel text symbols", len(all))
	}
	frames := make([]rawFrame, symbols)
	for i := range frames {
		frames[i] = all[i*len(all)/symbols]
	}
	// Consecutive traces share no frame, and every frame recurs.
	raws := make([][]byte, symbols)
	for i := range raws {
		trace := make([]rawFrame, depth)
		for j := range trace {
			trace[j] = frames[(i*depth+j*257)%symbols]
		}
		raws[i] = encodeTrace(uint32(os.Getpid()), uint32(os.Getpid()), "bench", trace, depth)
	}
	for _, raw := range raws {
		t.handle(raw)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.ProcessCPU(b)
	for i := range b.N {
		t.handle(raws[i%len(raws)])
	}
	b.StopTimer()
	b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// kernelFrames returns up to n kernel frames at real text symbols.
func kernelFrames(b testing.TB, n int) []rawFrame {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		b.Skip(err)
	}
	defer f.Close()
	var out []rawFrame
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(out) < n {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[1] == "T" && len(fields) == 3 {
			addr, err := strconv.ParseUint(fields[0], 16, 64)
			if err == nil && addr != 0 && len(out) < n {
				out = append(out, rawFrame{addr: addr + 4, typ: trace.FrameKernel})
			}
		}
	}
	return out
}

// BenchmarkSyncAllProcesses gives the eBPF unwinder every process running
// on this machine, with the unwind tables of every file they map, as the
// tracer does when it starts, and reports the kernel memory that takes
// under the default bound (--max-unwind-table-bytes).
func BenchmarkSyncAllProcesses(b *testing.B) {
	testenv.RequireBPF(b)
	kern, err := kallsyms.Load(kallsyms.Options{})
	if err != nil {
		b.Fatal(err)
	}
	syms, err := symbolizer.New(symbolizer.Options{CacheSize: 16})
	if err != nil {
		b.Fatal(err)
	}
	const bound = 64 << 20
	b.ReportAllocs()
	for range b.N {
		tr, err := New(Config{SamplesPerSecond: 19, MaxStackDepth: 128, RingBufferSize: 1 << 20, FileCacheSize: 4096,
			Reporter: &recorder{}, Symbolizer: syms, Kernel: kern, MaxUnwindTableBytes: bound,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		tr.stopSampling()
		tr.w = tr.startWorkers(context.Background(), nil)
		tr.scheduleAll()
		for len(tr.backlog) > 0 || len(tr.inflight) > 0 {
			tr.runDue(time.Now())
			tr.settle()
		}
		tr.w.stop()
		tr.publishTableStats()
		st := tr.Stats()
		b.ReportMetric(float64(len(tr.processes)), "processes")
		b.ReportMetric(float64(st.TablesLoaded), "tables")
		b.ReportMetric(float64(st.TableBytes), "table-bytes")
		b.ReportMetric(float64(st.ProcessMapBytes), "process-map-bytes")
		b.ReportMetric(float64(tr.MapMemory()), "map-bytes")
		b.ReportMetric(bound, "bound-bytes")
		b.ReportMetric(float64(st.TablesSkipped), "skipped")
		tr.Close()
	}
}

// settle applies the workers' results until none is due, as Run does
// between records.
func (t *Tracer) settle() {
	for len(t.inflight) > 0 || len(t.symbolLoads) > 0 {
		t.apply(<-t.w.results, time.Now())
	}
}

// BenchmarkHandleProcessEvents measures the tracer's path for the exec and
// exit records of a short-lived process that is never read (the bench's
// /bin/true churn: its executable known, the process gone before anything
// samples it): one op is its exec and its exit. The pids cycle through
// more processes than the tracer remembers exited, as a host's would.
func BenchmarkHandleProcessEvents(b *testing.B) {
	t := benchTracer(b)
	files := t.files
	exe := fileKey{dev: 259<<32 | 3, inode: 12345}
	files.Add(exe, &fileInfo{path: "/usr/bin/true"})
	event := func(kind, pid uint32, comm string) []byte {
		ev := progs.StacklineProcessEvent{Hdr: progs.StacklineRecordHeader{Kind: kind, Pid: pid, Tid: pid, KtimeNs: uint64(pid)}}
		for i := range min(len(comm), len(ev.Hdr.Comm)-1) {
			ev.Hdr.Comm[i] = int8(comm[i])
		}
		if kind == recordProcessExec {
			ev.ExeDev, ev.ExeInode = 259<<20|3, 12345
		}
		raw, err := binary.Append(nil, binary.LittleEndian, &ev)
		if err != nil {
			b.Fatal(err)
		}
		return raw
	}
	const pids = 4 * maxExited
	execs, exits := make([][]byte, pids), make([][]byte, pids)
	for i := range pids {
		pid := uint32(100_000 + i)
		execs[i], exits[i] = event(recordProcessExec, pid, "true"), event(recordProcessExit, pid, "true")
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.ProcessCPU(b)
	for i := range b.N {
		t.handle(execs[i%pids])
		t.handle(exits[i%pids])
	}
	b.StopTimer()
	b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	if len(t.due) > 0 || len(t.processes) > 0 {
		b.Fatalf("%d syncs queued, %d processes tracked", len(t.due), len(t.processes))
	}
}

// parkedBench returns a benchTracer holding maxParkedTraces parked traces
// of 8 kernel frames each, waiting for jobs 1..jobs in turn, and the raw
// record of such a trace.
func parkedBench(b *testing.B, jobs int) (*Tracer, []byte) {
	t := benchTracer(b)
	raw := encodeTrace(1, 1, "bench", kernelFrames(b, 8), 8)
	if err := t.rec.decode(raw); err != nil {
		b.Fatal(err)
	}
	for i := range maxParkedTraces {
		t.parkOn(&t.rec, raw, uint64(1+i%jobs))
	}
	return t, raw
}

// BenchmarkParkAtBound measures parking a trace while as many wait as
// maxParkedTraces allows: the oldest is reported to make room. One op is
// one trace parked and one reported.
func BenchmarkParkAtBound(b *testing.B) {
	t, raw := parkedBench(b, 1)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.ProcessCPU(b)
	for range b.N {
		t.parkOn(&t.rec, raw, 1)
	}
	b.StopTimer()
	b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	if len(t.parked) != maxParkedTraces {
		b.Fatalf("%d traces parked", len(t.parked))
	}
}

// BenchmarkRetryParked measures handing back the parked traces of one job
// done among 64 jobs the maxParkedTraces traces wait for, as the syncs of
// the processes running at start come back: one op is one trace handled
// again (reported) and one parked for the next job.
func BenchmarkRetryParked(b *testing.B) {
	const jobs = 64
	t, raw := parkedBench(b, jobs)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.ProcessCPU(b)
	for i := 0; i < b.N; {
		seq := uint64(1 + i/(maxParkedTraces/jobs)%jobs)
		t.retryParked(seq, 0)
		for range maxParkedTraces / jobs {
			t.parkOn(&t.rec, raw, seq)
		}
		i += maxParkedTraces / jobs
	}
	b.StopTimer()
	b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}
