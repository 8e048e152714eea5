package tracer

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/kallsyms"
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

// TestParkedOrderAndBounds parks traces waiting for two jobs, one of them
// parked again older than the last: the traces of a job done are handled
// in the order they were parked, the others keep theirs, and when too
// many wait or they wait too long the oldest are reported first, each
// trace once.
func TestParkedOrderAndBounds(t *testing.T) {
	tr := newTestTracer(t, newMemMaps(), 0)
	kern, err := kallsyms.Parse(strings.NewReader("ffffffff81000000 T _stext\nffffffff81100000 T _etext\n"))
	if err != nil {
		t.Fatal(err)
	}
	tr.cfg.Kernel = kern
	rec := tr.cfg.Reporter.(*recorder)
	// Trace i has one kernel frame at base+i (nothing for it to wait
	// for once retried) and is parked at start+i ms.
	const base = 0xffffffff81000000
	start := time.Now()
	park := func(i int, seq uint64) {
		tr.rec.decode(encodeTrace(uint32(100+i%3), 1, "t", []rawFrame{{addr: base + uint64(i), typ: trace.FrameKernel}}, 1))
		tr.parkedSince = start.Add(time.Duration(i) * time.Millisecond)
		tr.parkOn(&tr.rec, encodeTrace(uint32(100+i%3), 1, "t", []rawFrame{{addr: base + uint64(i), typ: trace.FrameKernel}}, 1), seq)
		tr.parkedSince = time.Time{}
	}
	reported := func() []int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		var out []int
		for _, r := range rec.traces {
			out = append(out, int(r.frames[0].Addr-base))
		}
		rec.traces = nil
		return out
	}
	parked := func() []int {
		var out []int
		for _, p := range tr.parked {
			var r record
			r.decode(p.raw)
			out = append(out, int(r.frames[0].addr-base))
		}
		return out
	}
	for i := range 10 {
		if i != 3 {
			park(i, uint64(1+i%2))
		}
	}
	park(3, 2) // parked again, older than those parked since
	tr.retryParked(1, 0)
	if got, want := reported(), []int{0, 2, 4, 6, 8}; !slices.Equal(got, want) {
		t.Errorf("job 1 done: reported %v, want %v", got, want)
	}
	if got, want := parked(), []int{1, 3, 5, 7, 9}; !slices.Equal(got, want) {
		t.Errorf("still parked %v, want %v", got, want)
	}

	// Too many: the oldest go first.
	for i := 10; i < maxParkedTraces+7; i++ {
		park(i, 3)
	}
	if got, want := reported(), []int{1, 3}; !slices.Equal(got, want) {
		t.Errorf("over the bound: reported %v, want %v", got, want)
	}
	if len(tr.parked) != maxParkedTraces || tr.stats.parkOverflows.Load() != 2 {
		t.Errorf("%d parked, %d overflows", len(tr.parked), tr.stats.parkOverflows.Load())
	}
	// Too old: reported in the order they were parked.
	tr.expireParked(start.Add(maxParkedAge+20*time.Millisecond), false)
	got := reported()
	if want := []int{5, 7, 9}; len(got) < 3 || !slices.Equal(got[:3], want) || !slices.IsSorted(got) {
		t.Errorf("aged out: reported %v, want %v then the next in order", got, want)
	}
	n := len(got)
	tr.expireParked(time.Now(), true)
	rest := reported()
	if len(tr.parked) != 0 || tr.parkedBytes != 0 || n+len(rest) != maxParkedTraces || !slices.IsSorted(rest) || rest[0] <= got[n-1] {
		t.Errorf("all reported: %d then %d, %d parked, %d bytes", n, len(rest), len(tr.parked), tr.parkedBytes)
	}
}
