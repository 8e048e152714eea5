package tracer

import (
	"bufio"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// TestReadProcessLeaderExited: a process whose main thread called
// pthread_exit while another runs is alive; its mappings are read through
// the live thread.
func TestReadProcessLeaderExited(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "leaderexit")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O1", "-pthread", "-o", bin, "tracer/testdata/process/leaderexit.c")
	cmd := exec.Command(bin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	fs := newProcFS("/proc", slog.Default())
	pid := uint32(cmd.Process.Pid)
	// Wait for the leader to become a zombie: its own maps empty.
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		m, err := fs.readMaps(fs.path(pid, "maps"))
		if err != nil {
			t.Fatal(err)
		}
		if len(m) == 0 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the main thread did not exit")
		}
	}
	p := &process{pid: pid}
	if err := fs.readProcess(p); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(p.mappings, func(m mapping) bool { return m.path == bin }) {
		t.Fatalf("mappings %+v lack %s", p.mappings, bin)
	}
	// Read again, as a sync does: still alive, not taken for exited.
	if err := fs.readProcess(p); err != nil {
		t.Fatalf("second read: %v", err)
	}
}

// TestProcPath: procFS.path joins as filepath.Join does, on the quick
// path and off it.
func TestProcPath(t *testing.T) {
	for _, root := range []string{"/proc", "/", "", "proc", "/host/proc/", "/a//b", "/a/./proc", "/a/../proc"} {
		for _, rest := range [][]string{nil, {"maps"}, {"root"}, {"root", "/usr/lib/libc.so.6"}, {"map_files", "7f00-7f10"},
			{"root", "../../etc"}, {"."}, {".."}, {""}, {"a/b"}, {"root", "usr//lib/./x"}} {
			for _, pid := range []uint32{0, 1, 4294967295} {
				p := procFS{root: root}
				want := filepath.Join(append([]string{root, strconv.FormatUint(uint64(pid), 10)}, rest...)...)
				if got := p.path(pid, rest...); got != want {
					t.Errorf("path(%q, %d, %q) = %q, want %q", root, pid, rest, got, want)
				}
			}
		}
	}
}

func BenchmarkProcPath(b *testing.B) {
	p := procFS{root: "/proc"}
	b.ReportAllocs()
	for i := range b.N {
		_ = p.path(uint32(i), "root")
	}
}
