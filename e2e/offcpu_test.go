package e2e

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/localfile"
)

// pythonSleeper sleeps in time.sleep, called by inner, called by outer.
const pythonSleeper = `import time

def inner():
    time.sleep(0.004)

def outer():
    while True:
        inner()

outer()
`

// offCPUSample is a sample of the written pprof files: its function names
// leaf first (inlined functions before their caller), thread and value.
type offCPUSample struct {
	funcs []string
	pid   int64
	tid   int64
	value int64
}

// readPprofs reads the samples of the pprof files matching pattern.
func readPprofs(t *testing.T, pattern string) []offCPUSample {
	t.Helper()
	files, _ := filepath.Glob(pattern)
	if len(files) == 0 {
		t.Fatalf("no files %s", pattern)
	}
	var out []offCPUSample
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := profile.Parse(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, s := range p.Sample {
			smp := offCPUSample{value: s.Value[0]}
			if v := s.NumLabel[localfile.LabelPID]; len(v) > 0 {
				smp.pid = v[0]
			}
			if v := s.NumLabel[localfile.LabelTID]; len(v) > 0 {
				smp.tid = v[0]
			}
			for _, loc := range s.Location {
				for _, l := range loc.Line {
					smp.funcs = append(smp.funcs, l.Function.Name)
				}
			}
			out = append(out, smp)
		}
	}
	return out
}

// schedStat is a thread's /proc/PID/task/TID/schedstat: time on a CPU and
// time runnable waiting for one.
type schedStat struct{ run, runQueue time.Duration }

// readSchedStat reads the schedstat of the main thread of pid.
func readSchedStat(t *testing.T, pid int) schedStat {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "schedstat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		t.Fatalf("schedstat %q", b)
	}
	run, err1 := strconv.ParseInt(f[0], 10, 64)
	rq, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("schedstat %q", b)
	}
	return schedStat{time.Duration(run), time.Duration(rq)}
}

// hasCalls reports whether funcs (leaf first) holds chain as consecutive
// names.
func hasCalls(funcs []string, chain ...string) bool {
	for i := 0; i+len(chain) <= len(funcs); i++ {
		if slices.Equal(funcs[i:i+len(chain)], chain) {
			return true
		}
	}
	return false
}

