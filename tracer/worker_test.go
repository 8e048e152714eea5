package tracer

import (
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// slowBuilder is the native table builder made slow: once armed, each
// build takes delay more, and when it ran is recorded.
type slowBuilder struct {
	nativeunwind.Builder
	delay time.Duration
	armed atomic.Bool

	mu      sync.Mutex
	windows [][2]time.Time
}

func (b *slowBuilder) Build(f, debug *elffile.File, opts nativeunwind.Options) (*nativeunwind.Table, error) {
	if b.armed.Load() {
		start := time.Now()
		time.Sleep(b.delay)
		b.mu.Lock()
		b.windows = append(b.windows, [2]time.Time{start, time.Now()})
		b.mu.Unlock()
	}
	return b.Builder.Build(f, debug, opts)
}

// timedRecorder records when each trace was reported.
type timedRecorder struct {
	*recorder
	mu       sync.Mutex
	reported []time.Time
	metas    []trace.TraceMeta
}

func (r *timedRecorder) ReportTrace(t *trace.Trace, meta trace.TraceMeta) {
	r.recorder.ReportTrace(t, meta)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reported = append(r.reported, time.Now())
	r.metas = append(r.metas, meta)
}

// TestSlowTableBuildLosesNoTrace: while an unwind table takes 1.5 s to
// build, the ring buffer (256 KiB: under a second of traces at 499 Hz on
// two busy CPUs, so a reader stalled for the build would lose some) keeps
// being read, no trace is lost, and the traces sampled during the build are
// reported during it, those of the process whose table is being built with
// its frames named.
func TestSlowTableBuildLosesNoTrace(t *testing.T) {
	testenv.RequireBPF(t)
	bin := filepath.Join(t.TempDir(), "churn")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O2", "-fomit-frame-pointer", "-o", bin, "tracer/testdata/churn/churn.c")
	rec := &timedRecorder{recorder: &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}}
	builder := &slowBuilder{delay: 1500 * time.Millisecond}
	tr := startTracer(t, Config{SamplesPerSecond: 499, MaxStackDepth: 128, RingBufferSize: 256 << 10, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 64 << 20, TableBuilder: builder}, symbolizer.Options{CacheSize: 64})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}
	before := tr.Stats()

	builder.armed.Store(true)
	cmd := exec.Command(bin, "3000")
	// It exits with a bit of what it computed.
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	tr.stop(t)
	st := tr.Stats()

	builder.mu.Lock()
	windows := builder.windows
	builder.mu.Unlock()
	if len(windows) == 0 {
		t.Fatal("no table was built while armed")
	}
	// The first build after arming is the workload's executable's.
	w := windows[0]
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.recorder.mu.Lock()
	defer rec.recorder.mu.Unlock()
	// Traces sampled in the first half of the build: reported before it
	// ended, named when they are the workload's.
	mid := w[0].Add(w[1].Sub(w[0]) / 2)
	sampled, reportedDuring, workload, workloadNamed := 0, 0, 0, 0
	for i, meta := range rec.metas {
		at := time.Unix(0, int64(meta.TimestampNS))
		if at.Before(w[0]) || !at.Before(mid) {
			continue
		}
		sampled++
		if rec.reported[i].Before(w[1]) {
			reportedDuring++
		}
		if meta.PID == uint32(cmd.Process.Pid) {
			workload++
			for _, f := range rec.recorder.traces[i].frames {
				if l := rec.recorder.frames[f].Lines; len(l) > 0 && l[len(l)-1].Function == "g" {
					workloadNamed++
					break
				}
			}
		}
	}
	lost := st.Counters[progs.StacklineCounterCOUNTER_LOST_TRACES] - before.Counters[progs.StacklineCounterCOUNTER_LOST_TRACES]
	t.Logf("build of %v from %v; %d traces sampled in its first half, %d reported before it ended; %d of the workload, %d with g named; %d lost; %d overflows",
		w[1].Sub(w[0]), w[0].Format(time.StampMicro), sampled, reportedDuring, workload, workloadNamed, lost, st.ParkOverflows)
	if w[1].Sub(w[0]) < time.Second {
		t.Fatalf("the build took %v", w[1].Sub(w[0]))
	}
	if lost != 0 || st.Counters[progs.StacklineCounterCOUNTER_LOST_EVENTS] != before.Counters[progs.StacklineCounterCOUNTER_LOST_EVENTS] {
		t.Errorf("%d traces lost to a full ring buffer", lost)
	}
	if st.ParkOverflows != 0 {
		t.Errorf("%d traces reported before their process was read", st.ParkOverflows)
	}
	if sampled < 100 || float64(reportedDuring) < 0.9*float64(sampled) {
		t.Errorf("%d of %d traces sampled during the build reported before it ended", reportedDuring, sampled)
	}
	if workload < 50 || float64(workloadNamed) < 0.9*float64(workload) {
		t.Errorf("g named in %d of the workload's %d traces sampled during the build of its table", workloadNamed, workload)
	}
}
