package tracer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	progs "github.com/stackline-dev/stackline/support/ebpf"
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
				p := newProcFS(root, nil)
				want := filepath.Join(append([]string{root, strconv.FormatUint(uint64(pid), 10)}, rest...)...)
				if got := p.path(pid, rest...); got != want {
					t.Errorf("path(%q, %d, %q) = %q, want %q", root, pid, rest, got, want)
				}
			}
		}
	}
}

func BenchmarkProcPath(b *testing.B) {
	p := newProcFS("/proc", nil)
	b.ReportAllocs()
	for i := range b.N {
		_ = p.path(uint32(i), "root")
	}
}

// processEvent encodes an exit or exec record of pid stamped at ktime.
func processEvent(t testing.TB, kind, pid uint32, ktime uint64) []byte {
	ev := progs.StacklineProcessEvent{Hdr: progs.StacklineRecordHeader{Kind: kind, Pid: pid, Tid: pid, KtimeNs: ktime}}
	raw, err := binary.Append(nil, binary.LittleEndian, &ev)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestExitLeavesDeletesToEBPF: the eBPF side deletes a process's entry
// and interpreter at its exit and exec; the tracer deletes them again
// only when it may have written them after (a sync applied after the
// exit or exec, or just before it), not for an exit or exec well after
// its last write.
func TestExitLeavesDeletesToEBPF(t *testing.T) {
	maps := newMemMaps()
	tr := newTestTracer(t, maps, 0)
	give := func(pid uint32) *process {
		p := &process{pid: pid}
		tr.processes[pid] = p
		maps.putProcess(pid, progs.StacklineProcessInfo{NumMappings: 1})
		maps.putInterpreter(pid, &progs.StacklineInterpProc{})
		p.given()
		return p
	}
	cases := []struct {
		kind    uint32
		after   time.Duration // the record's stamp after the last write
		deleted bool
	}{
		{recordProcessExit, time.Second, false},
		{recordProcessExit, time.Millisecond, true},
		{recordProcessExit, -time.Second, true},
		{recordProcessExec, time.Second, false},
		{recordProcessExec, -time.Millisecond, true},
	}
	for i, c := range cases {
		pid := uint32(4200 + i)
		p := give(pid)
		p.interp = testInstance{}
		tr.stats.interpProcesses.Add(1)
		tr.handle(processEvent(t, c.kind, pid, uint64(int64(p.givenK)+int64(c.after))))
		_, kept := maps.processes[pid]
		_, keptInterp := maps.interps[pid]
		if kept == c.deleted || keptInterp == c.deleted {
			t.Errorf("record %d %v after the last write: entry kept %v, interpreter kept %v; want deleted %v",
				c.kind, c.after, kept, keptInterp, c.deleted)
		}
		if _, ok := tr.processes[pid]; ok {
			t.Errorf("process %d still tracked", pid)
		}
	}
}

// testInstance is an interpreter instance that names nothing.
type testInstance struct{}

func (testInstance) Unwind() interpreter.Unwind { return interpreter.Unwind{} }
func (testInstance) Frame(interpreter.Frame) (interpreter.Symbol, error) {
	return interpreter.Symbol{}, errors.New("no frames")
}
