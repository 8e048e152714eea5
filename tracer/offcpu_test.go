package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/python"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

func TestOffCPUValidate(t *testing.T) {
	for _, o := range []OffCPU{
		{Enabled: true, Threshold: -1, Fraction: 1},
		{Enabled: true, Threshold: 2 * MaxOffCPUThreshold, Fraction: 1},
		{Enabled: true, Fraction: 0},
		{Enabled: true, Fraction: 1.5},
	} {
		if err := o.validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	for _, o := range []OffCPU{{}, {Enabled: true, Fraction: 0.01}, {Enabled: true, Threshold: time.Millisecond, Fraction: 1}} {
		if err := o.validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestOffCPUSampleBound(t *testing.T) {
	for _, c := range []struct {
		f    float64
		want uint32
	}{{1, 1<<32 - 1}, {0.5, 1<<31 - 1}, {0.25, 1<<30 - 1}} {
		o := OffCPU{Fraction: c.f}
		// Within one of the exact bound: float rounding.
		if got := uint64(o.sampleBound()); got+1 < uint64(c.want) || got > uint64(c.want)+1 {
			t.Errorf("fraction %v: bound %#x, want %#x", c.f, got, c.want)
		}
	}
}

// offCPUTrace is a trace the off-CPU test recorded, its frames named.
type offCPUTrace struct {
	meta   trace.TraceMeta
	kernel []string // kernel function names, leaf first
	user   []userFrame
}

// traceOffCPU runs cmd for d under a tracer with off-CPU profiling
// configured by off and returns the traces of cmd's process, how long it
// ran, and how long of that its main thread was blocked: neither running
// nor runnable (on a busy host a thread also waits for a CPU, which is not
// off-CPU time).
func traceOffCPU(t *testing.T, cmd *exec.Cmd, d time.Duration, off OffCPU) ([]offCPUTrace, time.Duration, time.Duration) {
	t.Helper()
	return traceOffCPUWith(t, cmd, d, off)
}

// traceOffCPUWith is traceOffCPU with interpreters' frames unwound.
func traceOffCPUWith(t *testing.T, cmd *exec.Cmd, d time.Duration, off OffCPU, interps ...interpreter.Runtime) ([]offCPUTrace, time.Duration, time.Duration) {
	t.Helper()
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 256 << 20, OffCPU: off, Interpreters: interps}, symbolizer.Options{CacheSize: 64, MaxBytes: 256 << 20})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	run0, rq0 := schedStat(t, cmd.Process.Pid)
	time.Sleep(d)
	run1, rq1 := schedStat(t, cmd.Process.Pid)
	ran := time.Since(start)
	blocked := ran - (run1 - run0) - (rq1 - rq0)
	cmd.Process.Kill()
	cmd.Wait()
	time.Sleep(200 * time.Millisecond)
	tr.stop(t)
	st := tr.Stats()
	t.Logf("off-CPU: %d waits sampled, %d short, %d table full, %d lost; %d off-CPU traces, %d CPU traces",
		st.Counters[progs.StacklineCounterCOUNTER_OFF_CPU_WAITS], st.Counters[progs.StacklineCounterCOUNTER_OFF_CPU_SHORT],
		st.Counters[progs.StacklineCounterCOUNTER_OFF_CPU_FULL], st.Counters[progs.StacklineCounterCOUNTER_LOST_OFF_CPU],
		st.OffCPUTraces, st.Traces)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []offCPUTrace
	for _, r := range rec.traces {
		if r.meta.PID != uint32(cmd.Process.Pid) {
			continue
		}
		ot := offCPUTrace{meta: r.meta}
		for _, f := range r.frames {
			switch f.Type {
			case trace.FrameKernel:
				name := ""
				if lines := rec.frames[f].Lines; len(lines) > 0 {
					name = lines[0].Function
				}
				ot.kernel = append(ot.kernel, name)
			case trace.FrameError:
				ot.user = append(ot.user, userFrame{err: f.Addr})
			default:
				uf := userFrame{file: rec.execs[f.File].FileName, typ: f.Type}
				if lines := rec.frames[f].Lines; len(lines) > 0 {
					l := lines[len(lines)-1]
					uf.name, uf.src, uf.line = l.Function, l.File, l.Line
				}
				ot.user = append(ot.user, uf)
			}
		}
		out = append(out, ot)
	}
	return out, ran, blocked
}

// schedStat returns the time the main thread of pid has run and waited
// for a CPU (/proc/PID/schedstat).
func schedStat(t *testing.T, pid int) (run, runQueue time.Duration) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "schedstat"))
	if err != nil {
		t.Fatal(err)
	}
	var r, q int64
	if _, err := fmt.Sscan(string(b), &r, &q); err != nil {
		t.Fatalf("schedstat %q: %v", b, err)
	}
	return time.Duration(r), time.Duration(q)
}

