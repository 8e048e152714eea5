package tracer

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/reporter"
	"github.com/stackline-dev/stackline/trace"
)

// keptExports keeps what a reporter exports.
type keptExports struct {
	mu   sync.Mutex
	reqs []*collectorpb.ExportProfilesServiceRequest
}

func (k *keptExports) Export(_ context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reqs = append(k.reqs, req)
	return nil
}

// TestTraceRepeats: a trace seen again in the reporter's interval is
// reported again without its frames being named again, with the same
// frames; not once the interval is exported (its frames are asked about
// again, and pinned in the new interval), nor once its process's mappings
// were read again, nor when one of its frames is outside every mapping.
// Every export names every frame of its samples.
func TestTraceRepeats(t *testing.T) {
	tr, raw := handleTraceSetup(t)
	exp := &keptExports{}
	rep, err := reporter.New(reporter.Config{Interval: time.Hour, FrameCacheSize: 16384, ExecutableCacheSize: 1024, SamplesPerSecond: 19}, exp)
	if err != nil {
		t.Fatal(err)
	}
	tr.cfg.Reporter = rep
	tr.repeats = traceRepeats{}
	handle := func(raw []byte, wantRepeat bool) {
		t.Helper()
		hits := tr.stats.repeatedTraces.Load()
		tr.handle(raw)
		if got := tr.stats.repeatedTraces.Load() > hits; got != wantRepeat {
			t.Fatalf("reported again: %v, want %v", got, wantRepeat)
		}
	}
	handle(raw, false)
	first := append([]trace.FrameID(nil), tr.out.Frames...)
	handle(raw, true)
	if len(tr.out.Frames) != len(first) {
		t.Fatalf("reported again with %d frames, first with %d", len(tr.out.Frames), len(first))
	}
	for i := range first {
		if tr.out.Frames[i] != first[i] {
			t.Fatalf("frame %d reported again as %v, first as %v", i, tr.out.Frames[i], first[i])
		}
	}
	// The interval is exported: the next sight names the frames again.
	if err := rep.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	handle(raw, false)
	handle(raw, true)
	// The process's mappings read again: named again.
	p := tr.knownProcess(uint32(os.Getpid()), 0)
	p.lastRead = p.lastRead.Add(time.Nanosecond)
	handle(raw, false)
	handle(raw, true)
	// Another trace, one of its frames outside every mapping: never
	// remembered. (Its first sight waits for a read of the process,
	// then is reported.)
	var rec record
	if err := rec.decode(raw); err != nil {
		t.Fatal(err)
	}
	frames := append([]rawFrame(nil), rec.frames...)
	frames[len(frames)-1].addr = 8 // the zero page: mapped by no process
	odd := encodeTrace(rec.pid, rec.tid, "bench", frames, rec.numKernelFrames)
	handle(odd, false)
	tr.settle()
	handle(odd, false)
	handle(odd, false)
	if err := rep.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The frame outside every mapping (one location in the second
	// export) is the only one unnamed.
	if st := rep.Stats(); st.UnnamedFrames != 1 || st.SamplesExported != 9 {
		t.Errorf("%d samples exported, %d frames unnamed; want 9 and 1", st.SamplesExported, st.UnnamedFrames)
	}
	if len(exp.reqs) != 2 {
		t.Fatalf("%d exports, want 2", len(exp.reqs))
	}
}
