// Package e2e runs the built agent as root against real workloads and
// checks what reaches an OTLP receiver and the local output.
package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
)

// workloads builds and starts the C and Go workloads; they are killed when
// the test ends.
type workloads struct {
	chainC, syscallC, goChain, python *exec.Cmd
	// pythonScript is the Python workload's source file.
	pythonScript string
}

// pythonWorkload runs inner, called by middle, called by outer.
const pythonWorkload = `def inner(n):
    s = 0
    for i in range(n):
        s += i * i
    return s

def middle():
    return inner(20000)

def outer():
    while True:
        middle()

outer()
`

// pythonService is the service name the Python workload's environment
// sets.
const pythonService = "e2e-python-workload"

func startWorkloads(t *testing.T, dir string) *workloads {
	root := testenv.RepoRoot(t)
	cBin := filepath.Join(dir, "workload")
	testenv.Run(t, root, "gcc", "-O0", "-fno-omit-frame-pointer", "-fno-inline", "-g", "-o", cBin, "e2e/testdata/workload.c")
	goBin := filepath.Join(dir, "goworkload")
	testenv.Run(t, root, "go", "build", "-o", goBin, "./e2e/testdata/goworkload")
	start := func(env []string, name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		if env != nil {
			cmd.Env = append(os.Environ(), env...)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	script := filepath.Join(dir, "workload.py")
	if err := os.WriteFile(script, []byte(pythonWorkload), 0o644); err != nil {
		t.Fatal(err)
	}
	return &workloads{
		chainC:   start(nil, cBin, "chain"),
		syscallC: start(nil, cBin, "syscall"),
		goChain:  start(nil, goBin),
		// The Python workload names its service as an OpenTelemetry
		// SDK in it would read it.
		python:       start([]string{"OTEL_SERVICE_NAME=" + pythonService}, testenv.SystemPython(t).Path, script),
		pythonScript: script,
	}
}

// runAgent runs the agent with args for d, then stops it with SIGTERM.
func runAgent(t *testing.T, bin string, d time.Duration, args ...string) {
	runAgentWith(t, bin, agentRun{d: d, args: args})
}

// agentRun describes one run of the agent for runAgentWith.
type agentRun struct {
	// d is how long the agent runs before SIGTERM.
	d    time.Duration
	args []string
	// env is added to the test's environment, from which the variables
	// that configure the agent (STACKLINE_*, OTEL_*) are left out.
	env []string
	// dir is the agent's working directory; empty means the test's.
	dir string
	// afterStart, when set, is called once the agent has started, before
	// the wait of d; beforeStop, when set, just before SIGTERM.
	afterStart, beforeStop func()
}

// runAgentWith runs the agent as r describes, then stops it with SIGTERM
// and returns its output.
func runAgentWith(t *testing.T, bin string, r agentRun) string {
	var stderr bytes.Buffer
	cmd := exec.Command(bin, r.args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STACKLINE_") && !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, r.env...)
	cmd.Dir = r.dir
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if r.afterStart != nil {
		r.afterStart()
	}
	time.Sleep(r.d)
	if r.beforeStop != nil {
		r.beforeStop()
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("agent did not stop within 30s of SIGTERM\n%s", stderr.String())
	}
	t.Logf("agent output:\n%s", stderr.String())
	return stderr.String()
}

// countSamples returns how many samples of pid there are in reqs and how
// many of them have frames that match.
func countSamples(reqs []*collectorpb.ExportProfilesServiceRequest, pid int, match func([]otlpcheck.Frame) bool) (total, matched int) {
	for _, req := range reqs {
		for _, rp := range req.ResourceProfiles {
			if otlpcheck.ResourceAttr(rp, "process.pid") != itoa(pid) {
				continue
			}
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					for _, s := range p.Samples {
						n := int(otlpcheck.SampleCount(s))
						total += n
						if frames, err := otlpcheck.Frames(req, s); err == nil && match(frames) {
							matched += n
						}
					}
				}
			}
		}
	}
	return total, matched
}

// chainShare returns how many samples of pid there are and the share of them
// whose user frames, leaf first, start with chain.
func chainShare(reqs []*collectorpb.ExportProfilesServiceRequest, pid int, chain []string) (int, float64) {
	total, full := countSamples(reqs, pid, func(frames []otlpcheck.Frame) bool {
		var user []string
		for _, f := range frames {
			if f.Type != "kernel" {
				user = append(user, f.Name)
			}
		}
		return len(user) >= len(chain) && slices.Equal(user[:len(chain)], chain)
	})
	if total == 0 {
		return 0, 0
	}
	return total, float64(full) / float64(total)
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestEndToEndOTLP(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	w := startWorkloads(t, dir)
	rcv, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Stop()
	addr := rcv.Addr()

	runAgent(t, bin, 10*time.Second,
		"--collection-agent", addr, "--disable-tls",
		"--samples-per-second", "49", "--reporter-interval", "2s")

	reqs := rcv.Requests()
	encs := rcv.Compression()
	wire := 0
	for _, n := range rcv.WireBytes() {
		wire += n
	}
	if len(reqs) < 3 {
		t.Fatalf("received %d requests in 10s at a 2s interval", len(reqs))
	}
	for i, req := range reqs {
		if err := otlpcheck.Validate(req); err != nil {
			t.Errorf("request %d is not self-contained: %v", i, err)
		}
		if i >= len(encs) || encs[i] != "gzip" {
			t.Errorf("request %d: not gzip-compressed (%q)", i, encs)
		}
	}

	samples := 0
	for _, req := range reqs {
		for _, rp := range req.ResourceProfiles {
			for _, s := range rp.ScopeProfiles[0].Profiles[0].Samples {
				samples += int(otlpcheck.SampleCount(s))
			}
		}
	}
	t.Logf("%d requests, %d samples, %d bytes on the wire (%.1f per sample)", len(reqs), samples, wire, float64(wire)/float64(samples))

	checkNativeChains(t, reqs, w)

	// The Python workload's Python frames reach the backend named, typed
	// cpython, on their source file's mapping.
	pyTotal, pyFull := countSamples(reqs, w.python.Process.Pid, func(frames []otlpcheck.Frame) bool {
		var chain []string
		for _, f := range frames {
			if f.Type == "cpython" {
				if f.MappingFile != w.pythonScript {
					return false
				}
				chain = append(chain, f.Name)
			}
		}
		return slices.Equal(chain, []string{"inner", "middle", "outer", "<module>"})
	})
	t.Logf("Python workload: %d samples, %d (%.1f%%) with inner <- middle <- outer <- <module>", pyTotal, pyFull, 100*float64(pyFull)/float64(max(pyTotal, 1)))
	if pyTotal < 100 || float64(pyFull) < 0.90*float64(pyTotal) {
		t.Errorf("Python workload: %d of %d samples with the Python chain, want >= 90%% of at least 100", pyFull, pyTotal)
	}

	checkResources(t, reqs, w)

	// Native frames of the workloads are named: every file they map has
	// symbols (their own binaries, libc with libc6-dbg, the vdso aside).
	native, nativeNamed := 0, 0
	unnamed := map[string]int{}
	for _, req := range reqs {
		for _, rp := range req.ResourceProfiles {
			pid := otlpcheck.ResourceAttr(rp, "process.pid")
			if pid != itoa(w.chainC.Process.Pid) && pid != itoa(w.syscallC.Process.Pid) && pid != itoa(w.goChain.Process.Pid) {
				continue
			}
			for _, s := range rp.ScopeProfiles[0].Profiles[0].Samples {
				frames, _ := otlpcheck.Frames(req, s)
				n := int(otlpcheck.SampleCount(s))
				for _, f := range frames {
					if f.Type != "native" && f.Type != "go" {
						continue
					}
					native += n
					if f.Name != "" {
						nativeNamed += n
					} else {
						unnamed[f.MappingFile] += n
					}
				}
			}
		}
	}
	t.Logf("native frames of the workloads: %d, named: %d (%.2f%%); unnamed by file: %v",
		native, nativeNamed, 100*float64(nativeNamed)/float64(max(native, 1)), unnamed)
	if float64(nativeNamed) < 0.99*float64(native) {
		t.Errorf("%d of %d native frames named, want >= 99%%", nativeNamed, native)
	}

	// Kernel frames are named: the syscall workload spends its time there.
	kernel, named, untyped := 0, 0, 0
	for _, req := range reqs {
		for _, rp := range req.ResourceProfiles {
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					for _, s := range p.Samples {
						frames, _ := otlpcheck.Frames(req, s)
						for _, f := range frames {
							if f.Type == "" {
								untyped++
							}
							if f.Type == "kernel" {
								kernel++
								if f.Name != "" && f.Name != "[unknown]" {
									named++
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("kernel frames: %d, named: %d", kernel, named)
	if untyped > 0 {
		t.Errorf("%d frames lack profile.frame.type", untyped)
	}
	if kernel < 100 {
		t.Errorf("only %d kernel frames exported", kernel)
	} else if float64(named) < 0.99*float64(kernel) {
		t.Errorf("%d of %d kernel frames named, want >= 99%%", named, kernel)
	}
}

// checkResources checks the resource attributes: the host's on every
// resource, the workloads' runtimes on (nearly) all their samples' (a
// process's runtime is known from its first sync on), and the Python
// workload's own service name on all of its.
func checkResources(t *testing.T, reqs []*collectorpb.ExportProfilesServiceRequest, w *workloads) {
	t.Helper()
	type tally struct{ n, runtime, service int }
	byPID := map[string]*tally{itoa(w.goChain.Process.Pid): {}, itoa(w.python.Process.Pid): {}, itoa(w.chainC.Process.Pid): {}}
	wantRuntime := map[string]string{itoa(w.goChain.Process.Pid): "go", itoa(w.python.Process.Pid): "cpython", itoa(w.chainC.Process.Pid): ""}
	wantArch := semconv.HostArchOf(runtime.GOARCH)
	badHost := 0
	for _, req := range reqs {
		for _, rp := range req.ResourceProfiles {
			attrs := otlpcheck.ResourceAttrs(rp)
			if attrs[semconv.HostArch] != wantArch || attrs[semconv.OSType] != "linux" {
				if badHost == 0 {
					t.Errorf("resource %v: want host.arch %q and os.type linux", attrs, wantArch)
				}
				badHost++
			}
			pid := attrs[semconv.PID]
			c := byPID[pid]
			if c == nil {
				continue
			}
			n := 0
			for _, s := range rp.ScopeProfiles[0].Profiles[0].Samples {
				n += int(otlpcheck.SampleCount(s))
			}
			c.n += n
			if attrs[semconv.RuntimeName] == wantRuntime[pid] {
				c.runtime += n
			}
			if pid == itoa(w.python.Process.Pid) && attrs[semconv.ServiceName] == pythonService ||
				pid != itoa(w.python.Process.Pid) && strings.HasPrefix(attrs[semconv.ServiceName], "unknown_service:") {
				c.service += n
			}
		}
	}
	if badHost > 0 {
		t.Errorf("%d resources without host.arch %q and os.type linux", badHost, wantArch)
	}
	for pid, c := range byPID {
		t.Logf("pid %s: %d samples, %d with process.runtime.name %q, %d with its service.name", pid, c.n, c.runtime, wantRuntime[pid], c.service)
		if c.n == 0 || float64(c.runtime) < 0.9*float64(c.n) {
			t.Errorf("pid %s: %d of %d samples with process.runtime.name %q, want >= 90%%", pid, c.runtime, c.n, wantRuntime[pid])
		}
		if c.service != c.n {
			t.Errorf("pid %s: %d of %d samples with the service.name expected", pid, c.service, c.n)
		}
	}
}

func TestEndToEndLocalPprof(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	startWorkloads(t, dir)
	out := filepath.Join(dir, "profiles")

	runAgent(t, bin, 5*time.Second, "--output-dir", out, "--samples-per-second", "49", "--reporter-interval", "2s")

	pprofs, _ := filepath.Glob(filepath.Join(out, "*.pb.gz"))
	folded, _ := filepath.Glob(filepath.Join(out, "*.folded"))
	if len(pprofs) == 0 || len(folded) == 0 {
		t.Fatalf("local output: %d pprof and %d folded files in %s", len(pprofs), len(folded), out)
	}
	// Every function of both chains shows in `go tool pprof -top` over all
	// files (a single interval may miss the Go workload's start-up).
	args := append([]string{"tool", "pprof", "-top", "-nodecount=1000"}, pprofs...)
	cmd := exec.Command("go", args...)
	top, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof: %v\n%s", err, top)
	}
	for _, fn := range []string{"fp_gamma", "fp_beta", "fp_alpha", "main.gamma", "main.beta", "main.alpha"} {
		if !bytes.Contains(top, []byte(fn)) {
			t.Errorf("go tool pprof -top does not list %s:\n%s", fn, top)
		}
	}
	var foldedText []byte
	for _, f := range folded {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		foldedText = append(foldedText, b...)
	}
	if !bytes.Contains(foldedText, []byte("main;fp_alpha;fp_beta;fp_gamma")) {
		t.Errorf("folded stacks lack main;fp_alpha;fp_beta;fp_gamma")
	}
}

// checkNativeChains checks that at least 100 samples of each of the C and Go
// workloads arrived in reqs (10 s at 49 Hz) and that 90% of them carry the
// workload's whole call chain, named.
func checkNativeChains(t *testing.T, reqs []*collectorpb.ExportProfilesServiceRequest, w *workloads) {
	t.Helper()
	for _, c := range []struct {
		name  string
		pid   int
		chain []string
	}{
		{"C with frame pointers", w.chainC.Process.Pid, []string{"fp_gamma", "fp_beta", "fp_alpha", "main"}},
		{"Go", w.goChain.Process.Pid, []string{"main.gamma", "main.beta", "main.alpha", "main.main"}},
	} {
		n, share := chainShare(reqs, c.pid, c.chain)
		t.Logf("%s workload: %d samples, %.1f%% with the full chain %v", c.name, n, 100*share, c.chain)
		if n < 100 {
			t.Errorf("%s workload: only %d samples in 10s at 49 Hz", c.name, n)
		}
		if share < 0.90 {
			t.Errorf("%s workload: %.1f%% of samples carry the full chain, want >= 90%%", c.name, 100*share)
		}
	}
}
