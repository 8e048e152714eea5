package tracer

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/kallsyms"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// TestOffCPUProgramsLoadedOnlyWhenOn checks that the off-CPU programs,
// whose verification costs as much as the native unwinder's, are loaded
// only with off-CPU profiling on, and that every other program is loaded
// either way.
func TestOffCPUProgramsLoadedOnlyWhenOn(t *testing.T) {
	testenv.RequireBPF(t)
	kern, err := kallsyms.Load(kallsyms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		syms, err := symbolizer.New(symbolizer.Options{CacheSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		off := OffCPU{}
		if on {
			off = OffCPU{Enabled: true, Threshold: time.Millisecond, Fraction: 1}
		}
		tr, err := New(Config{SamplesPerSecond: 19, MaxStackDepth: 64, RingBufferSize: 1 << 20, FileCacheSize: 16,
			Reporter: &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}},
			Kernel:   kern, Symbolizer: syms, OffCPU: off})
		if err != nil {
			t.Fatal(err)
		}
		progs := map[string]*ebpf.Program{
			"sample":        tr.objs.Sample,
			"unwind_native": tr.objs.UnwindNative,
			"process_exit":  tr.objs.ProcessExit,
			"process_exec":  tr.objs.ProcessExec,
			"offcpu_switch": tr.objs.OffcpuSwitch,
			"offcpu_resume": tr.objs.OffcpuResume,
		}
		for name, p := range progs {
			want := on || !offCPUPrograms[name]
			if (p != nil) != want {
				t.Errorf("off-CPU %v: program %s loaded %v, want %v", on, name, p != nil, want)
			}
		}
		if err := tr.Close(); err != nil {
			t.Error(err)
		}
	}
}

// BenchmarkNew makes a Tracer and closes it: the eBPF programs' load
// (the kernel's BTF decoded, the maps made, the verifier) and their
// attachment, what the agent's start costs besides the kernel's symbols.
// cpu-ms/op is the process's CPU time, the verifier's included.
func BenchmarkNew(b *testing.B) {
	testenv.RequireBPF(b)
	kern, err := kallsyms.Load(kallsyms.Options{})
	if err != nil {
		b.Fatal(err)
	}
	syms, err := symbolizer.New(symbolizer.Options{CacheSize: 4})
	if err != nil {
		b.Fatal(err)
	}
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	var cpu time.Duration
	b.ReportAllocs()
	for b.Loop() {
		before := testenv.ProcessCPU(b)
		tr, err := New(Config{SamplesPerSecond: 19, MaxStackDepth: 64, RingBufferSize: 1 << 20, FileCacheSize: 16,
			Reporter: rec, Kernel: kern, Symbolizer: syms})
		cpu += testenv.ProcessCPU(b) - before
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