// TestOffCPUC: a C program without frame pointers whose main thread waits
// ~90% of the time in main -> waitOuter -> waitInner -> read() on a pipe:
// its off-CPU traces carry that chain with the kernel's pipe_read, and
// account for at least 80% of the time the thread was blocked (its wall
// time but for its time on, and waiting for, a CPU: ~90% of the wall time
// on a quiet host); its CPU samples still show the spin.
func TestOffCPUC(t *testing.T) {
	testenv.RequireBPF(t)
	bin := filepath.Join(t.TempDir(), "wait")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O2", "-fomit-frame-pointer", "-pthread", "-o", bin, "tracer/testdata/offcpu/wait.c")
	cmd := exec.Command(bin)
	// Every wait of at least 1 ms: the workload's are about 3.6 ms.
	traces, wall, blocked := traceOffCPU(t, cmd, 5*time.Second, OffCPU{Enabled: true, Threshold: time.Millisecond, Fraction: 1})
	tid := uint32(cmd.Process.Pid)
	var waited, inChain time.Duration
	cpu, spin, offTraces := 0, 0, 0
	var bad []string
	for _, tr := range traces {
		if tr.meta.TID != tid {
			continue
		}
		if tr.meta.OffCPUNS == 0 {
			cpu++
			if _, ok := hasChain(tr.user, "spin", "main"); ok {
				spin++
			}
			continue
		}
		offTraces++
		w := time.Duration(tr.meta.OffCPUNS)
		waited += w
		_, ok := hasChain(tr.user, "waitInner", "waitOuter", "main")
		ok = ok && complete(tr.user) && slices.ContainsFunc(tr.kernel, func(f string) bool { return strings.Contains(f, "pipe_read") })
		if ok {
			inChain += w
		} else if len(bad) < 5 {
			bad = append(bad, strings.Join(tr.kernel, " <- ")+" | "+describe(tr.user))
		}
	}
	for _, b := range bad {
		t.Logf("not in the chain: %s", b)
	}
	t.Logf("wall %v, blocked %v: %d off-CPU traces, %v waited, %v in waitInner <- waitOuter <- main with pipe_read (%.1f%% of blocked, %.1f%% of wall); %d CPU samples, %d in spin",
		wall, blocked, offTraces, waited, inChain, 100*inChain.Seconds()/blocked.Seconds(), 100*inChain.Seconds()/wall.Seconds(), cpu, spin)
	// On a quiet host blocked is ~90% of wall.
	if inChain.Seconds() < 0.8*blocked.Seconds() {
		t.Errorf("the wait chain holds %v of %v blocked time, want >= 80%%", inChain, blocked)
	}
	if waited > wall {
		t.Errorf("waited %v in %v wall time", waited, wall)
	}
	if cpu < 20 || float64(spin) < 0.8*float64(cpu) {
		t.Errorf("%d of %d CPU samples in spin <- main, want >= 80%% of at least 20", spin, cpu)
	}
}

