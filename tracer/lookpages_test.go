package tracer

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// TestLookupPagesDropped runs a Go program under a tracer and checks that
// the pages of its symbol tables that naming its frames made resident in
// this process (the symbolizer maps its .gopclntab and string tables)
// leave this process's memory once Run has named the batch that needed
// them: without the drop they stay until a trim, which no tracer runs.
func TestLookupPagesDropped(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	goBin := filepath.Join(dir, "goworkload")
	testenv.Run(t, testenv.RepoRoot(t), "go", "build", "-o", goBin, "./e2e/testdata/goworkload")

	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 1 << 20, FileCacheSize: 64,
		Reporter: rec}, symbolizer.Options{CacheSize: 16})
	cmd := exec.Command(goBin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	time.Sleep(2 * time.Second)
	// Ten readings over a second: Run names a batch in well under a
	// millisecond, so a reading rarely falls inside one.
	var resident []int
	held := 0
	for range 10 {
		kb := mappedResidentKB(t, goBin)
		resident = append(resident, kb)
		if kb > 0 {
			held++
		}
		time.Sleep(100 * time.Millisecond)
	}
	tr.stop(t)

	rec.mu.Lock()
	named := 0
	for _, info := range rec.frames {
		if len(info.Lines) > 0 && info.Lines[0].Function == "main.gamma" {
			named++
		}
	}
	rec.mu.Unlock()
	t.Logf("resident kB of the symbolizer's mappings of the program, ten readings: %v", resident)
	if named == 0 {
		t.Fatal("main.gamma was never named: nothing was looked up")
	}
	if held > 2 {
		t.Errorf("pages of the program's symbol tables resident in %d of 10 readings (kB: %v), want at most 2", held, resident)
	}
}

// mappedResidentKB returns the resident kB of this process's mappings of
// path, from /proc/self/smaps.
func mappedResidentKB(t *testing.T, path string) int {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	kb, in := 0, false
	for _, line := range bytes.Split(smaps, []byte("\n")) {
		fields := bytes.Fields(line)
		switch {
		case len(fields) >= 5 && bytes.Contains(fields[0], []byte("-")) && !bytes.HasSuffix(fields[0], []byte(":")):
			// A mapping's header: range, perms, offset, dev, inode, path.
			in = len(fields) >= 6 && string(fields[5]) == path
		case in && len(fields) >= 2 && string(fields[0]) == "Rss:":
			n, err := strconv.Atoi(string(fields[1]))
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			kb += n
		}
	}
	return kb
}
