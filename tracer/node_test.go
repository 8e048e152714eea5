package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	v8 "github.com/stackline-dev/stackline/interpreter/v8"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// nodeChain is a workload whose main thread runs outer, which calls
// middle, which calls inner, whose loop is hot. With STACKLINE_TRACE set
// it prints a console.trace from the hot loop and exits. With
// STACKLINE_NEWFN set, inner is made by new Function on every call of
// outer (its name is then "anonymous" and it has no script name). The
// lines checked are marked.
const nodeChain = `'use strict';
const TRACE = !!process.env.STACKLINE_TRACE;
const NEWFN = !!process.env.STACKLINE_NEWFN;
function inner(n) {
  let s = 0;
  for (let i = 0; i < n; i++) { s = (s * 31 + (i ^ (s >>> 11)) + (i % 7) * (s & 255) + (i & 3) * (s >>> 5)) & 0xfffff; if (TRACE && i === 5) { console.trace('hot'); process.exit(0); } } // INNER-LOOP
  return s;
}
const body = 'let s = 0;\nfor (let i = 0; i < n; i++) { s = (s * 31 + (i ^ (s >>> 11)) + (i % 7) * (s & 255) + (i & 3) * (s >>> 5)) & 0xfffff; }\nreturn s;';
function middle(f, n) {
  return f(n) ^ 7; // MIDDLE
}
function outer() {
  const f = NEWFN ? new Function('n', body) : inner;
  let x = 0;
  for (let i = 0; i < 100; i++) x = (x + middle(f, 2000)) & 0xfffff; // OUTER
  return x;
}
let sink = 0;
for (;;) sink = (sink + outer()) & 0xfffff;
`

// nodeLine returns the line of nodeChain holding marker.
func nodeLine(t *testing.T, marker string) int64 {
	t.Helper()
	for i, l := range strings.Split(nodeChain, "\n") {
		if strings.Contains(l, marker) {
			return int64(i + 1)
		}
	}
	t.Fatalf("no %s in the workload", marker)
	return 0
}

// nodeFrame is a frame of a node stack, inlined functions expanded.
type nodeFrame struct {
	name, file string
	line       int64
	typ        trace.FrameType
	err        uint64
	phys       int
}

func (f nodeFrame) String() string {
	if f.err != 0 {
		return trace.ErrorName(f.err)
	}
	if f.name == "" {
		return fmt.Sprintf("?%d", f.typ)
	}
	if f.file != "" || f.line != 0 {
		return fmt.Sprintf("%s (%s:%d)", f.name, filepath.Base(f.file), f.line)
	}
	return f.name
}

// nodeWarmUp is how long node runs before its samples count: V8 tiers
// the workload up meanwhile, and node's unwind table is built.
const nodeWarmUp = 3 * time.Second

// sampleNode runs cmd under a tracer with the V8 runtime until want traces
// of its main thread are recorded, or for d at most, and returns their
// user frames (leaf first), from nodeWarmUp after its start.
func sampleNode(t *testing.T, cmd *exec.Cmd, d time.Duration, want int) ([][]nodeFrame, *v8.RuntimeStats) {
	t.Helper()
	stats := new(v8.RuntimeStats)
	rec, _, from := runTraced(t, v8.Runtime{Stats: stats}, cmd, nodeWarmUp, d, want,
		func(m trace.TraceMeta) bool { return m.PID == uint32(cmd.Process.Pid) && m.TID == m.PID })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	pid := uint32(cmd.Process.Pid)
	var out [][]nodeFrame
	for _, r := range rec.traces {
		if r.meta.PID != pid || r.meta.TID != pid || r.meta.TimestampNS < from {
			continue
		}
		var frames []nodeFrame
		for phys, f := range r.frames {
			switch f.Type {
			case trace.FrameKernel:
				continue
			case trace.FrameError:
				frames = append(frames, nodeFrame{err: f.Addr})
				continue
			}
			lines := rec.frames[f].Lines
			if len(lines) == 0 {
				frames = append(frames, nodeFrame{typ: f.Type, phys: phys})
			}
			for _, l := range lines {
				frames = append(frames, nodeFrame{name: l.Function, file: l.File, line: l.Line, typ: f.Type, phys: phys})
			}
		}
		out = append(out, frames)
	}
	return out, stats
}

// nodeChainAt reports whether frames hold inner (or the anonymous
// function new Function made), middle and outer as consecutive
// JavaScript frames with the workload's script and lines, and native
// frames below down to _start without an error frame.
func nodeChainAt(t *testing.T, frames []nodeFrame, script string, newFn bool) bool {
	type want struct {
		name, file string
		lines      []int64
	}
	// The hot loop, on one line.
	first := want{"inner", script, []int64{nodeLine(t, "INNER-LOOP")}}
	if newFn {
		// new Function's source, without a script name: V8 puts
		// the function's header on lines 1-2, the loop on 4.
		first = want{v8.Anonymous, "", []int64{4}}
	}
	chain := []want{first, {"middle", script, []int64{nodeLine(t, "MIDDLE")}}, {"outer", script, []int64{nodeLine(t, "OUTER")}}}
	i := 0
	for i < len(frames) && frames[i].name != chain[0].name {
		i++
	}
	if i+len(chain) > len(frames) {
		return false
	}
	for j, w := range chain {
		f := frames[i+j]
		if f.name != w.name || f.file != w.file || !slices.Contains(w.lines, f.line) {
			return false
		}
		switch f.typ {
		case trace.FrameV8Interpreted, trace.FrameV8Code:
		default:
			return false
		}
	}
	for _, f := range frames[i+len(chain):] {
		if f.err != 0 {
			return false
		}
		if f.name == "_start" {
			return true
		}
	}
	return false
}

