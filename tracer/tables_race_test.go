package tracer

import (
	"sync"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// TestReadWhileRunning reads the tracer's state the way the agent's HTTP
// handlers do (/metrics, /debug/unwind-tables) while Run gives the
// processes running at start to the eBPF unwinder: under the race detector
// (make test-race) it fails on state shared without synchronisation. It
// checks that the vdso's table is listed with the processes that map it.
func TestReadWhileRunning(t *testing.T) {
	testenv.RequireBPF(t)
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 99, MaxStackDepth: 128, RingBufferSize: 1 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 64 << 20}, symbolizer.Options{CacheSize: 64})

	var (
		wg        sync.WaitGroup
		vdsoProcs int
		reads     int
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(time.Millisecond) {
			for _, ti := range tr.Tables() {
				if ti.File == "[vdso]" {
					vdsoProcs = max(vdsoProcs, ti.Processes)
				}
			}
			tr.Stats()
			tr.MapMemory()
			reads++
			// The vdso table is held by the tracer itself (1) and by
			// each process synced since.
			if vdsoProcs > 1 && tr.Stats().PendingSyncs == 0 {
				return
			}
		}
	}()
	wg.Wait()
	tr.stop(t)
	t.Logf("%d reads; the vdso table was mapped by up to %d processes", reads, vdsoProcs-1)
	if tr.vdso == nil {
		t.Fatal("no unwind table for the vdso")
	}
	if vdsoProcs <= 1 {
		t.Fatalf("the vdso table was listed with %d references after the processes running at start were synced", vdsoProcs)
	}
}
