package localfile

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/reporter"
	"github.com/stackline-dev/stackline/trace"
)

type capture struct {
	reqs []*collectorpb.ExportProfilesServiceRequest
}

func (c *capture) Export(_ context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	c.reqs = append(c.reqs, req)
	return nil
}

// offCPURequest builds, with the reporter, a request of one thread that
// runs main -> work (CPU samples every 10 ms) and waits in main -> wait ->
// read (off-CPU, sampled at a fraction of 0.5), and of a second thread.
func offCPURequest(t *testing.T) (req *collectorpb.ExportProfilesServiceRequest, t0 int64) {
	t.Helper()
	c := &capture{}
	r, err := reporter.New(reporter.Config{Interval: time.Hour, FrameCacheSize: 64, ExecutableCacheSize: 64,
		SamplesPerSecond: 100, OffCPUFraction: 0.5}, c)
	if err != nil {
		t.Fatal(err)
	}
	file := trace.KernelFileID("app", "")
	frame := func(addr uint64, name string) trace.FrameID {
		id := trace.FrameID{File: file, Addr: addr, Type: trace.FrameNative}
		if !r.FrameKnown(id) {
			r.FrameMetadata(id, trace.FrameInfo{Lines: []trace.Line{{Function: name}}})
		}
		if !r.ExecutableKnown(file) {
			r.ExecutableMetadata(file, trace.ExecutableInfo{FileName: "app"})
		}
		return id
	}
	t0 = time.Now().UnixNano()
	ms := int64(time.Millisecond)
	report := func(tid uint32, at, wait int64, frames ...trace.FrameID) {
		r.ReportTrace(&trace.Trace{Frames: frames}, trace.TraceMeta{TimestampNS: uint64(t0 + at), PID: 10, TID: tid, Comm: "app", ExecutablePath: "/usr/bin/app", ProcessName: "app", OffCPUNS: uint64(wait)})
	}
	mainF, work, wait, read := frame(0x100, "main"), frame(0x200, "work"), frame(0x300, "wait"), frame(0x400, "read")
	report(10, 0, 0, work, mainF)
	report(10, 10*ms, 0, work, mainF)
	report(10, 35*ms, 20*ms, read, wait, mainF) // waited 15..35 ms: cuts the 10 ms sample's slice to 5 ms
	report(10, 36*ms, 0, work, mainF)
	report(10, 60*ms, 3*ms+7, read, wait, mainF)
	report(11, 5*ms, 0, work, mainF)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c.reqs[0], t0
}

func TestOffCPUFiles(t *testing.T) {
	req, t0 := offCPURequest(t)
	dir := t.TempDir()
	w, err := New(dir, nil, TraceEvents())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	base := filepath.Join(dir, strings.TrimSuffix(names[0], filepath.Ext(names[0])))
	base = base[:strings.Index(base, "Z")+1]
	for _, suffix := range []string{".pb.gz", ".folded", ".offcpu.pb.gz", ".offcpu.folded", ".trace.json"} {
		if _, err := os.Stat(base + suffix); err != nil {
			t.Errorf("%s: %v (files: %q)", suffix, err, names)
		}
	}

	// The off-CPU pprof: nanoseconds waited, scaled by 1/0.5.
	f, err := os.Open(base + ".offcpu.pb.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.SampleType) != 1 || p.SampleType[0].Type != "off_cpu" || p.SampleType[0].Unit != "nanoseconds" {
		t.Errorf("off-CPU sample types %v", p.SampleType)
	}
	var total int64
	for _, s := range p.Sample {
		total += s.Value[0]
	}
	if want := 2 * (int64(23*time.Millisecond) + 7); total != want {
		t.Errorf("off-CPU total %d ns, want %d", total, want)
	}
	folded, _ := os.ReadFile(base + ".offcpu.folded")
	if want := "app;main;wait;read " + strconv.FormatInt(2*(int64(23*time.Millisecond)+7), 10) + "\n"; string(folded) != want {
		t.Errorf("off-CPU folded %q, want %q", folded, want)
	}
	cpuFolded, _ := os.ReadFile(base + ".folded")
	if !bytes.Contains(cpuFolded, []byte("app;main;work 4\n")) || bytes.Contains(cpuFolded, []byte("wait")) {
		t.Errorf("CPU folded %q", cpuFolded)
	}

	// The trace events: valid, and the slices where the samples say.
	data, err := os.ReadFile(base + ".trace.json")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := ValidateTraceEvents(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	ms := int64(time.Millisecond)
	want := []TraceSlice{
		{PID: 10, TID: 10, Name: "work", Category: "cpu", StartUnixNano: t0, DurationNano: 10 * ms, Stack: "main;work"},
		{PID: 10, TID: 10, Name: "work", Category: "cpu", StartUnixNano: t0 + 10*ms, DurationNano: 5 * ms, Stack: "main;work"},
		{PID: 10, TID: 10, Name: "read", Category: "off-cpu", StartUnixNano: t0 + 15*ms, DurationNano: 20 * ms, Stack: "main;wait;read", WaitNano: 20 * ms},
		{PID: 10, TID: 10, Name: "work", Category: "cpu", StartUnixNano: t0 + 36*ms, DurationNano: 10 * ms, Stack: "main;work"},
		{PID: 10, TID: 10, Name: "read", Category: "off-cpu", StartUnixNano: t0 + 57*ms - 7, DurationNano: 3*ms + 7, Stack: "main;wait;read", WaitNano: 3*ms + 7},
		{PID: 10, TID: 11, Name: "work", Category: "cpu", StartUnixNano: t0 + 5*ms, DurationNano: 10 * ms, Stack: "main;work"},
	}
	if len(sl) != len(want) {
		t.Fatalf("%d slices, want %d:\n%+v", len(sl), len(want), sl)
	}
	for i := range want {
		if sl[i] != want[i] {
			t.Errorf("slice %d: %+v, want %+v", i, sl[i], want[i])
		}
	}
}
