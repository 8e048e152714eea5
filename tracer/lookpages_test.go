package tracer

import (
	"os/exec"
	"path/filepath"
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
		kb := testenv.ResidentOf(t, goBin) >> 10
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
