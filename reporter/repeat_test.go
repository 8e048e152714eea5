package reporter

import (
	"context"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/trace"
)

// TestReportAgain: a trace reported again in the interval ReportTraceIn
// named is added to it; once that interval is exported, ReportAgain adds
// nothing and says so, and the new interval holds only what was reported
// in it.
func TestReportAgain(t *testing.T) {
	exp := &captureExporter{}
	r, err := New(Config{Interval: time.Hour, FrameCacheSize: 64, ExecutableCacheSize: 16, SamplesPerSecond: 19}, exp)
	if err != nil {
		t.Fatal(err)
	}
	id := trace.FrameID{File: trace.KernelFileID("f", ""), Addr: 1, Type: trace.FrameNative}
	r.ExecutableMetadata(id.File, trace.ExecutableInfo{FileName: "f"})
	r.FrameMetadata(id, trace.FrameInfo{Lines: []trace.Line{{Function: "f"}}})
	tr := &trace.Trace{Frames: []trace.FrameID{id}}
	meta := trace.TraceMeta{PID: 1, TID: 1, Comm: "c", ProcessName: "c"}
	iv := r.ReportTraceIn(tr, meta)
	if !r.ReportAgain(tr, meta, iv) {
		t.Fatal("not reported again in its interval")
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r.ReportAgain(tr, meta, iv) {
		t.Fatal("reported again after its interval was exported")
	}
	if st := r.Stats(); st.Traces != 2 || st.SamplesExported != 2 || st.UnnamedFrames != 0 {
		t.Errorf("stats %+v: want 2 traces, 2 exported, none unnamed", st)
	}
	// Nothing was added to the new interval: no export.
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Exports != 1 {
		t.Errorf("%d exports, want 1", st.Exports)
	}
}
