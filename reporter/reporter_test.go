package reporter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/trace"
)

// captureExporter keeps every request.
type captureExporter struct {
	mu   sync.Mutex
	reqs []*collectorpb.ExportProfilesServiceRequest
}

func (c *captureExporter) Export(_ context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, req)
	return nil
}

func testConfig() Config {
	return Config{
		Interval:            time.Hour,
		FrameCacheSize:      1,
		ExecutableCacheSize: 1,
		SamplesPerSecond:    19,
		HostName:            "testhost",
	}
}

func fileID(i int) trace.FileID {
	return trace.KernelFileID(fmt.Sprintf("file%d", i), "")
}

func frameName(id trace.FrameID) string {
	return fmt.Sprintf("fn_%s_%x", id.File.String()[:6], id.Addr)
}

// resolve does what the tracer does for each frame: ask, and resolve only
// when the reporter does not know it.
func resolve(r *Reporter, id trace.FrameID) {
	if !r.FrameKnown(id) {
		r.FrameMetadata(id, trace.FrameInfo{Lines: []trace.Line{{Function: frameName(id)}}})
	}
	if !r.ExecutableKnown(id.File) {
		r.ExecutableMetadata(id.File, trace.ExecutableInfo{FileName: "file-" + id.File.String()[:6]})
	}
}

// TestCachesOfSizeOne: with every cache of size 1 and a stream of distinct
// frames, every export still names every frame and every mapping, also when
// the interval switches between the tracer's questions and its report.
func TestCachesOfSizeOne(t *testing.T) {
	t.Run("size", func(t *testing.T) { testCachesOfSizeOne(t, testConfig()) })
	// Entries that expire as soon as they are in, and a frame cache
	// whose byte bound no frame fits: the intervals' pins alone keep
	// every promise.
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = 64, 64
	cfg.CacheTTL = time.Millisecond
	cfg.FrameCacheBytes = 1
	t.Run("ttl-bytes", func(t *testing.T) { testCachesOfSizeOne(t, cfg) })
}

