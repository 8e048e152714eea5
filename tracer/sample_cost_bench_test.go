package tracer

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/kallsyms"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// BenchmarkSampleCost measures what the eBPF programs cost per sample: a
// C program without frame pointers (unwound by its tables and libc's) and
// a Python loop run, each sampled at 997 Hz by a perf event of its own
// that runs the tracer's sampling program, and each op is a second of it.
// (The tracer's own events sample every CPU at 1 Hz: the host's other
// processes hardly count.) bpf-ns/sample is the kernel's run time of the
// sampling program, which includes the unwinder it tail-calls, per
// sample; user-frames/sample is the frames the unwinders stepped through
// (by table, by frame pointer, and interpreted) per sample.
func BenchmarkSampleCost(b *testing.B) {
	testenv.RequireBPF(b)
	dir := b.TempDir()
	root := testenv.RepoRoot(b)
	chain := filepath.Join(dir, "chain")
	testenv.Run(b, root, "gcc", "-O2", "-fomit-frame-pointer", "-o", chain, "tracer/testdata/unwind/chain.c")
	py := testenv.SystemPython(b).Path

	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable eBPF run-time statistics: %v", err)
	}
	defer stats.Close()
	kern, err := kallsyms.Load(kallsyms.Options{})
	if err != nil {
		b.Fatal(err)
	}
	syms, err := symbolizer.New(symbolizer.Options{CacheSize: 64, MaxBytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr, err := New(Config{SamplesPerSecond: 1, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, Kernel: kern, Symbolizer: syms, MaxUnwindTableBytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	script := "x = 0\nwhile True:\n    x = (x * 31 + 7) % 1000003\n    d = {i: str(i) for i in range(50)}\n"
	for _, cmd := range []*exec.Cmd{exec.Command(chain), exec.Command(py, "-c", script)} {
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
		}()
		fd, err := sampleProcess(cmd.Process.Pid, 997, tr.objs.Sample)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
	}
	// Warm up: the workloads synced, their tables and symbols loaded.
	time.Sleep(3 * time.Second)

	var runtime time.Duration
	var samples, frames uint64
	for b.Loop() {
		rt0, c0 := sampleRunTime(b, tr), tr.Stats().Counters
		time.Sleep(time.Second)
		rt1, c1 := sampleRunTime(b, tr), tr.Stats().Counters
		runtime += rt1 - rt0
		samples += (c1[progs.StacklineCounterCOUNTER_SAMPLES] - c0[progs.StacklineCounterCOUNTER_SAMPLES]) -
			(c1[progs.StacklineCounterCOUNTER_IDLE] - c0[progs.StacklineCounterCOUNTER_IDLE])
		for _, c := range []progs.StacklineCounter{progs.StacklineCounterCOUNTER_CFI_FRAMES, progs.StacklineCounterCOUNTER_FP_FRAMES,
			progs.StacklineCounterCOUNTER_PYTHON_FRAMES, progs.StacklineCounterCOUNTER_JVM_FRAMES, progs.StacklineCounterCOUNTER_V8JS_FRAMES} {
			frames += c1[c] - c0[c]
		}
	}
	if samples == 0 {
		b.Fatal("no samples")
	}
	b.ReportMetric(float64(runtime.Nanoseconds())/float64(samples), "bpf-ns/sample")
	b.ReportMetric(float64(frames)/float64(samples), "user-frames/sample")
}

// sampleRunTime returns the kernel's run time of tr's sampling program so
// far (run-time statistics on).
func sampleRunTime(b *testing.B, tr *Tracer) time.Duration {
	b.Helper()
	st, err := tr.objs.Sample.Stats()
	if err != nil {
		b.Fatal(err)
	}
	return st.Runtime
}

// sampleProcess runs prog at hz on the CPU clock of process pid (its main
// thread), and returns the perf event's descriptor, whose close ends it.
func sampleProcess(pid, hz int, prog *ebpf.Program) (int, error) {
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Sample: uint64(hz),
		Bits:   unix.PerfBitFreq,
	}
	fd, err := unix.PerfEventOpen(&attr, pid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("perf_event_open cpu-clock of process %d: %w", pid, err)
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, prog.FD()); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("attach program to perf event: %w", err)
	}
	return fd, nil
}
