package tracer

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// slowBuilds makes the native table builders of a tracer's build workers
// slow: once armed, each build of a file of at least minSize bytes takes
// delay more, and when it ran is recorded.
type slowBuilds struct {
	delay   time.Duration
	minSize int64
	armed   atomic.Bool

	mu      sync.Mutex
	started int
	windows [][2]time.Time
}

// newBuilder returns a builder of a build worker of its own.
func (s *slowBuilds) newBuilder() TableBuilder { return &slowBuilder{slow: s} }

// begun returns the number of slowed builds begun so far.
func (s *slowBuilds) begun() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// builds returns the time windows of the slowed builds done so far.
func (s *slowBuilds) builds() [][2]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.windows)
}

type slowBuilder struct {
	nativeunwind.Builder
	slow *slowBuilds
}

func (b *slowBuilder) Build(f, debug *elffile.File, opts nativeunwind.Options) (*nativeunwind.Table, error) {
	s := b.slow
	if s.armed.Load() && fileSize(f) >= s.minSize {
		start := time.Now()
		s.mu.Lock()
		s.started++
		s.mu.Unlock()
		time.Sleep(s.delay)
		s.mu.Lock()
		s.windows = append(s.windows, [2]time.Time{start, time.Now()})
		s.mu.Unlock()
	}
	return b.Builder.Build(f, debug, opts)
}

// fileSize returns the size of f's file, or 0.
func fileSize(f *elffile.File) int64 {
	fh := f.OSFile()
	if fh == nil {
		return 0
	}
	st, err := fh.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
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

func (r *timedRecorder) ReportTraceIn(t *trace.Trace, meta trace.TraceMeta) uint64 {
	r.ReportTrace(t, meta)
	return 1
}

func (r *timedRecorder) ReportAgain(t *trace.Trace, meta trace.TraceMeta, interval uint64) bool {
	if interval != 1 {
		return false
	}
	r.ReportTrace(t, meta)
	return true
}

// TestSlowTableBuildLosesNoTrace: while an unwind table takes 3 s to
// build, the ring buffer (256 KiB: under a second of traces at 499 Hz on
// two busy CPUs, so a reader stalled for the build would lose some) keeps
// being read, no trace is lost, and the traces sampled in the build's first
// half are reported before it ends, those of the process whose table is
// being built with its frames named. (The half left is longer than
// readInterval, the longest a trace that wakes nobody waits to be read.)
func TestSlowTableBuildLosesNoTrace(t *testing.T) {
	testenv.RequireBPF(t)
	bin := filepath.Join(t.TempDir(), "churn")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O2", "-fomit-frame-pointer", "-o", bin, "tracer/testdata/churn/churn.c")
	rec := &timedRecorder{recorder: &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}}
	builder := &slowBuilds{delay: 3 * time.Second}
	tr := startTracer(t, Config{SamplesPerSecond: 499, MaxStackDepth: 128, RingBufferSize: 256 << 10, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 64 << 20, NewTableBuilder: builder.newBuilder}, symbolizer.Options{CacheSize: 64})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}
	before := tr.Stats()

	builder.armed.Store(true)
	cmd := exec.Command(bin, "3500")
	// It exits with a bit of what it computed.
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	tr.stop(t)
	st := tr.Stats()

	windows := builder.builds()
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
	if w[1].Sub(w[0]) < 2*readInterval {
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

// TestSmallTableNotBehindLarge: while the table of a large file (a process
// mapping it started just before) takes 5 s to build, a new process's own
// small executable gets its table at once: its samples unwind and are
// named down to _start (>= 90%; the rest are its first samples, before it
// is read) and at most 5% stop at "no unwind information" (its table not
// built yet), instead of all stopping there until the large build is done.
// (Tables of larger files, built when a sample first reaches them, go to
// the worker of large files: libc's is built before the test's large
// build starts.)
func TestSmallTableNotBehindLarge(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "churn")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O2", "-fomit-frame-pointer", "-o", bin, "tracer/testdata/churn/churn.c")
	// The large file: the same program with 24 MiB after its end, which
	// changes its identity and size, not how it runs.
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	large := filepath.Join(dir, "large")
	if err := os.WriteFile(large, append(exe, make([]byte, 24<<20)...), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	slow := &slowBuilds{delay: 5 * time.Second, minSize: largeFileBytes}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 256 << 20, NewTableBuilder: slow.newBuilder}, symbolizer.Options{CacheSize: 64})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}
	// libc's table is built once a sample first reaches libc, by the
	// worker of large files; a first run of the workload has it built
	// before the large build occupies that worker, as on a host where
	// libc is in use already.
	warm := exec.Command(bin, "500")
	if err := warm.Run(); err != nil && warm.ProcessState == nil {
		t.Fatal(err)
	}
	for start := time.Now(); !slices.ContainsFunc(tr.Tables(), func(ti TableInfo) bool {
		return ti.File == "libc.so.6" && ti.Rows > 0
	}); time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("libc's table was not built within 10 s of a workload running in it")
		}
	}
	slow.armed.Store(true)
	blocker := exec.Command(large, "8000")
	if err := blocker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		blocker.Process.Kill()
		blocker.Wait()
	})
	for start := time.Now(); slow.begun() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the large file's table was not built within 10 s")
		}
	}
	workStart := time.Now()
	work := exec.Command(bin, "3000")
	if err := work.Run(); err != nil && work.ProcessState == nil {
		t.Fatal(err)
	}
	workEnd := time.Now()
	time.Sleep(200 * time.Millisecond)
	tr.stop(t)
	builds := slow.builds()
	if len(builds) == 0 {
		t.Fatal("the large build did not end")
	}
	if b := builds[0]; workStart.Before(b[0]) || workEnd.After(b[1]) {
		t.Fatalf("the workload ran from %v to %v, not within the large build (%v to %v)",
			workStart.Format(time.StampMicro), workEnd.Format(time.StampMicro), b[0].Format(time.StampMicro), b[1].Format(time.StampMicro))
	}
	traces := rec.userTraces(func(m trace.TraceMeta) bool { return m.PID == uint32(work.Process.Pid) })
	if len(traces) < 50 {
		t.Fatalf("only %d traces of the workload", len(traces))
	}
	full, waited := 0, 0
	var bad []string
	for _, frames := range traces {
		if namedChain(frames, "g", "f", "main") && complete(frames) && frames[len(frames)-1].name == "_start" {
			full++
		} else if len(bad) < 5 {
			bad = append(bad, describe(frames))
		}
		if slices.ContainsFunc(frames, func(f userFrame) bool { return f.err == trace.ErrorNoCFI }) {
			waited++
		}
	}
	t.Logf("%d traces of the workload, %d (%.1f%%) g <- f <- main named down to _start, %d stopped at a table not built yet",
		len(traces), full, 100*float64(full)/float64(len(traces)), waited)
	// The samples before the process is first read stop at "process not
	// loaded yet" whatever is being built (more of them on a loaded
	// host); those that stop at its table not built yet are the ones a
	// large build in the way would cost.
	if float64(waited) > 0.05*float64(len(traces)) {
		t.Errorf("%d of %d traces stopped at the workload's table not built yet, want at most 5%%", waited, len(traces))
	}
	checkShare(t, "named down to _start", full, len(traces), bad, 0.90)
}
