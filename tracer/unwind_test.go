package tracer

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// userFrame is a user frame of a sampled stack, named.
type userFrame struct {
	name string // outermost function at the address; "" when unnamed
	file string // the mapped file's base name (the source file's path for interpreted frames)
	err  uint64 // error code of an error frame, else 0
	typ  trace.FrameType
	src  string // source file of the outermost function, when known
	line int64  // its line, when known
}

func (f userFrame) String() string {
	if f.err != 0 {
		return trace.ErrorName(f.err)
	}
	if f.name == "" {
		return "?@" + f.file
	}
	return f.name
}

// warmUp is how much of a process's first traces the tests that ask how
// a running process unwinds leave out (sampleCommand, afterWarmUp). A new
// process is read when first sampled, and a file with 64 KiB of code or
// more gets its table (or the region sampled, its) only once a sample
// reaches it (libc, libpython, a Go binary), so a process's first traces
// stop early ("process not loaded yet", or at that file) for as long as
// that takes: tens of milliseconds, several hundred under the race
// detector. TestTableBuiltWhenSampled, TestTableBuiltByRegion and the
// churn tests ask about that delay.
const warmUp = time.Second

// sampleCommand runs cmd under a tracer sampling at 199 Hz, for warmUp
// plus d at most, and returns the user frames (leaf first) of each trace of
// cmd's process taken after its first warmUp. It stops once it has
// commandWanted of them.
func sampleCommand(t *testing.T, cmd *exec.Cmd, d time.Duration, interps ...interpreter.Runtime) ([][]userFrame, Stats) {
	t.Helper()
	return sampleTraces(t, cmd, warmUp+d, commandWanted, afterWarmUp(func(m trace.TraceMeta) bool { return m.PID == uint32(cmd.Process.Pid) }), interps...)
}

// commandWanted is how many traces the tests of sampleCommand and
// TestPythonFrames sample, three times the 200 they require: their shares
// (95% with the whole chain) are measured at 98-100% (see framesWanted).
// A quiet host records them in about 3 s (they sampled for a fixed 5 s
// before, TestPythonCallsC 3); a loaded one has up to 8 (6) to reach them.
const commandWanted = 600

// afterWarmUp returns keep for the traces keep selects, but for those of
// the first warmUp after the first one it selects (in arrival order).
func afterWarmUp(keep func(trace.TraceMeta) bool) func(trace.TraceMeta) bool {
	var first uint64
	return func(m trace.TraceMeta) bool {
		if !keep(m) {
			return false
		}
		if first == 0 {
			first = m.TimestampNS
		}
		return m.TimestampNS >= first+uint64(warmUp)
	}
}

// sampleTraces is sampleCommand for the traces keep selects, run for d, or
// until want of them are recorded (want 0: for d). keep is called in the
// traces' arrival order, again from the first when they are returned (as
// afterWarmUp's selection wants).
func sampleTraces(t *testing.T, cmd *exec.Cmd, d time.Duration, want int, keep func(trace.TraceMeta) bool, interps ...interpreter.Runtime) ([][]userFrame, Stats) {
	t.Helper()
	return sampleTracesFrom(t, cmd, nil, d, want, keep, interps...)
}