func testCachesOfSizeOne(t *testing.T, cfg Config) {
	exp := &captureExporter{}
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const traces = 3000
	for i := range traces {
		tr := &trace.Trace{}
		for j := range 12 {
			id := trace.FrameID{File: fileID(j % 4), Type: trace.FrameNative}
			if j%3 == 0 {
				id.Addr = uint64(rng.IntN(50)) // shared, recurring frames
			} else {
				id.Addr = uint64(1000 + i*100 + j) // never seen before
			}
			resolve(r, id)
			if rng.IntN(200) == 0 {
				// The interval ends while the tracer is mid-trace.
				r.Flush(context.Background())
			}
			tr.Frames = append(tr.Frames, id)
		}
		r.ReportTrace(tr, trace.TraceMeta{PID: uint32(1 + i%3), TID: uint32(10 + i%5), Comm: "worker", TimestampNS: uint64(i)})
		if cfg.CacheTTL > 0 && rng.IntN(300) == 0 {
			time.Sleep(2 * cfg.CacheTTL) // what was cached expires
		}
		if rng.IntN(100) == 0 {
			r.Flush(context.Background())
		}
	}
	r.Flush(context.Background())

	total := 0
	for i, req := range exp.reqs {
		if err := otlpcheck.Validate(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		d := req.Dictionary
		for _, rp := range req.ResourceProfiles {
			for _, s := range rp.ScopeProfiles[0].Profiles[0].Samples {
				total += len(s.TimestampsUnixNano)
				for _, li := range d.StackTable[s.StackIndex].LocationIndices {
					loc := d.LocationTable[li]
					if len(loc.Lines) == 0 {
						t.Fatalf("request %d: location at %#x is unnamed", i, loc.Address)
					}
					m := d.MappingTable[loc.MappingIndex]
					if loc.MappingIndex == 0 || d.StringTable[m.FilenameStrindex] == "" || d.StringTable[m.FilenameStrindex] == unknownFrameName {
						t.Fatalf("request %d: location at %#x has no named mapping", i, loc.Address)
					}
				}
			}
		}
	}
	if total != traces {
		t.Fatalf("exported %d samples, reported %d", total, traces)
	}
	if s := r.Stats(); s.UnnamedFrames != 0 || s.SamplesExported != traces {
		t.Fatalf("stats: %+v", s)
	}
}

func TestFoldAndAttributes(t *testing.T) {
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.FrameCacheSize = 100
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	kernel := trace.FrameID{File: fileID(9), Addr: 0xffffffff81000000, Type: trace.FrameKernel}
	user := trace.FrameID{File: fileID(1), Addr: 0x1234, Type: trace.FrameNative}
	for _, id := range []trace.FrameID{kernel, user} {
		resolve(r, id)
	}
	tr := &trace.Trace{Frames: []trace.FrameID{kernel, user}}
	meta := trace.TraceMeta{PID: 42, TID: 43, Comm: "w", ExecutablePath: "/usr/bin/w", ProcessName: "w"}
	for ts := range uint64(5) {
		meta.TimestampNS = 100 + ts
		r.ReportTrace(tr, meta)
	}
	meta.TID = 44 // another thread: another sample
	r.ReportTrace(tr, meta)
	r.Flush(context.Background())

	if len(exp.reqs) != 1 {
		t.Fatalf("%d requests", len(exp.reqs))
	}
	req := exp.reqs[0]
	if err := otlpcheck.Validate(req); err != nil {
		t.Fatal(err)
	}
	rp := req.ResourceProfiles[0]
	for k, want := range map[string]string{
		"process.pid": "42", "process.executable.name": "w", "process.executable.path": "/usr/bin/w",
		"host.name": "testhost", "service.name": "unknown_service:w",
	} {
		if got := otlpcheck.ResourceAttr(rp, k); got != want {
			t.Errorf("resource %s = %q, want %q", k, got, want)
		}
	}
	p := rp.ScopeProfiles[0].Profiles[0]
	d := req.Dictionary
	if d.StringTable[p.SampleType.TypeStrindex] != "samples" || d.StringTable[p.SampleType.UnitStrindex] != "count" ||
		d.StringTable[p.PeriodType.TypeStrindex] != "cpu" || d.StringTable[p.PeriodType.UnitStrindex] != "nanoseconds" ||
		p.Period != int64(time.Second)/19 {
		t.Errorf("sample/period type: %v %v %d", p.SampleType, p.PeriodType, p.Period)
	}
	if len(p.Samples) != 2 || len(p.Samples[0].TimestampsUnixNano) != 5 || len(p.Samples[1].TimestampsUnixNano) != 1 {
		t.Fatalf("samples not folded by (stack, pid, tid, comm): %v", p.Samples)
	}
	frames, err := otlpcheck.Frames(req, p.Samples[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || frames[0].Type != "kernel" || frames[1].Type != "native" || frames[1].Name != frameName(user) {
		t.Errorf("frames: %+v", frames)
	}
	attrs := map[string]bool{}
	for _, ai := range p.Samples[0].AttributeIndices {
		attrs[d.StringTable[d.AttributeTable[ai].KeyStrindex]] = true
	}
	if !attrs["thread.name"] || !attrs["thread.id"] {
		t.Errorf("sample attributes: %v", attrs)
	}
	// The kernel mapping carries no htlhash; the native one does.
	for _, m := range d.MappingTable[1:] {
		keys := map[string]string{}
		for _, ai := range m.AttributeIndices {
			kv := d.AttributeTable[ai]
			keys[d.StringTable[kv.KeyStrindex]] = kv.Value.GetStringValue()
		}
		name := d.StringTable[m.FilenameStrindex]
		if _, ok := keys["process.executable.build_id.htlhash"]; ok != (name == "file-"+fileID(1).String()[:6]) {
			t.Errorf("mapping %s: attributes %v", name, keys)
		}
	}
}

// TestSpecInvariants: sample timestamps lie inside their profile's
// [time, time+duration) even for samples taken before the interval began
// (read late from the ring buffer); mapping ranges hold their locations'
// addresses, with addresses equal to file offsets; only files hashed from
// their contents carry an htlhash; interpreted frames carry no address.
func TestSpecInvariants(t *testing.T) {
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.FrameCacheSize = 100
	cfg.ExecutableCacheSize = 100
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	lib := trace.FrameID{File: fileID(1), Addr: 0x1234, Type: trace.FrameNative}
	lib2 := trace.FrameID{File: fileID(1), Addr: 0x9fff, Type: trace.FrameNative}
	kernel := trace.FrameID{File: fileID(2), Addr: 0xffffffff81000010, Type: trace.FrameKernel}
	anon := trace.FrameID{File: fileID(3), Addr: 0x10, Type: trace.FrameNative}
	py := trace.FrameID{File: trace.SourceFileID("cpython", "/app/x.py"), Addr: 0xdeadbeef, Type: trace.FrameCPython}
	for _, id := range []trace.FrameID{lib, lib2, kernel} {
		resolve(r, id)
	}
	r.FrameMetadata(py, trace.FrameInfo{Lines: []trace.Line{{Function: "f", File: "/app/x.py", Line: 3}}})
	r.ExecutableMetadata(py.File, trace.ExecutableInfo{FileName: "x.py"})
	r.FrameMetadata(anon, trace.FrameInfo{})
	r.ExecutableMetadata(anon.File, trace.ExecutableInfo{FileName: "[anon]", Pseudo: true})

	start := uint64(time.Now().UnixNano())
	meta := trace.TraceMeta{PID: 7, TID: 7, Comm: "x", ProcessName: "x"}
	for i, ts := range []uint64{start - uint64(66*time.Millisecond), start + uint64(time.Hour)} {
		meta.TimestampNS = ts
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{kernel, anon, []trace.FrameID{lib, lib2}[i], py}}, meta)
	}
	r.Flush(context.Background())
	if len(exp.reqs) != 1 {
		t.Fatalf("%d requests", len(exp.reqs))
	}
	req := exp.reqs[0]
	if err := otlpcheck.Validate(req); err != nil {
		t.Fatal(err) // checks timestamps and address ranges
	}
	p := req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0]
	if p.TimeUnixNano != start-uint64(66*time.Millisecond) || p.TimeUnixNano+p.DurationNano != start+uint64(time.Hour)+1 {
		t.Errorf("profile [%d, +%d) does not fit its samples tightly", p.TimeUnixNano, p.DurationNano)
	}
	d := req.Dictionary
	seen := map[string]bool{}
	for _, l := range d.LocationTable[1:] {
		m := d.MappingTable[l.MappingIndex]
		name := d.StringTable[m.FilenameStrindex]
		hasHTL := false
		for _, ai := range m.AttributeIndices {
			hasHTL = hasHTL || d.StringTable[d.AttributeTable[ai].KeyStrindex] == "process.executable.build_id.htlhash"
		}
		seen[name] = true
		switch name {
		case "file-" + fileID(1).String()[:6]:
			if m.MemoryStart != 0x1000 || m.MemoryLimit != 0xa000 || m.FileOffset != m.MemoryStart || !hasHTL {
				t.Errorf("library mapping [%#x, %#x) offset %#x, htlhash %v; want [0x1000, 0xa000) offset 0x1000 with htlhash",
					m.MemoryStart, m.MemoryLimit, m.FileOffset, hasHTL)
			}
		case "x.py":
			if l.Address != 0 || m.MemoryLimit != 0 || hasHTL {
				t.Errorf("Python location address %#x, mapping limit %#x, htlhash %v; want none", l.Address, m.MemoryLimit, hasHTL)
			}
		default: // the kernel and [anon]: IDs derived from names
			if hasHTL {
				t.Errorf("mapping %s carries an htlhash derived from a name", name)
			}
		}
	}
	if len(seen) != 4 || !seen["x.py"] || !seen["[anon]"] {
		t.Errorf("mappings %v, want the library, the kernel, [anon] and x.py", seen)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Interval: 0, FrameCacheSize: 1, ExecutableCacheSize: 1, SamplesPerSecond: 1},
		{Interval: time.Second, FrameCacheSize: 0, ExecutableCacheSize: 1, SamplesPerSecond: 1},
		{Interval: time.Second, FrameCacheSize: 1, ExecutableCacheSize: 0, SamplesPerSecond: 1},
		{Interval: time.Second, FrameCacheSize: 1, ExecutableCacheSize: 1, SamplesPerSecond: 0},
	} {
		if _, err := New(cfg, &captureExporter{}); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestPromiseAcrossSwitches: a frame the reporter said it knew stays named
// in the export of the trace that uses it, however many intervals end
// between the question and the report.
func TestPromiseAcrossSwitches(t *testing.T) {
	exp := &captureExporter{}
	r, err := New(testConfig(), exp)
	if err != nil {
		t.Fatal(err)
	}
	a := trace.FrameID{File: fileID(1), Addr: 1, Type: trace.FrameNative}
	b := trace.FrameID{File: fileID(2), Addr: 2, Type: trace.FrameNative}
	resolve(r, a)
	r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{a}}, trace.TraceMeta{PID: 1})
	r.Flush(context.Background())
	if !r.FrameKnown(a) || !r.ExecutableKnown(a.File) {
		t.Fatal("a is not known right after its metadata was stored")
	}
	resolve(r, b) // evicts a from the size-1 caches
	for range 3 {
		r.Flush(context.Background())
	}
	r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{a, b}}, trace.TraceMeta{PID: 1})
	r.Flush(context.Background())
	req := exp.reqs[len(exp.reqs)-1]
	frames, err := otlpcheck.Frames(req, req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples[0])
	if err != nil {
		t.Fatal(err)
	}
	if frames[0].Name != frameName(a) || frames[1].Name != frameName(b) || frames[0].MappingFile == "" {
		t.Fatalf("frames after three switches: %+v", frames)
	}
}

