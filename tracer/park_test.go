package tracer

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/trace"
)

// TestEmptyProcessReadOnce handles a trace of a process whose memory is
// gone by the time it is read (a zombie: exited, not reaped): the read
// finds no mappings, and the trace is then reported with what is known,
// not parked again for another read that would find the same, over and
// over until it ages out (seen as hundreds of /proc reads a second).
func TestEmptyProcessReadOnce(t *testing.T) {
	tr := newTestTracer(t, newMemMaps(), 0)
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer cmd.Wait()
	pid := uint32(cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); ; {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && bytes.HasPrefix(stat[i:], []byte(") Z")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not a zombie after 5 s: %s", pid, stat)
		}
		time.Sleep(5 * time.Millisecond)
	}

	tr.handle(encodeTrace(pid, pid, "true", []rawFrame{{addr: 0x401000, typ: trace.FrameNative}}, 0))
	// Apply what the workers bring back for a while, as Run would.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		select {
		case r := <-tr.w.results:
			tr.apply(r, time.Now())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := tr.stats.mapsReads.Load(); n != 1 {
		t.Errorf("the zombie's maps read %d times, want once", n)
	}
	if len(tr.parked) > 0 || len(tr.inflight) > 0 {
		t.Errorf("%d traces still parked, %d syncs in flight", len(tr.parked), len(tr.inflight))
	}
	rec := tr.cfg.Reporter.(*recorder)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.traces) != 1 || len(rec.traces[0].frames) != 1 || rec.traces[0].frames[0].Addr != 0x401000 {
		t.Errorf("reported %+v, want the trace once with its frame unnamed", rec.traces)
	}
}
