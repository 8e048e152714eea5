package python

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/namecache"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/procmaps"
)

// codeDump makes a Python process define n functions (one with a non-ASCII
// name, one method), print what identifies each code object, and wait for
// stdin to close.
const codeDump = `
import json, sys
n = int(sys.argv[1])
src = "".join("def f%d(x):\n    return x + %d\n" % (i, i) for i in range(n))
src += "class Klass:\n    def méthode(self):\n        return 1\n"
ns = {}
exec(compile(src, "/generated/módule.py", "exec"), ns)
codes = [ns["f%d" % i].__code__ for i in range(n)] + [ns["Klass"].méthode.__code__]
out = []
for c in codes:
    out.append({"addr": id(c), "name": id(c.co_name), "first": c.co_firstlineno,
                "qualname": getattr(c, "co_qualname", c.co_name), "file": c.co_filename})
print(json.dumps(out), flush=True)
sys.stdin.read()
`

// dumpedCode is one code object as codeDump prints it.
type dumpedCode struct {
	Addr     uint64 `json:"addr"`
	Name     uint64 `json:"name"`
	First    int32  `json:"first"`
	Qualname string `json:"qualname"`
	File     string `json:"file"`
}

// attach starts codeDump under py and attaches to it the way the tracer
// does: Detect on the interpreter file among its mappings, Attach with the
// mapping.
func attach(t *testing.T, py string, n int) (*instance, []dumpedCode) {
	t.Helper()
	cmd := exec.Command(py, "-c", codeDump, fmt.Sprint(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReaderSize(stdout, 1<<20).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var codes []dumpedCode
	if err := json.Unmarshal([]byte(line), &codes); err != nil {
		t.Fatal(err)
	}

	pid := cmd.Process.Pid
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	var inst interpreter.Instance
	err = procmaps.Parse(maps, func(p [4]byte) bool { return p[2] == 'x' }, func(m procmaps.Mapping) {
		if inst != nil || !m.IsFile() {
			return
		}
		ef, err := elffile.Open(elffile.Source{Open: func() (*os.File, error) { return os.Open(m.Path) }, Path: m.Path})
		if err != nil {
			return // not an ELF file: not a Python either
		}
		defer ef.Close()
		l, err := Runtime{}.Detect(interpreter.File{Path: m.Path, ELF: func() (*elffile.File, error) { return ef, nil }})
		if err != nil {
			t.Fatalf("detect %s: %v", m.Path, err)
		}
		if l == nil {
			return
		}
		if inst, err = l.Attach(uint32(pid), interpreter.Mapping{Start: m.Start, End: m.End, Offset: m.Offset}, interpreter.ProcessMemory(pid)); err != nil {
			t.Fatalf("attach: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if inst == nil {
		t.Fatalf("%s: no CPython interpreter found among the mappings", py)
	}
	return inst.(*instance), codes
}

// TestFrameNames reads code objects from live processes of every Python
// here and names them: qualified name, file and line, non-ASCII included.
func TestFrameNames(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading another process's memory needs root (CAP_SYS_PTRACE)")
	}
	for _, py := range testenv.Pythons(t, 8, 13) {
		t.Run(py.Name, func(t *testing.T) {
			inst, codes := attach(t, py.Path, 200)
			u := inst.Unwind()
			if u.Kind != interpreter.KindPython || u.Handoff[0].End <= u.Handoff[0].Start || u.Data[0] == 0 {
				t.Fatalf("unwind data incomplete: %+v", u)
			}
			for _, c := range codes {
				// The first instruction: offset 0 of the bytecode.
				var aux uint32
				if inst.minor >= 11 {
					aux = inst.offsets.CodeCodeAdaptive
				}
				f := interpreter.Frame{Type: trace.FrameCPython, Addr: c.Addr, Aux: aux, Extra: fingerprint(c.Name, c.First)}
				sym, err := inst.Frame(f)
				if err != nil {
					t.Fatalf("%s: %v", c.Qualname, err)
				}
				if sym.Function != c.Qualname || sym.File != c.File || sym.Line < int64(c.First) || sym.Line > int64(c.First)+1 {
					t.Fatalf("named %q %s:%d, want %q %s:%d", sym.Function, sym.File, sym.Line, c.Qualname, c.File, c.First)
				}
				if sym.ID.File != trace.SourceFileID("cpython", c.File) || sym.ID.Type != trace.FrameCPython {
					t.Fatalf("frame ID %+v", sym.ID)
				}
				// Another fingerprint: not the code object sampled.
				f.Extra ^= 1
				if _, err := inst.Frame(f); !errors.Is(err, ErrStaleCode) {
					t.Fatalf("wrong fingerprint: err = %v, want ErrStaleCode", err)
				}
			}
			last := codes[len(codes)-1]
			if !strings.Contains(last.Qualname, "méthode") {
				t.Fatalf("the method came out as %q", last.Qualname)
			}
		})
	}
}

// TestFrameMemory measures the heap held per code object cached against
// the estimate the cache's byte bound counts, and checks that a process's
// cache stays within its bound.
func TestFrameMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading another process's memory needs root (CAP_SYS_PTRACE)")
	}
	const n = 2048
	inst, codes := attach(t, testenv.SystemPython(t).Path, n)
	name := func(c dumpedCode) {
		t.Helper()
		if _, err := inst.Frame(interpreter.Frame{Addr: c.Addr, Aux: inst.offsets.CodeCodeAdaptive, Extra: fingerprint(c.Name, c.First)}); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, c := range codes[:n] {
		name(c)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if inst.codes.Len() != n {
		t.Fatalf("%d code objects cached, want %d", inst.codes.Len(), n)
	}
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	est := float64(inst.codes.Bytes()) / n
	t.Logf("%.0f heap bytes per cached code object, counted as %.0f", per, est)
	if per > 1.5*est {
		t.Errorf("a code object holds %.0f bytes but counts as %.0f: the byte bound undercounts", per, est)
	}
	// A process's bound evicts the least recently used.
	const limit = 64 << 10
	inst.codes = namecache.New[codeKey, *code](namecache.NewBudget(1<<20), limit)
	for _, c := range codes[:n] {
		name(c)
		if inst.codes.Bytes() > limit {
			t.Fatalf("the cache holds %d bytes, bound %d", inst.codes.Bytes(), limit)
		}
	}
	if inst.codes.Len() >= n {
		t.Errorf("all %d code objects kept under a %d-byte bound", n, limit)
	}
}

// TestDetectNames: which file names are taken for an interpreter, which
// are refused, and which are not looked at.
func TestDetectNames(t *testing.T) {
	noOpen := func() (*elffile.File, error) { return nil, os.ErrNotExist }
	for name, want := range map[string]string{
		"/usr/lib/libpython3.13t.so.1.0": "unsupported",
		"/usr/bin/python3.11d":           "unsupported",
		"/usr/bin/python3.11":            "opened",
		"/usr/lib/libpython3.8.so.1.0":   "opened",
		"/usr/bin/python3":               "ignored",
		"/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so": "ignored",
		"/usr/bin/python3.11-config": "ignored",
	} {
		l, err := Runtime{}.Detect(interpreter.File{Path: name, ELF: noOpen})
		got := "ignored"
		switch {
		case errors.Is(err, ErrUnsupportedVersion):
			got = "unsupported"
		case errors.Is(err, os.ErrNotExist):
			got = "opened"
		case err != nil || l != nil:
			got = fmt.Sprint(l, err)
		}
		if got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}