// TestInvalidUTF8: names that are not UTF-8 (a Linux path or thread name is
// any bytes) are exported with replacement characters instead of making the
// whole export fail to marshal.
func TestInvalidUTF8(t *testing.T) {
	exp := &captureExporter{}
	r, err := New(testConfig(), exp)
	if err != nil {
		t.Fatal(err)
	}
	const bad = "caf\xe9"
	id := trace.FrameID{File: fileID(1), Addr: 0x1000, Type: trace.FrameNative}
	r.FrameMetadata(id, trace.FrameInfo{Lines: []trace.Line{{Function: "f" + bad, File: bad + ".c"}}})
	r.ExecutableMetadata(id.File, trace.ExecutableInfo{FileName: "lib" + bad + ".so"})
	r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{id}}, trace.TraceMeta{
		TimestampNS: uint64(time.Now().UnixNano()), PID: 9, TID: 9,
		Comm: bad, ExecutablePath: "/opt/" + bad, ProcessName: bad,
	})
	r.Flush(context.Background())
	if len(exp.reqs) != 1 {
		t.Fatalf("%d requests", len(exp.reqs))
	}
	b, err := proto.Marshal(exp.reqs[0])
	if err != nil {
		t.Fatalf("export does not marshal: %v", err)
	}
	var back collectorpb.ExportProfilesServiceRequest
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got := otlpcheck.ResourceAttr(back.ResourceProfiles[0], "process.executable.name"); got != "caf\uFFFD" {
		t.Errorf("process.executable.name = %q, want %q", got, "caf\uFFFD")
	}
}

