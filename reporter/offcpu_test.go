package reporter

import (
	"context"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/trace"
)

// TestOffCPUProfile: off-CPU waits go out as a second profile of the same
// resource, off_cpu/nanoseconds, one value per timestamp scaled by the
// sampling fraction, sorted by time; the CPU profile is unchanged; the
// export is self-contained.
func TestOffCPUProfile(t *testing.T) {
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.OffCPUFraction = 0.25
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	now := uint64(time.Now().UnixNano())
	stackA := []trace.FrameID{{File: fileID(1), Addr: 1, Type: trace.FrameNative}}
	stackB := []trace.FrameID{{File: fileID(1), Addr: 2, Type: trace.FrameNative}}
	report := func(frames []trace.FrameID, ts, offCPU uint64) {
		for _, f := range frames {
			resolve(r, f)
		}
		r.ReportTrace(&trace.Trace{Frames: frames}, trace.TraceMeta{TimestampNS: ts, PID: 7, TID: 8, Comm: "worker", OffCPUNS: offCPU})
	}
	report(stackA, now, 0)
	report(stackA, now+1000, 0)
	report(stackB, now+3000, 2000) // reported out of order
	report(stackB, now+2000, 1000)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := exp.reqs[0]
	if err := otlpcheck.Validate(req); err != nil {
		t.Fatal(err)
	}
	if n := len(req.ResourceProfiles); n != 1 {
		t.Fatalf("%d resources, want 1", n)
	}
	profs := req.ResourceProfiles[0].ScopeProfiles[0].Profiles
	if len(profs) != 2 {
		t.Fatalf("%d profiles, want 2", len(profs))
	}
	str := func(i int32) string { return req.Dictionary.StringTable[i] }
	cpu, off := profs[0], profs[1]
	if got := str(cpu.SampleType.TypeStrindex); got != "samples" || len(cpu.Samples) != 1 || len(cpu.Samples[0].TimestampsUnixNano) != 2 || len(cpu.Samples[0].Values) != 0 {
		t.Errorf("CPU profile: type %q, samples %v", got, cpu.Samples)
	}
	if got, unit := str(off.SampleType.TypeStrindex), str(off.SampleType.UnitStrindex); got != "off_cpu" || unit != "nanoseconds" {
		t.Errorf("off-CPU profile type %s/%s", got, unit)
	}
	if f, err := otlpcheck.Attr(req, off.AttributeIndices, semconv.OffCPUFraction); err != nil || f != "0.25" {
		t.Errorf("fraction attribute %q, %v", f, err)
	}
	if len(off.Samples) != 1 {
		t.Fatalf("%d off-CPU samples, want 1", len(off.Samples))
	}
	s := off.Samples[0]
	wantTS, wantV := []uint64{now + 2000, now + 3000}, []int64{4000, 8000}
	for i := range 2 {
		if s.TimestampsUnixNano[i] != wantTS[i] || s.Values[i] != wantV[i] {
			t.Errorf("wait %d: %d ns at %d, want %d at %d", i, s.Values[i], s.TimestampsUnixNano[i], wantV[i], wantTS[i])
		}
	}
}
