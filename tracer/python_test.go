package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter/python"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// pythonChain is a workload whose hot function is inner, called by middle,
// called by outer. The lines checked are marked.
const pythonChain = `import sys

def inner(n):
    s = 0
    for i in range(n):
        s += i * i  # line 6
    return s

def middle():
    return inner(20000)  # line 10

def outer():
    while True:
        middle()  # line 14

outer()  # line 16
`

// pythonCCall spends its time in C (hashing in OpenSSL or _sha256), called
// from Python.
const pythonCCall = `import hashlib

def digest(data):
    return hashlib.sha256(data).digest()  # line 4

def loop():
    data = b"x" * (1 << 20)
    while True:
        digest(data)  # line 9

loop()  # line 11
`

// pyFrame is an expected Python frame: function, and the lines it may be
// sampled at.
type pyFrame struct {
	name  string
	lines []int64
}

// pythonFrames returns the Python frames of a stack, leaf first, and the
// index of the first.
func pythonFrames(frames []userFrame) ([]userFrame, int) {
	var out []userFrame
	first := -1
	for i, f := range frames {
		if f.typ == trace.FrameCPython {
			if first < 0 {
				first = i
			}
			out = append(out, f)
		}
	}
	return out, first
}

// matchPython reports whether py is exactly want, with every frame in
// script at one of its lines.
func matchPython(py []userFrame, script string, want []pyFrame) bool {
	if len(py) != len(want) {
		return false
	}
	for i, w := range want {
		if py[i].name != w.name || py[i].src != script || !slices.Contains(w.lines, py[i].line) {
			return false
		}
	}
	return true
}

func describePython(frames []userFrame) string {
	s := make([]string, len(frames))
	for i, f := range frames {
		if f.typ == trace.FrameCPython {
			s[i] = fmt.Sprintf("%s (%s:%d)", f.name, filepath.Base(f.src), f.line)
		} else {
			s[i] = f.String()
		}
	}
	return strings.Join(s, " <- ")
}

// interpreterExe matches the executable of a CPython interpreter.
var interpreterExe = regexp.MustCompile(`^python3\.[0-9]+$`)

// pythons are the interpreters the tests run: the python3 on PATH (which
// may be a pyenv shim, a script that execs python3.X), the system's, and
// each pyenv version here (testenv.Pythons).
func pythons(t *testing.T) map[string]string {
	out := map[string]string{"python3 on PATH": "python3"}
	for _, py := range testenv.Pythons(t, 8, 13) {
		out[py.Name] = py.Path
	}
	return out
}