// failingExporter refuses every request.
type failingExporter struct{ err error }

func (f failingExporter) Export(context.Context, *collectorpb.ExportProfilesServiceRequest) error {
	return f.err
}

// TestRunReturnsFinalExportError: a failed periodic export is counted and
// Run goes on; the final export's failure, after which nothing is retried,
// is Run's error.
func TestRunReturnsFinalExportError(t *testing.T) {
	disk := errors.New("disk full")
	r, err := New(testConfig(), failingExporter{disk})
	if err != nil {
		t.Fatal(err)
	}
	id := trace.FrameID{File: fileID(1), Addr: 0x10, Type: trace.FrameNative}
	resolve(r, id)
	r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{id}}, trace.TraceMeta{TimestampNS: uint64(time.Now().UnixNano()), PID: 1, TID: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); !errors.Is(err, disk) {
		t.Errorf("Run = %v, want the final export's error", err)
	}
	if got := r.Stats().ExportErrors; got != 1 {
		t.Errorf("%d export errors counted, want 1", got)
	}
}

// TestCacheExpiry: frames and executables unused for CacheTTL leave the
// caches (counted, their bytes with them) while those in use stay, and an
// expired frame is resolved again.
func TestCacheExpiry(t *testing.T) {
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = 100, 100
	cfg.CacheTTL = 200 * time.Millisecond
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	hot := trace.FrameID{File: fileID(1), Addr: 1, Type: trace.FrameNative}
	var idle []trace.FrameID
	for i := range 10 {
		idle = append(idle, trace.FrameID{File: fileID(2 + i), Addr: 2, Type: trace.FrameNative})
	}
	for _, id := range append([]trace.FrameID{hot}, idle...) {
		resolve(r, id)
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{id}}, trace.TraceMeta{PID: 1, TID: 1})
	}
	r.Flush(context.Background())
	s := r.Stats()
	if s.FrameCacheEntries != 11 || s.ExecutableCacheEntries != 11 {
		t.Fatalf("before expiry: %d frames, %d executables cached, want 11 each", s.FrameCacheEntries, s.ExecutableCacheEntries)
	}
	want := FrameInfoBytes(trace.FrameInfo{Lines: []trace.Line{{Function: frameName(hot)}}})
	if s.FrameCacheBytes != uint64(11*want) {
		t.Fatalf("frame cache bytes %d, want %d", s.FrameCacheBytes, 11*want)
	}
	// The hot frame and its file are used throughout; the others not.
	deadline := time.Now().Add(3 * cfg.CacheTTL)
	for time.Now().Before(deadline) {
		if !r.FrameKnown(hot) || !r.ExecutableKnown(hot.File) {
			t.Fatal("hot frame or file expired while in use")
		}
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{hot}}, trace.TraceMeta{PID: 1, TID: 1})
		time.Sleep(cfg.CacheTTL / 10)
		r.Flush(context.Background())
	}
	s = r.Stats()
	if s.FrameCacheEntries != 1 || s.ExecutableCacheEntries != 1 {
		t.Fatalf("after expiry: %d frames, %d executables cached, want 1 each", s.FrameCacheEntries, s.ExecutableCacheEntries)
	}
	if s.FrameCacheExpired != 10 || s.ExecutableCacheExpired != 10 {
		t.Fatalf("expired %d frames, %d executables, want 10 each", s.FrameCacheExpired, s.ExecutableCacheExpired)
	}
	if s.FrameCacheBytes != uint64(want) {
		t.Fatalf("frame cache bytes %d after expiry, want %d", s.FrameCacheBytes, want)
	}
	if r.FrameKnown(idle[0]) {
		t.Fatal("an expired frame is still known")
	}
}