// nodeTopAt reports whether frames hold inner (or the function new
// Function made) with its hot loop's line, and native frames below down
// to _start without an error frame: the whole chain but for the
// functions between.
func nodeTopAt(t *testing.T, frames []nodeFrame, script string, newFn bool) bool {
	name, file, line := "inner", script, nodeLine(t, "INNER-LOOP")
	if newFn {
		name, file, line = v8.Anonymous, "", 4
	}
	i := slices.IndexFunc(frames, func(f nodeFrame) bool { return f.name == name })
	if i < 0 || frames[i].file != file || frames[i].line != line {
		return false
	}
	for _, f := range frames[i+1:] {
		if f.err != 0 {
			return false
		}
		if f.name == "_start" {
			return true
		}
	}
	return false
}

// nodeInlined reports whether inner and middle are lines of one frame:
// inner inlined into middle.
func nodeInlined(frames []nodeFrame) bool {
	for i := 0; i+1 < len(frames); i++ {
		if frames[i].name == "inner" && frames[i+1].name == "middle" {
			return frames[i].typ == trace.FrameV8Code && frames[i].phys == frames[i+1].phys
		}
	}
	return false
}

// consoleTraceLine runs the workload with STACKLINE_TRACE and returns the
// line console.trace gives for inner.
func consoleTraceLine(t *testing.T, node, script string) int64 {
	t.Helper()
	cmd := exec.Command(node, script)
	cmd.Env = append(os.Environ(), "STACKLINE_TRACE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", node, err, out)
	}
	m := regexp.MustCompile(`at inner \(.*:(\d+):\d+\)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no inner in console.trace:\n%s", out)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// TestNodeFrames: on node 20, 22 and 24, interpreted, Sparkplug, default
// (Maglev/TurboFan, inner inlined into middle) and with inner made by
// new Function, at least 95% of the main thread's samples show the whole
// JavaScript chain with script and line above native frames down to
// _start; the hot loop's line is the one console.trace gives there.
func TestNodeFrames(t *testing.T) {
	testenv.RequireBPF(t)
	nodes := testenv.Nodes(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "chain.js")
	if err := os.WriteFile(script, []byte(nodeChain), 0o644); err != nil {
		t.Fatal(err)
	}
	modes := []struct {
		name  string
		flags []string
		newFn bool
	}{
		{"interpreted", []string{"--no-opt", "--no-maglev", "--no-sparkplug"}, false},
		{"sparkplug", []string{"--always-sparkplug", "--no-opt", "--no-maglev"}, false},
		{"default", nil, false},
		{"turbofan", []string{"--no-maglev"}, false},
		{"newfunction", nil, true},
	}
	if testing.Short() && len(nodes) > 0 {
		// make test-race: the race detector watches the tracer's
		// goroutines, which one node interpreted and optimized exercises
		// as all do; make test runs every node and mode.
		nodes, modes = nodes[:1], append(modes[:1:1], modes[2])
	}
	for _, n := range nodes {
		t.Run(n.Name, func(t *testing.T) {
			traceLine := consoleTraceLine(t, n.Path, script)
			if want := nodeLine(t, "INNER-LOOP"); traceLine != want {
				t.Fatalf("console.trace gives inner line %d, the workload's marker is on %d", traceLine, want)
			}
			for _, m := range modes {
				t.Run(m.name, func(t *testing.T) {
					cmd := exec.Command(n.Path, append(m.flags, script)...)
					if m.newFn {
						cmd.Env = append(os.Environ(), "STACKLINE_NEWFN=1")
					}
					traces, stats := sampleNode(t, cmd, 10*time.Second, framesWanted)
					if len(traces) < 150 {
						t.Fatalf("%d traces of the workload, want at least 150", len(traces))
					}
					good, inlined, top := 0, 0, 0
					var bad []string
					hot := map[int64]int{}
					for _, fr := range traces {
						for _, f := range fr {
							if f.name == "inner" || f.name == v8.Anonymous {
								hot[f.line]++
								break
							}
						}
						if nodeTopAt(t, fr, script, m.newFn) {
							top++
						}
						if nodeChainAt(t, fr, script, m.newFn) {
							good++
							if nodeInlined(fr) {
								inlined++
							}
						} else if len(bad) < 8 {
							bad = append(bad, fmt.Sprint(fr))
						}
					}
					share := float64(good) / float64(len(traces))
					t.Logf("%s %s: %d/%d traces (%.1f%%) with the whole chain, %d with inner inlined into middle, %d with inner's hot loop down to _start; named %d, unnamed %d (stale %d), no line %d",
						n.Name, m.name, good, len(traces), 100*share, inlined, top, stats.Named.Load(), stats.Unnamed.Load(), stats.Stale.Load(), stats.NoLine.Load())
					if !m.newFn {
						// The hot loop's body is where most samples
						// land: the line console.trace gives there.
						hotLine, most := int64(0), 0
						for l, c := range hot {
							if c > most {
								hotLine, most = l, c
							}
						}
						if hotLine != traceLine {
							t.Errorf("inner's most sampled line is %d (%v), console.trace gives %d", hotLine, hot, traceLine)
						}
					}
					if (m.name == "default" || m.name == "turbofan") && inlined < len(traces)/2 {
						t.Errorf("inner inlined into middle in %d of %d traces, want most", inlined, len(traces))
					}
					if share < 0.95 {
						t.Errorf("%.1f%% of the traces with the whole chain, want >= 95%%; some without:\n%s", 100*share, strings.Join(bad, "\n"))
					}
				})
			}
		})
	}
}

// nodeChurn makes a new function f<k> by new Function for 20 s, runs it
// hot for 30 ms, prints "k start end" (CLOCK_MONOTONIC nanoseconds, the
// clock of the samples) and drops it; the GC (--expose-gc) runs every ten functions, so functions die and
// their memory is reused by the next ones.
const nodeChurn = `'use strict';
const deadline = Date.now() + 20000;
let sink = 0;
for (let k = 0; Date.now() < deadline; k++) {
  const f = new Function('return function f' + k + '(n) { let s = ' + k + '; for (let i = 0; i < n; i++) { s = (s * 31 + i) & 0xfffff; } return s; }')();
  const start = process.hrtime.bigint();
  while (process.hrtime.bigint() - start < 30000000n) sink = (sink + f(2000)) & 0xfffff;
  console.log(k, String(start), String(process.hrtime.bigint()));
  if (k % 10 === 9) gc();
}
`

// TestNodeChurn: on node 20, 22 and 24, functions made, run and
// collected for 20 s; a frame named f<k> is never sampled outside the
// time f<k> ran (a stale name: another function's name for memory
// reused).
func TestNodeChurn(t *testing.T) {
	testenv.RequireBPF(t)
	nodes := testenv.Nodes(t)
	if testing.Short() && len(nodes) > 0 {
		nodes = nodes[:1] // make test-race; make test runs every node
	}
	for _, n := range nodes {
		t.Run(n.Name, func(t *testing.T) { nodeChurnRun(t, n) })
	}
}

func nodeChurnRun(t *testing.T, n testenv.Node) {
	script := filepath.Join(t.TempDir(), "churn.js")
	if err := os.WriteFile(script, []byte(nodeChurn), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.Path, "--expose-gc", script)
	var out strings.Builder
	cmd.Stdout = &out
	stats := new(v8.RuntimeStats)
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 256 << 20,
		Interpreters: []interpreter.Runtime{v8.Runtime{Stats: stats}}},
		symbolizer.Options{CacheSize: 64, MaxBytes: 256 << 20})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	tr.stop(t)

	type window struct{ start, end int64 }
	windows := map[int64]window{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var k, s, e int64
		if _, err := fmt.Sscan(l, &k, &s, &e); err == nil {
			windows[k] = window{s, e}
		}
	}
	if len(windows) < 300 {
		t.Fatalf("%d functions ran, want at least 300", len(windows))
	}
	name := regexp.MustCompile(`^f(\d+)$`)
	const slack = 2e6 // ns
	right, wrong := 0, 0
	wrongBy := map[string]int{}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.traces {
		if r.meta.PID != uint32(cmd.Process.Pid) {
			continue
		}
		ms := int64(r.meta.TimestampNS) - tr.monoToWall
		for _, f := range r.frames {
			for _, l := range rec.frames[f].Lines {
				m := name.FindStringSubmatch(l.Function)
				if m == nil {
					continue
				}
				k, _ := strconv.ParseInt(m[1], 10, 64)
				w, ok := windows[k]
				if ok && ms >= w.start-slack && ms <= w.end+slack {
					right++
				} else {
					wrong++
					wrongBy[fmt.Sprintf("type %d, %d lines", f.Type, len(rec.frames[f].Lines))]++
					if wrong <= 5 {
						t.Logf("f%d sampled at %d, it ran %d-%d: %v", k, ms, w.start, w.end, rec.frames[f].Lines)
					}
				}
			}
		}
	}
	t.Logf("%s: %d functions; frames named with the function running %d, with another %d; named %d, unnamed %d (stale %d)",
		n.Name, len(windows), right, wrong, stats.Named.Load(), stats.Unnamed.Load(), stats.Stale.Load())
	if wrong > 0 {
		t.Errorf("%d frames named with a function that was not running: %v", wrong, wrongBy)
	}
	if right < 1000 {
		t.Errorf("%d frames named f<k>, want at least 1000", right)
	}
}