// TestPythonFrames: every Python version here shows outer -> middle ->
// inner, with file and line, below the native frames that enter the
// interpreter, in at least 95% of the samples.
func TestPythonFrames(t *testing.T) {
	testenv.RequireBPF(t)
	script := filepath.Join(t.TempDir(), "chain.py")
	if err := os.WriteFile(script, []byte(pythonChain), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []pyFrame{{"inner", []int64{5, 6}}, {"middle", []int64{10}}, {"outer", []int64{14}}, {"<module>", []int64{16}}}
	pys := pythons(t)
	if testing.Short() {
		// make test-race: the race detector watches the tracer's
		// goroutines, which the system's Python and the newest exercise
		// as all do; make test runs every version.
		pys = map[string]string{}
		for _, py := range testenv.Pythons(t, 13, 13) {
			pys[py.Name] = py.Path
		}
	}
	for name, py := range pys {
		t.Run(name, func(t *testing.T) {
			// Only the samples of the interpreter: python3 on PATH is
			// pyenv's shim, shell scripts that exec python3.X in the
			// end (the same process, running bash before).
			cmd := exec.Command(py, script)
			keep := func(m trace.TraceMeta) bool {
				return m.PID == uint32(cmd.Process.Pid) && interpreterExe.MatchString(filepath.Base(m.ExecutablePath))
			}
			traces, st := sampleTraces(t, cmd, warmUp+8*time.Second, commandWanted, afterWarmUp(keep), python.Runtime{})
			if len(traces) < 200 {
				t.Fatalf("only %d traces", len(traces))
			}
			// Samples that never reach the eval loop (the dynamic
			// loader, interpreter start-up and shutdown) have no
			// Python frames to show; they must be complete, and few.
			full, running := 0, 0
			var bad []string
			for _, frames := range traces {
				if complete(frames) && !slices.ContainsFunc(frames, func(f userFrame) bool { return f.name == "_PyEval_EvalFrameDefault" }) {
					continue
				}
				running++
				pf, first := pythonFrames(frames)
				// The Python chain, then native frames down to the
				// process entry.
				ok := matchPython(pf, script, want) && complete(frames) &&
					frames[len(frames)-1].name == "_start" && first >= 0 && frames[len(frames)-2].typ != trace.FrameCPython
				if ok {
					full++
				} else if len(bad) < 5 {
					bad = append(bad, describePython(frames))
				}
			}
			t.Logf("%s: %d traces, %d running Python code or incomplete, %d (%.1f%%) of them with inner <- middle <- outer <- <module> (file:line) above native frames to _start; %d Python frames emitted, %d unnamed, %d read errors",
				py, len(traces), running, full, 100*float64(full)/float64(max(running, 1)), st.Counters[progs.StacklineCounterCOUNTER_PYTHON_FRAMES], st.InterpreterUnnamed, st.Counters[progs.StacklineCounterCOUNTER_INTERP_ERRORS])
			checkShare(t, "full Python chain", full, running, bad, 0.95)
			if running < len(traces)*8/10 {
				t.Errorf("only %d of %d traces in the eval loop", running, len(traces))
			}
		})
	}
}

// TestPythonCallsC: samples in C code called from Python show the C frames
// first, then the Python frames that called it.
func TestPythonCallsC(t *testing.T) {
	testenv.RequireBPF(t)
	script := filepath.Join(t.TempDir(), "ccall.py")
	if err := os.WriteFile(script, []byte(pythonCCall), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []pyFrame{{"digest", []int64{4}}, {"loop", []int64{9}}, {"<module>", []int64{11}}}
	traces, _ := sampleCommand(t, exec.Command(testenv.SystemPython(t).Path, script), 6*time.Second, python.Runtime{})
	if len(traces) < 200 {
		t.Fatalf("only %d traces", len(traces))
	}
	inC, inCFull := 0, 0
	var bad []string
	for _, frames := range traces {
		pf, first := pythonFrames(frames)
		if first <= 0 || frames[0].err != 0 || strings.HasPrefix(frames[0].file, "python3") {
			continue // not in C code outside the interpreter
		}
		inC++
		if matchPython(pf, script, want) && complete(frames) && frames[len(frames)-1].name == "_start" {
			inCFull++
		} else if len(bad) < 5 {
			bad = append(bad, describePython(frames))
		}
	}
	t.Logf("%d traces, %d in C code outside the interpreter, %d (%.1f%%) of them with digest <- loop <- <module> above",
		len(traces), inC, inCFull, 100*float64(inCFull)/float64(max(inC, 1)))
	for _, b := range bad {
		t.Logf("incomplete: %s", b)
	}
	if inC < len(traces)/2 {
		t.Errorf("only %d of %d traces in C code", inC, len(traces))
	}
	if float64(inCFull) < 0.95*float64(inC) {
		t.Errorf("Python frames above the C frames in %d of %d traces, want >= 95%%", inCFull, inC)
	}
}

// TestPythonShortLived: Python processes that live a few tens of
// milliseconds get their frames named: a trace with code objects not seen
// before wakes the reader at once, while the process is alive to read them
// from (the reader otherwise wakes every second).
//
// Each process runs the chain for 40 ms of its own CPU time, not of wall
// time: on a host loaded by other work, 40 ms of wall time would be a few
// ms of CPU, so the code first run as the interpreter shuts down, which
// stays unnamed (the process is gone when it is read) and costs a fixed
// amount of CPU per process, would be a larger share of the samples, and
// the agent's reader, slowed by the same load, would have less of the
// process's run to read the chain's code in. On a quiet host both are the
// same 40 ms.
func TestPythonShortLived(t *testing.T) {
	testenv.RequireBPF(t)
	script := filepath.Join(t.TempDir(), "short.py")
	src := strings.Replace(pythonChain, "    while True:\n", "    import time\n    end = time.process_time() + 0.04\n    while time.process_time() < end:\n", 1)
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	py := testenv.SystemPython(t).Path
	loop := "for i in $(seq 30); do " + py + " " + script + "; done"
	cmd := exec.Command("/bin/sh", "-c", loop)
	traces, _ := sampleTraces(t, cmd, 4*time.Second, 0, func(m trace.TraceMeta) bool { return m.Comm == filepath.Base(py) }, python.Runtime{})
	var named, total int
	for _, frames := range traces {
		for _, f := range frames {
			if f.typ == trace.FrameCPython {
				total++
				if f.name != "" {
					named++
				}
			}
		}
	}
	t.Logf("%d of %d Python frames named (%.1f%%) in 30 processes running Python for 40 ms each", named, total, 100*float64(named)/float64(max(total, 1)))
	// Without the wake-up 84% are named (the rest read after exit); with
	// it 96-97%: what stays unnamed is code first run as the process
	// exits (interpreter shutdown).
	if total < 100 || float64(named) < 0.90*float64(total) {
		t.Errorf("%d of %d Python frames named, want >= 90%% of at least 100", named, total)
	}
}