// TestFrameCacheBytes: the frame cache holds at most FrameCacheBytes of
// names, dropping the least recently used; a frame larger than the bound is
// not cached but still exported named.
func TestFrameCacheBytes(t *testing.T) {
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = 100, 100
	info := func(n int) trace.FrameInfo {
		return trace.FrameInfo{Lines: []trace.Line{{Function: strings.Repeat("f", n)}}}
	}
	cfg.FrameCacheBytes = 3 * FrameInfoBytes(info(100))
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	var ids []trace.FrameID
	for i := range 5 {
		id := trace.FrameID{File: fileID(1), Addr: uint64(i), Type: trace.FrameNative}
		ids = append(ids, id)
		r.FrameMetadata(id, info(100))
	}
	s := r.Stats()
	if s.FrameCacheEntries != 3 || s.FrameCacheBytes != uint64(cfg.FrameCacheBytes) {
		t.Fatalf("%d frames, %d bytes cached, want 3, %d", s.FrameCacheEntries, s.FrameCacheBytes, cfg.FrameCacheBytes)
	}
	r.ExecutableMetadata(ids[0].File, trace.ExecutableInfo{FileName: "f"})
	r.ReportTrace(&trace.Trace{Frames: ids}, trace.TraceMeta{PID: 1, TID: 1})
	if err := r.Flush(context.Background()); err != nil { // the pins go
		t.Fatal(err)
	}
	for i, id := range ids {
		if got, want := r.FrameKnown(id), i >= 2; got != want {
			t.Errorf("frame %d known %v, want %v", i, got, want)
		}
	}
	big := trace.FrameID{File: fileID(1), Addr: 99, Type: trace.FrameNative}
	if r.FrameKnown(big) {
		t.Fatal("unseen frame known")
	}
	r.FrameMetadata(big, info(1000))
	r.ExecutableMetadata(big.File, trace.ExecutableInfo{FileName: "big"})
	r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{big}}, trace.TraceMeta{PID: 1, TID: 1})
	if s := r.Stats(); s.FrameCacheBytes > uint64(cfg.FrameCacheBytes) {
		t.Fatalf("%d bytes cached, bound %d", s.FrameCacheBytes, cfg.FrameCacheBytes)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := exp.reqs[len(exp.reqs)-1]
	d := req.Dictionary
	named := false
	for _, f := range d.FunctionTable {
		named = named || d.StringTable[f.NameStrindex] == strings.Repeat("f", 1000)
	}
	if !named {
		t.Fatal("the frame too large to cache was exported without its name")
	}
	if r.FrameKnown(big) {
		t.Fatal("the frame too large to cache is known after its interval")
	}
}

