package tracer

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/python"
	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// TestRuntimeNames: the runtime names the tracer gives are the semantic
// conventions' values, and Go executables are told from others.
func TestRuntimeNames(t *testing.T) {
	if got := (python.Runtime{}).Name(); got != semconv.RuntimeCPython {
		t.Errorf("the Python runtime is named %q, process.runtime.name wants %q", got, semconv.RuntimeCPython)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{self: true, "/bin/sh": false} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ef, err := elffile.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := ef.IsGo(); got != want {
			t.Errorf("%s: IsGo() = %v, want %v", path, got, want)
		}
		f.Close()
	}
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted.
func cgroup2Mount(t *testing.T) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if ok && len(fields) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			return fields[4]
		}
	}
	t.Fatal("no cgroup v2 hierarchy is mounted")
	return ""
}

// TestProcessMetaOfRealProcesses runs a tracer and, under it, a process
// whose environment names its service, one that moves itself into a
// Docker-like cgroup scope and execs (whose metadata must be read again),
// a Go program and a Python one, and checks the metadata their traces
// carry.
func TestProcessMetaOfRealProcesses(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	root := testenv.RepoRoot(t)
	cBin := filepath.Join(dir, "workload")
	testenv.Run(t, root, "gcc", "-O0", "-fno-omit-frame-pointer", "-o", cBin, "e2e/testdata/workload.c")
	goBin := filepath.Join(dir, "goworkload")
	testenv.Run(t, root, "go", "build", "-o", goBin, "./e2e/testdata/goworkload")
	const py = "/usr/bin/python3.11"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("%s: %v", py, err)
	}

	// A cgroup named as Docker's systemd driver names a container's.
	idBytes := make([]byte, 32)
	rand.Read(idBytes)
	containerID := hex.EncodeToString(idBytes)
	parent := filepath.Join(cgroup2Mount(t), "stackline-test-"+containerID[:8])
	scope := filepath.Join(parent, "docker-"+containerID+".scope")
	if err := os.MkdirAll(scope, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Once its process is gone (killed and waited for below).
		for _, d := range []string{scope, parent} {
			if err := os.Remove(d); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		}
	})

	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 256 << 20,
		Interpreters: []interpreter.Runtime{python.Runtime{}}}, symbolizer.Options{CacheSize: 64, MaxBytes: 256 << 20})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}

	named := exec.Command(cBin, "chain")
	named.Env = append(os.Environ(), "OTEL_SERVICE_NAME=stackline-named")
	contained := exec.Command("/bin/sh", "-c", `echo $$ > "$1/cgroup.procs" && exec "$2" chain`, "sh", scope, cBin)
	contained.Env = append(os.Environ(), "OTEL_RESOURCE_ATTRIBUTES=team=x,service.name=stackline%2Dcontained")
	goProc := exec.Command(goBin)
	pyProc := exec.Command(py, "-c", "x = 0\nwhile True:\n    x = (x * 31 + 7) % 1000003\n")
	cmds := []*exec.Cmd{named, contained, goProc, pyProc}
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(4 * time.Second)
	for _, cmd := range cmds {
		cmd.Process.Kill()
		cmd.Wait()
	}
	time.Sleep(200 * time.Millisecond)
	tr.stop(t)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, c := range []struct {
		name string
		cmd  *exec.Cmd
		exe  string
		want trace.ProcessMeta
		// share of the traces that must carry want: the runtime is
		// known from the process's first sync on, which its first
		// samples may precede.
		share float64
	}{
		{"OTEL_SERVICE_NAME", named, cBin, trace.ProcessMeta{ServiceName: "stackline-named"}, 1},
		{"container (moved into before exec)", contained, cBin, trace.ProcessMeta{ContainerID: containerID, ServiceName: "stackline-contained"}, 1},
		{"Go", goProc, goBin, trace.ProcessMeta{RuntimeName: "go"}, 0.9},
		{"Python", pyProc, py, trace.ProcessMeta{RuntimeName: "cpython"}, 0.9},
	} {
		n, ok := 0, 0
		var other *trace.ProcessMeta
		for _, r := range rec.traces {
			if r.meta.PID != uint32(c.cmd.Process.Pid) || r.meta.ExecutablePath != c.exe {
				continue
			}
			n++
			if r.meta.Process != nil && *r.meta.Process == c.want {
				ok++
			} else if other == nil {
				other = r.meta.Process
				if other == nil {
					other = &trace.ProcessMeta{}
				}
			}
		}
		t.Logf("%s: %d of %d traces carry %+v", c.name, ok, n, c.want)
		// Four busy processes share the CPUs (two, on small CI hosts).
		if n < 50 {
			t.Errorf("%s: only %d traces", c.name, n)
		} else if float64(ok) < c.share*float64(n) {
			t.Errorf("%s: %d of %d traces carry %+v, want %.0f%%; one carries %+v", c.name, ok, n, c.want, 100*c.share, *other)
		}
	}
}

// TestReadProcessMeta reads a process from a fixture proc tree: its
// metadata is read with its mappings once, kept on rereads, replaced (never
// changed) when its runtime is learnt, and left out, with the process read
// all the same, when its cgroup and environment are gone (it exited
// meanwhile).
func TestReadProcessMeta(t *testing.T) {
	root := t.TempDir()
	const id = "3f4c2b1d9e8a7f6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e"
	write := func(pid, name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range []string{"10", "11"} {
		write(pid, "maps", "55d0c0a00000-55d0c0a20000 r-xp 00002000 08:01 1234 /usr/bin/app\n")
		write(pid, "comm", "app\n")
		if err := os.Symlink("/usr/bin/app", filepath.Join(root, pid, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	write("10", "cgroup", "0::/system.slice/docker-"+id+".scope\n")
	write("10", "environ", "PATH=/bin\x00OTEL_SERVICE_NAME=checkout\x00")

	fs := newProcFS(root, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p := &process{pid: 10}
	if err := fs.readProcess(p); err != nil {
		t.Fatal(err)
	}
	want := trace.ProcessMeta{ContainerID: id, ServiceName: "checkout"}
	if p.meta == nil || *p.meta != want || p.executablePath != "/usr/bin/app" {
		t.Fatalf("meta %+v, executable %q; want %+v", p.meta, p.executablePath, want)
	}
	first := p.meta
	// A reread of the mappings does not read the metadata again.
	write("10", "environ", "OTEL_SERVICE_NAME=changed\x00")
	if err := fs.readProcess(p); err != nil || p.meta != first {
		t.Fatalf("reread: meta %+v (was %+v), %v", p.meta, first, err)
	}
	p.setRuntime(semconv.RuntimeGo)
	if p.meta == first || *first != want || p.meta.RuntimeName != "go" || p.meta.ServiceName != "checkout" {
		t.Fatalf("runtime set: meta %+v, the first %+v", p.meta, first)
	}
	second := p.meta
	if p.setRuntime(semconv.RuntimeGo); p.meta != second {
		t.Fatal("the same runtime again made a new meta")
	}

	// Process 11 has no cgroup and environ left: read without them.
	p = &process{pid: 11}
	if err := fs.readProcess(p); err != nil {
		t.Fatal(err)
	}
	if len(p.mappings) != 1 || p.meta == nil || *p.meta != (trace.ProcessMeta{}) {
		t.Fatalf("mappings %v, meta %+v", p.mappings, p.meta)
	}
}