// sampleTracesFrom is sampleTraces counting from when ready, polled from
// cmd's start, first reports true (a minute at most): the traces sampled
// before are left out, and d starts then.
func sampleTracesFrom(t *testing.T, cmd *exec.Cmd, ready func(*liveTracer) bool, d time.Duration, want int, keep func(trace.TraceMeta) bool, interps ...interpreter.Runtime) ([][]userFrame, Stats) {
	t.Helper()
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 256 << 20, Interpreters: interps}, symbolizer.Options{CacheSize: 64, MaxBytes: 256 << 20})
	// The processes running at start are synced first; the workload is a
	// process started on a running tracer.
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}

	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if ready != nil {
		start := time.Now()
		for !ready(tr) {
			if time.Since(start) > time.Minute {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal("the workload was not ready within a minute")
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("ready %v after the workload's start", time.Since(start).Round(time.Millisecond))
		from := uint64(time.Now().UnixNano())
		all := keep
		keep = func(m trace.TraceMeta) bool { return m.TimestampNS >= from && all(m) }
	}
	rec.waitFor(time.Now().Add(d), want, keep)
	cmd.Process.Kill()
	cmd.Wait()
	time.Sleep(200 * time.Millisecond)
	tr.stop(t)
	st := tr.Stats()

	return rec.userTraces(keep), st
}

// userTraces returns the user frames (leaf first) of each trace recorded
// that keep selects.
func (rec *recorder) userTraces(keep func(trace.TraceMeta) bool) [][]userFrame {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out [][]userFrame
	for _, r := range rec.traces {
		if !keep(r.meta) {
			continue
		}
		var frames []userFrame
		for _, f := range r.frames {
			switch f.Type {
			case trace.FrameKernel:
				continue
			case trace.FrameError:
				frames = append(frames, userFrame{err: f.Addr})
				continue
			}
			uf := userFrame{file: rec.execs[f.File].FileName, typ: f.Type}
			if lines := rec.frames[f].Lines; len(lines) > 0 {
				l := lines[len(lines)-1]
				uf.name, uf.src, uf.line = l.Function, l.File, l.Line
			}
			frames = append(frames, uf)
		}
		out = append(out, frames)
	}
	return out
}

// hasChain reports whether frames holds chain as consecutive frames whose
// names contain the chain's names, and returns the index of its first.
func hasChain(frames []userFrame, chain ...string) (int, bool) {
	for i := range frames {
		if i+len(chain) > len(frames) {
			return 0, false
		}
		ok := true
		for j, c := range chain {
			if !strings.Contains(frames[i+j].name, c) {
				ok = false
				break
			}
		}
		if ok {
			return i, true
		}
	}
	return 0, false
}

// checkShare logs the first incomplete stacks and fails t when fewer than
// want of total stacks are full.
func checkShare(t *testing.T, what string, full, total int, bad []string, want float64) {
	t.Helper()
	for _, b := range bad {
		t.Logf("incomplete: %s", b)
	}
	if float64(full) < want*float64(total) {
		t.Errorf("%s in %d of %d traces, want >= %.0f%%", what, full, total, 100*want)
	}
}

// complete reports whether a stack has no error frame.
func complete(frames []userFrame) bool {
	return !slices.ContainsFunc(frames, func(f userFrame) bool { return f.err != 0 })
}

func describe(frames []userFrame) string {
	s := make([]string, len(frames))
	for i, f := range frames {
		s[i] = f.String()
	}
	return strings.Join(s, " <- ")
}

// checkNativeChain checks a native workload (main -> alpha -> beta ->
// gamma, gamma sorting with libc's qsort and a comparator of its own): at
// least 95% of the samples carry the whole chain down to the process entry
// (_start), and comparator samples show comparator <- libc <- gamma.
func checkNativeChain(t *testing.T, traces [][]userFrame, comparator string, chain ...string) {
	t.Helper()
	if len(traces) < 200 {
		t.Fatalf("only %d traces", len(traces))
	}
	full, cmp, cmpFull := 0, 0, 0
	var bad []string
	for _, frames := range traces {
		i, ok := hasChain(frames, chain...)
		ok = ok && complete(frames) && frames[len(frames)-1].name == "_start"
		// Above the chain: only the comparator and libc (qsort's
		// internals).
		for _, f := range frames[:i] {
			if !strings.Contains(f.name, comparator) && !strings.HasPrefix(f.file, "libc.so") {
				ok = false
			}
		}
		if ok {
			full++
		} else if len(bad) < 5 {
			bad = append(bad, describe(frames))
		}
		if len(frames) > 0 && strings.Contains(frames[0].name, comparator) {
			cmp++
			if ok && i >= 2 && strings.HasPrefix(frames[1].file, "libc.so") && strings.HasPrefix(frames[i-1].file, "libc.so") {
				cmpFull++
			}
		}
	}
	t.Logf("%d traces: %d (%.1f%%) with the full chain to _start; %d in the comparator, %d of them comparator <- libc <- %s",
		len(traces), full, 100*float64(full)/float64(len(traces)), cmp, cmpFull, chain[0])
	checkShare(t, "full chain", full, len(traces), bad, 0.95)
	if cmp < 10 || float64(cmpFull) < 0.95*float64(cmp) {
		t.Errorf("comparator <- libc <- %s in %d of %d comparator traces, want >= 95%% of at least 10", chain[0], cmpFull, cmp)
	}
}

// TestUnwindC: a C program built -O2 -fomit-frame-pointer, whose hot
// function uses rbp as a general register, unwinds fully through its own
// .eh_frame and libc's.
func TestUnwindC(t *testing.T) {
	testenv.RequireBPF(t)
	bin := filepath.Join(t.TempDir(), "chain")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O2", "-fomit-frame-pointer", "-o", bin, "tracer/testdata/unwind/chain.c")
	traces, st := sampleCommand(t, exec.Command(bin), 8*time.Second)
	t.Logf("stats: CFI frames %d, FP frames %d, no CFI %d, no mapping %d, not ready %d, bad frame %d, tables %d (%d bytes)",
		st.Counters[progs.StacklineCounterCOUNTER_CFI_FRAMES], st.Counters[progs.StacklineCounterCOUNTER_FP_FRAMES],
		st.Counters[progs.StacklineCounterCOUNTER_NO_CFI], st.Counters[progs.StacklineCounterCOUNTER_NO_MAPPING],
		st.Counters[progs.StacklineCounterCOUNTER_NOT_READY], st.Counters[progs.StacklineCounterCOUNTER_BAD_FRAME],
		st.TablesLoaded, st.TableBytes)
	checkNativeChain(t, traces, "compare_ints", "chain_gamma", "chain_beta", "chain_alpha", "main")
}

// TestUnwindCPlusPlus: the same for C++.
func TestUnwindCPlusPlus(t *testing.T) {
	testenv.RequireBPF(t)
	bin := filepath.Join(t.TempDir(), "chaincc")
	testenv.Run(t, testenv.RepoRoot(t), "g++", "-O2", "-fomit-frame-pointer", "-o", bin, "tracer/testdata/unwind/chain.cc")
	traces, _ := sampleCommand(t, exec.Command(bin), 8*time.Second)
	checkNativeChain(t, traces, "Pipeline::compare", "Pipeline::gamma", "Pipeline::beta", "Pipeline::alpha", "main")
}

// TestUnwindGoLeaf: a Go program whose hot function has no frame of its
// own keeps every caller (a frame-pointer walk loses main.b). The samples
// of the Go runtime itself (the scheduler on the system stack, which the
// preemption of the hot loop runs every 10 ms, and the other threads)
// end at runtime.mcall or runtime.mstart, as the runtime's own traceback
// does; they must be complete too.
func TestUnwindGoLeaf(t *testing.T) {
	testenv.RequireBPF(t)
	bin := filepath.Join(t.TempDir(), "goleaf")
	testenv.Run(t, filepath.Join(testenv.RepoRoot(t), "tracer/testdata/unwind/goleaf"), "go", "build", "-o", bin, ".")
	traces, _ := sampleCommand(t, exec.Command(bin), 8*time.Second)
	if len(traces) < 200 {
		t.Fatalf("only %d traces", len(traces))
	}
	inMain, full, whole := 0, 0, 0
	var bad []string
	for _, frames := range traces {
		if complete(frames) {
			whole++
		}
		if !slices.ContainsFunc(frames, func(f userFrame) bool { return strings.HasPrefix(f.name, "main.") }) {
			continue
		}
		inMain++
		_, ok := hasChain(frames, "main.leaf", "main.b", "main.a", "main.main", "runtime.main", "runtime.goexit")
		if ok && complete(frames) && len(frames) == 6 {
			full++
		} else if len(bad) < 5 {
			bad = append(bad, describe(frames))
		}
	}
	t.Logf("%d traces, %d (%.1f%%) complete; %d in the workload's code, %d (%.1f%%) leaf <- b <- a <- main.main <- runtime.main <- runtime.goexit",
		len(traces), whole, 100*float64(whole)/float64(len(traces)), inMain, full, 100*float64(full)/float64(max(inMain, 1)))
	checkShare(t, "full chain", full, inMain, bad, 0.95)
	if float64(whole) < 0.95*float64(len(traces)) {
		t.Errorf("complete stacks in %d of %d traces, want >= 95%%", whole, len(traces))
	}
}

// TestUnwindPython: python3 (no frame pointers anywhere) unwinds through
// libpython down to the process entry.
func TestUnwindPython(t *testing.T) {
	testenv.RequireBPF(t)
	py := testenv.SystemPython(t).Path
	script := "x = 0\nwhile True:\n    x = (x * 31 + 7) % 1000003\n    d = {i: str(i) for i in range(50)}\n"
	traces, _ := sampleCommand(t, exec.Command(py, "-c", script), 8*time.Second)
	if len(traces) < 200 {
		t.Fatalf("only %d traces", len(traces))
	}
	full := 0
	var bad []string
	for _, frames := range traces {
		if complete(frames) && len(frames) > 3 && frames[len(frames)-1].name == "_start" &&
			slices.ContainsFunc(frames, func(f userFrame) bool { return f.name == "_PyEval_EvalFrameDefault" }) {
			full++
		} else if len(bad) < 5 {
			bad = append(bad, describe(frames))
		}
	}
	t.Logf("%d traces, %d (%.1f%%) through _PyEval_EvalFrameDefault to _start", len(traces), full, 100*float64(full)/float64(len(traces)))
	checkShare(t, "complete stacks", full, len(traces), bad, 0.95)
}