// TestCacheGrows: the frame and executable caches start small and grow to
// their sizes as they fill, keeping every entry, the order in which they
// were used, and the frame cache's byte count.
func TestCacheGrows(t *testing.T) {
	const size = 3000 // more than one growth from initialFrameCache
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = size, size
	cfg.CacheTTL = time.Hour
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	if r.frames.capacity != initialFrameCache || r.execs.capacity != initialExecutableCache {
		t.Fatalf("initial capacities %d, %d", r.frames.capacity, r.execs.capacity)
	}
	frame := func(i int) trace.FrameID {
		return trace.FrameID{File: fileID(i), Addr: 0x1000, Type: trace.FrameNative}
	}
	bytes := 0
	add := func(i int) {
		id := frame(i)
		resolve(r, id)
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{id}}, trace.TraceMeta{PID: 1, TID: 1})
	}
	for i := range initialFrameCache {
		add(i)
		bytes += FrameInfoBytes(trace.FrameInfo{Lines: []trace.Line{{Function: frameName(frame(i))}}})
	}
	r.Flush(context.Background())
	// Frame 0 is used again: the least recently used is now frame 1.
	if !r.FrameKnown(frame(0)) || !r.ExecutableKnown(frame(0).File) {
		t.Fatal("frame 0 not known before the caches grow")
	}
	r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{frame(0)}}, trace.TraceMeta{PID: 1, TID: 1})
	for i := initialFrameCache; i < size; i++ {
		add(i)
		bytes += FrameInfoBytes(trace.FrameInfo{Lines: []trace.Line{{Function: frameName(frame(i))}}})
	}
	r.Flush(context.Background())
	s := r.Stats()
	if s.FrameCacheEntries != size || s.ExecutableCacheEntries != size || s.FrameCacheBytes != uint64(bytes) {
		t.Fatalf("after growing: %d frames of %d bytes, %d executables; want %d, %d bytes", s.FrameCacheEntries, s.FrameCacheBytes, s.ExecutableCacheEntries, size, bytes)
	}
	if r.frames.capacity != size || r.execs.capacity != size {
		t.Fatalf("capacities %d, %d after growing, want %d", r.frames.capacity, r.execs.capacity, size)
	}
	if s.FrameCacheExpired != 0 {
		t.Fatalf("%d frames expired", s.FrameCacheExpired)
	}
	// One more frame evicts the least recently used: frame 1, not 0.
	add(size)
	r.Flush(context.Background())
	if r.FrameKnown(frame(1)) {
		t.Error("frame 1 still known: growing lost the order of use")
	}
	if !r.FrameKnown(frame(0)) || !r.FrameKnown(frame(2)) {
		t.Error("frame 0 or 2 evicted instead of frame 1")
	}
	if s := r.Stats(); s.FrameCacheEntries != size {
		t.Errorf("%d frames cached, want %d", s.FrameCacheEntries, size)
	}
}

// TestCacheExpiresBeforeGrowing: a full cache whose entries have expired
// drops them, counted as expired, rather than growing and keeping them.
func TestCacheExpiresBeforeGrowing(t *testing.T) {
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = 4*initialFrameCache, 4*initialFrameCache
	cfg.CacheTTL = 100 * time.Millisecond
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(i int) trace.FrameID {
		return trace.FrameID{File: fileID(i), Addr: 0x1000, Type: trace.FrameNative}
	}
	for i := range initialFrameCache {
		resolve(r, frame(i))
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{frame(i)}}, trace.TraceMeta{PID: 1, TID: 1})
	}
	r.Flush(context.Background())
	time.Sleep(2 * cfg.CacheTTL)
	resolve(r, frame(initialFrameCache))
	s := r.Stats()
	if r.frames.capacity != initialFrameCache || s.FrameCacheEntries != 1 || s.FrameCacheExpired != initialFrameCache {
		t.Fatalf("capacity %d, %d entries, %d expired; want %d, 1, %d", r.frames.capacity, s.FrameCacheEntries, s.FrameCacheExpired, initialFrameCache, initialFrameCache)
	}
	want := FrameInfoBytes(trace.FrameInfo{Lines: []trace.Line{{Function: frameName(frame(initialFrameCache))}}})
	if s.FrameCacheBytes != uint64(want) {
		t.Fatalf("frame cache bytes %d, want %d", s.FrameCacheBytes, want)
	}
}