// stackCounts sums the waits of traces by their user stack (leaf first),
// kernel leaf function prepended.
func stackCounts(traces []offCPUTrace) map[string]time.Duration {
	out := make(map[string]time.Duration)
	for _, tr := range traces {
		if tr.meta.OffCPUNS == 0 {
			continue
		}
		k := ""
		if len(tr.kernel) > 2 {
			k = tr.kernel[2] + " | "
		}
		out[k+describe(tr.user)] += time.Duration(tr.meta.OffCPUNS)
	}
	return out
}

// chainWait returns the time the traces of thread tid (0: any) waited in
// total and with user frames holding chain.
func chainWait(traces []offCPUTrace, tid uint32, chain ...string) (total, inChain time.Duration, bad []string) {
	for _, tr := range traces {
		if tr.meta.OffCPUNS == 0 || tid != 0 && tr.meta.TID != tid {
			continue
		}
		w := time.Duration(tr.meta.OffCPUNS)
		total += w
		if _, ok := hasChain(tr.user, chain...); ok {
			inChain += w
		} else if len(bad) < 5 {
			bad = append(bad, strings.Join(tr.kernel, " <- ")+" | "+describe(tr.user))
		}
	}
	return total, inChain, bad
}

// TestOffCPUGo: a goroutine blocked on a channel in main.main ->
// main.waitOuter -> main.waitInner shows that chain, below the
// scheduler's wait (runtime.mcall) and the channel's (runtime.gopark <-
// runtime.chanrecv1), for at least half the program's wall time: the
// thread it parked from waits while it does.
func TestOffCPUGo(t *testing.T) {
	testenv.RequireBPF(t)
	bin := filepath.Join(t.TempDir(), "gowait")
	testenv.Run(t, filepath.Join(testenv.RepoRoot(t), "tracer/testdata/offcpu/gowait"), "go", "build", "-o", bin, ".")
	traces, wall, _ := traceOffCPU(t, exec.Command(bin), 4*time.Second, OffCPU{Enabled: true, Threshold: time.Millisecond, Fraction: 1})
	total, inChain, _ := chainWait(traces, 0, "runtime.mcall", "runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "main.waitInner", "main.waitOuter", "main.main")
	t.Logf("wall %v: threads waited %v, %v of it (%.0f%% of wall) for the channel in main.waitInner <- main.waitOuter <- main.main",
		wall, total, inChain, 100*inChain.Seconds()/wall.Seconds())
	if inChain.Seconds() < 0.5*wall.Seconds() {
		for k, v := range stackCounts(traces) {
			if v > 100*time.Millisecond {
				t.Logf("%v %s", v, k)
			}
		}
		t.Errorf("the channel wait holds %v of %v wall time, want >= 50%%", inChain, wall)
	}
}

// TestOffCPUPython: a Python thread in time.sleep called from inner,
// called from outer, shows those Python frames above the interpreter's
// native ones for at least 80% of the time it was blocked.
func TestOffCPUPython(t *testing.T) {
	testenv.RequireBPF(t)
	script := "import time\n\ndef inner():\n    time.sleep(0.004)\n\ndef outer():\n    while True:\n        inner()\n\nouter()\n"
	cmd := exec.Command(testenv.SystemPython(t).Path, "-c", script)
	traces, wall, blocked := traceOffCPUWith(t, cmd, 4*time.Second, OffCPU{Enabled: true, Threshold: time.Millisecond, Fraction: 1}, python.Runtime{})
	total, inChain, bad := chainWait(traces, uint32(cmd.Process.Pid), "inner", "outer")
	for _, b := range bad {
		t.Logf("not in the chain: %s", b)
	}
	t.Logf("wall %v, blocked %v: waited %v, %v (%.1f%% of blocked) in inner <- outer", wall, blocked, total, inChain, 100*inChain.Seconds()/blocked.Seconds())
	if inChain.Seconds() < 0.8*blocked.Seconds() {
		t.Errorf("time.sleep in inner <- outer holds %v of %v blocked time, want >= 80%%", inChain, blocked)
	}
}