// TestOffCPUEndToEnd runs the agent with --off-cpu (waits of 1 ms or more,
// half of them sampled) writing local files, against three workloads:
//   - C without frame pointers, its main thread blocked ~90% of the time in
//     main -> waitOuter -> waitInner -> read() on a pipe: the off-CPU
//     profile holds at least 80% of the thread's wall time in that chain
//     with the kernel's pipe_read, and its CPU profile shows the spin;
//   - Go, a goroutine blocked on a channel in main.main -> main.waitOuter
//     -> main.waitInner: the chain shows under runtime.chanrecv1;
//   - Python in time.sleep under inner <- outer: at least 80% of the
//     thread's waits there.
//
// Every trace-event file is valid (ValidateTraceEvents: fields, phases,
// slices of a thread that do not overlap), and the C thread's slices match
// its samples: one CPU slice per CPU sample, and its waits, scaled, sum to
// the off-CPU profile's values.
func TestOffCPUEndToEnd(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	root := testenv.RepoRoot(t)
	cBin := filepath.Join(dir, "wait")
	testenv.Run(t, root, "gcc", "-O2", "-fomit-frame-pointer", "-pthread", "-o", cBin, "tracer/testdata/offcpu/wait.c")
	goBin := filepath.Join(dir, "gowait")
	testenv.Run(t, filepath.Join(root, "tracer/testdata/offcpu/gowait"), "go", "build", "-o", goBin, ".")
	script := filepath.Join(dir, "sleeper.py")
	if err := os.WriteFile(script, []byte(pythonSleeper), 0o644); err != nil {
		t.Fatal(err)
	}
	start := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	var cw, gw, pw *exec.Cmd
	var wall, blocked time.Duration
	var begin time.Time
	var sched0 schedStat

	out := filepath.Join(dir, "profiles")
	const fraction = 0.5
	runAgentWith(t, bin, agentRun{
		d: 8 * time.Second,
		args: []string{"--output-dir", out, "--reporter-interval", "2s", "--samples-per-second", "49",
			"--off-cpu", "--off-cpu-threshold", "1ms", "--off-cpu-fraction", "0.5"},
		// The workloads start once the agent has loaded its programs,
		// so that their waits from then on are all seen.
		afterStart: func() {
			time.Sleep(3 * time.Second)
			cw, gw, pw = start(cBin), start(goBin), start(testenv.SystemPython(t).Path, script)
			begin = time.Now()
			sched0 = readSchedStat(t, cw.Process.Pid)
		},
		beforeStop: func() {
			sched1 := readSchedStat(t, cw.Process.Pid)
			wall = time.Since(begin)
			blocked = wall - (sched1.run - sched0.run) - (sched1.runQueue - sched0.runQueue)
		},
	})

	// The trace events: valid; the C thread's window.
	traceFiles, _ := filepath.Glob(filepath.Join(out, "*.trace.json"))
	if len(traceFiles) == 0 {
		t.Fatalf("no trace-event files in %s", out)
	}
	cPID := int64(cw.Process.Pid)
	var cSlices []localfile.TraceSlice
	for _, name := range traceFiles {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		sl, err := localfile.ValidateTraceEvents(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, s := range sl {
			if !strings.HasSuffix(s.Stack, s.Name) {
				t.Errorf("slice %q of stack %q is not named by its leaf", s.Name, s.Stack)
			}
			if s.PID == cPID && s.TID == cPID {
				cSlices = append(cSlices, s)
			}
		}
	}
	if len(cSlices) == 0 {
		t.Fatal("no slices of the C workload's main thread")
	}
	first, last := cSlices[0].StartUnixNano, int64(0)
	cpuSlices, waitSlices, waitedNS := 0, 0, int64(0)
	for _, s := range cSlices {
		first = min(first, s.StartUnixNano)
		last = max(last, s.StartUnixNano+s.DurationNano)
		switch s.Category {
		case localfile.TraceCategoryCPU:
			cpuSlices++
		case localfile.TraceCategoryOffCPU:
			waitSlices++
			waitedNS += s.WaitNano
		}
	}
	window := time.Duration(last - first)

	// The C workload: off-CPU share of its wall time in the wait chain.
	var offTotal, inChain int64
	offSamples := readPprofs(t, filepath.Join(out, "*.offcpu.pb.gz"))
	for _, s := range offSamples {
		if s.pid != cPID || s.tid != cPID {
			continue
		}
		offTotal += s.value
		if hasCalls(s.funcs, "waitInner", "waitOuter", "main") &&
			slices.ContainsFunc(s.funcs, func(f string) bool { return strings.Contains(f, "pipe_read") }) {
			inChain += s.value
		}
	}
	// The thread waits ~90% of its wall time on a quiet host; on a busy
	// one it also waits for a CPU (runnable, not off-CPU): the share is
	// of the time the kernel says it was neither running nor runnable.
	share := float64(inChain) / float64(blocked)
	t.Logf("C main thread: %v wall, %v blocked (schedstat); slices over %v: %d CPU, %d waits (%v, %v scaled); off-CPU profile %v, %v in waitInner <- waitOuter <- main with pipe_read: %.1f%% of the blocked time, %.1f%% of wall",
		wall, blocked, window, cpuSlices, waitSlices, time.Duration(waitedNS), time.Duration(float64(waitedNS)/fraction),
		time.Duration(offTotal), time.Duration(inChain), 100*share, 100*float64(inChain)/float64(wall))
	if share < 0.8 {
		t.Errorf("the wait chain holds %.1f%% of the C thread's blocked time, want >= 80%%", 100*share)
	}
	// The slices match the samples: the waits' durations, scaled, are
	// the profile's values (each rounded once).
	if d := math.Abs(float64(waitedNS)/fraction - float64(offTotal)); d > float64(2*waitSlices) {
		t.Errorf("waits of the trace events sum to %d ns scaled, the off-CPU profile to %d", int64(float64(waitedNS)/fraction), offTotal)
	}

	cpuSamples := readPprofs(t, filepath.Join(out, "stackline-*[0-9]Z.pb.gz"))
	cCPU, spin := int64(0), int64(0)
	for _, s := range cpuSamples {
		if s.pid != cPID || s.tid != cPID {
			continue
		}
		cCPU += s.value
		if hasCalls(s.funcs, "spin", "main") {
			spin += s.value
		}
	}
	t.Logf("C main thread: %d CPU samples, %d in spin <- main", cCPU, spin)
	// Most of its CPU time is the spin; the rest is the read's return.
	if cCPU < 10 || 3*spin < 2*cCPU {
		t.Errorf("%d of %d CPU samples in spin <- main, want >= 2/3 of at least 10", spin, cCPU)
	}
	if cCPU != int64(cpuSlices) {
		t.Errorf("%d CPU samples of the C thread, %d CPU slices", cCPU, cpuSlices)
	}

	// Go and Python: their chains in the off-CPU profile.
	var goChain, pyTotal, pyChain int64
	for _, s := range offSamples {
		switch s.pid {
		case int64(gw.Process.Pid):
			if hasCalls(s.funcs, "runtime.chanrecv1", "main.waitInner", "main.waitOuter", "main.main") {
				goChain += s.value
			}
		case int64(pw.Process.Pid):
			pyTotal += s.value
			if hasCalls(s.funcs, "inner", "outer") {
				pyChain += s.value
			}
		}
	}
	t.Logf("Go: %v waited on the channel in main.waitInner <- main.waitOuter <- main.main; Python: %v of %v in inner <- outer",
		time.Duration(goChain), time.Duration(pyChain), time.Duration(pyTotal))
	if time.Duration(goChain) < blocked/2 {
		t.Errorf("Go: %v in the channel wait chain, want at least half of %v", time.Duration(goChain), window)
	}
	if pyTotal == 0 || float64(pyChain) < 0.8*float64(pyTotal) || time.Duration(pyChain) < blocked/2 {
		t.Errorf("Python: %v of %v waited in inner <- outer, want >= 80%% and at least half of %v", time.Duration(pyChain), time.Duration(pyTotal), blocked)
	}
}
