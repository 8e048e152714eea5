package hotspot

import (
	"bufio"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
)

// -update regenerates testdata from live JVMs of each JDK the host has
// (TestDumpFixtures): go test ./interpreter/hotspot/ -run TestDumpFixtures -update
var update = flag.Bool("update", false, "regenerate testdata from live JVMs")

// chainJVM is testdata/java/Chain.java running on one JDK, warmed up so
// that C2 has compiled its chain.
type chainJVM struct {
	jdk   testenv.JDK
	pid   int
	stdin io.WriteCloser
	cmd   *exec.Cmd
}

// compileChain compiles testdata/java/Chain.java into a temporary
// directory and returns it.
func compileChain(t *testing.T) string {
	t.Helper()
	javac, _ := testenv.JavaTools(t)
	dir := t.TempDir()
	src, err := filepath.Abs(filepath.Join("testdata", "java", "Chain.java"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, dir, javac, "--release", "17", "-d", dir, src)
	return dir
}

// startChain runs Chain on jdk, warms it for warm, and stops it when the
// test ends.
func startChain(t *testing.T, jdk testenv.JDK, classes string, warm time.Duration, jvmArgs ...string) *chainJVM {
	t.Helper()
	args := append(append([]string{}, jvmArgs...), "-cp", classes, "Chain", strconv.FormatInt(warm.Milliseconds(), 10))
	cmd := jdk.Command(args...)
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
	j := &chainJVM{jdk: jdk, pid: cmd.Process.Pid, stdin: stdin, cmd: cmd}
	t.Cleanup(func() {
		stdin.Write([]byte("x\n"))
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	// The VM may print lines of its own (CompileCommand) first.
	out := bufio.NewReader(stdout)
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: Chain did not print ready: %v", jdk.Name, err)
		}
		if strings.TrimSpace(line) == "ready" {
			break
		}
	}
	go io.Copy(io.Discard, out)
	return j
}

// libjvmSymbols returns the addresses of libjvm's dynamic symbols in the
// process pid.
func libjvmSymbols(t *testing.T, pid int, libjvm string) map[string]uint64 {
	t.Helper()
	real, err := filepath.EvalSymlinks(libjvm)
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var start uint64
	found := false
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != real || f[2] != "00000000" {
			continue
		}
		lo, _, _ := strings.Cut(f[0], "-")
		start, err = strconv.ParseUint(lo, 16, 64)
		found = err == nil
		break
	}
	if !found {
		t.Fatalf("pid %d does not map %s", pid, real)
	}
	ef, err := elf.Open(real)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	var firstVaddr uint64
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			firstVaddr = p.Vaddr
			break
		}
	}
	syms, err := ef.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, s := range syms {
		if s.Value != 0 {
			out[s.Name] = start - firstVaddr + s.Value
		}
	}
	return out
}

// TestDumpFixtures regenerates testdata from live JVMs, with -update.
func TestDumpFixtures(t *testing.T) {
	if !*update {
		t.Skip("regenerates testdata with -update")
	}
	classes := compileChain(t)
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.Name, func(t *testing.T) {
			j := startChain(t, jdk, classes, time.Second, "-XX:CompileCommand=quiet", "-XX:CompileCommand=dontinline,Leaf::work")
			syms := libjvmSymbols(t, j.pid, jdk.LibJVM())
			rec := &recordingMemory{mem: interpreter.ProcessMemory(j.pid)}
			lookup := func(name string) (uint64, bool) { a, ok := syms[name]; return a, ok }
			l, err := ReadLayout(rec, lookup)
			if err != nil {
				t.Fatal(err)
			}
			snap := memSnapshot{JDK: jdk.Name, Symbols: map[string]uint64{}, Regions: rec.regions()}
			for _, name := range Symbols() {
				snap.Symbols[name] = syms[name]
			}
			if err := writeGzipJSON(filepath.Join("testdata", "vmstructs-"+jdk.Name+".json.gz"), &snap); err != nil {
				t.Fatal(err)
			}
			f, ty, c := l.Counts()
			t.Logf("%s: version %d, %d fields, %d types, %d constants", jdk.Name, l.Version(), f, ty, c)
			dumpCode(t, j, l)
		})
	}
}
