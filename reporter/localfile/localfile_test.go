package localfile

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
)

// profileStart is the start of the test profile's interval.
var profileStart = time.Date(2026, 11, 22, 10, 15, 0, 0, time.UTC)

const period = 10_000_000 // 100 Hz

// builder builds a request's dictionary the way the reporter does: every
// table starts with its zero value and entries are deduplicated.
type builder struct {
	d       *profilespb.ProfilesDictionary
	strs    map[string]int32
	attrs   map[string]int32
	funcs   map[string]int32
	maps    map[string]int32
	locs    map[string]int32
	profile map[int64]*profilespb.Profile
	req     *collectorpb.ExportProfilesServiceRequest
}

func newBuilder() *builder {
	b := &builder{
		d: &profilespb.ProfilesDictionary{
			MappingTable:   []*profilespb.Mapping{{}},
			LocationTable:  []*profilespb.Location{{}},
			FunctionTable:  []*profilespb.Function{{}},
			LinkTable:      []*profilespb.Link{{}},
			StringTable:    []string{""},
			AttributeTable: []*profilespb.KeyValueAndUnit{{}},
			StackTable:     []*profilespb.Stack{{}},
		},
		strs:    map[string]int32{"": 0},
		attrs:   map[string]int32{},
		funcs:   map[string]int32{},
		maps:    map[string]int32{},
		locs:    map[string]int32{},
		profile: map[int64]*profilespb.Profile{},
	}
	b.req = &collectorpb.ExportProfilesServiceRequest{Dictionary: b.d}
	return b
}

func (b *builder) str(s string) int32 {
	if i, ok := b.strs[s]; ok {
		return i
	}
	b.d.StringTable = append(b.d.StringTable, s)
	b.strs[s] = int32(len(b.d.StringTable) - 1)
	return b.strs[s]
}

func (b *builder) attr(key string, v *commonpb.AnyValue) int32 {
	id := key + "=" + otlpcheck.FormatValue(v)
	if i, ok := b.attrs[id]; ok {
		return i
	}
	b.d.AttributeTable = append(b.d.AttributeTable, &profilespb.KeyValueAndUnit{KeyStrindex: b.str(key), Value: v})
	b.attrs[id] = int32(len(b.d.AttributeTable) - 1)
	return b.attrs[id]
}

func strValue(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}

func intValue(n int64) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: n}}
}

func (b *builder) mapping(file, buildKey, buildID string) int32 {
	if i, ok := b.maps[file]; ok {
		return i
	}
	m := &profilespb.Mapping{FilenameStrindex: b.str(file)}
	if buildID != "" {
		m.AttributeIndices = []int32{b.attr(buildKey, strValue(buildID))}
	}
	b.d.MappingTable = append(b.d.MappingTable, m)
	b.maps[file] = int32(len(b.d.MappingTable) - 1)
	return b.maps[file]
}

// frame describes one location: its functions (innermost first; none for
// an unnamed frame), file, type, mapping and address.
type frame struct {
	funcs   []string
	typ     string
	mapping int32
	addr    uint64
}

func (b *builder) function(name, file string) int32 {
	if i, ok := b.funcs[name]; ok {
		return i
	}
	b.d.FunctionTable = append(b.d.FunctionTable, &profilespb.Function{
		NameStrindex: b.str(name), SystemNameStrindex: b.str(name), FilenameStrindex: b.str(file),
	})
	b.funcs[name] = int32(len(b.d.FunctionTable) - 1)
	return b.funcs[name]
}

func (b *builder) location(f frame) int32 {
	id := fmt.Sprintf("%q %s %d %#x", f.funcs, f.typ, f.mapping, f.addr)
	if i, ok := b.locs[id]; ok {
		return i
	}
	l := &profilespb.Location{
		MappingIndex:     f.mapping,
		Address:          f.addr,
		AttributeIndices: []int32{b.attr("profile.frame.type", strValue(f.typ))},
	}
	for k, fn := range f.funcs {
		l.Lines = append(l.Lines, &profilespb.Line{FunctionIndex: b.function(fn, "src.c"), Line: int64(10 + k)})
	}
	if m := b.d.MappingTable[f.mapping]; f.mapping != 0 && f.addr != 0 {
		// Mapping ranges hold their locations' addresses, as the
		// reporter's do.
		if m.MemoryLimit == 0 {
			m.MemoryStart = f.addr
		}
		m.MemoryStart, m.MemoryLimit = min(m.MemoryStart, f.addr), max(m.MemoryLimit, f.addr+1)
	}
	b.d.LocationTable = append(b.d.LocationTable, l)
	b.locs[id] = int32(len(b.d.LocationTable) - 1)
	return b.locs[id]
}

func (b *builder) process(pid int64, name string) {
	p := &profilespb.Profile{
		SampleType:   &profilespb.ValueType{TypeStrindex: b.str("samples"), UnitStrindex: b.str("count")},
		PeriodType:   &profilespb.ValueType{TypeStrindex: b.str("cpu"), UnitStrindex: b.str("nanoseconds")},
		Period:       period,
		TimeUnixNano: uint64(profileStart.UnixNano()),
		DurationNano: uint64(5 * time.Second),
	}
	b.profile[pid] = p
	b.req.ResourceProfiles = append(b.req.ResourceProfiles, &profilespb.ResourceProfiles{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "process.pid", Value: intValue(pid)},
			{Key: "process.executable.name", Value: strValue(name)},
			{Key: "process.executable.path", Value: strValue("/usr/bin/" + name)},
			{Key: "host.name", Value: strValue("host1")},
			{Key: "service.name", Value: strValue("unknown_service:" + name)},
		}},
		ScopeProfiles: []*profilespb.ScopeProfiles{{Profiles: []*profilespb.Profile{p}}},
	})
}

// sample adds count observations of the stack (frames leaf first) as
// timestamps only, the shape the reporter sends.
func (b *builder) sample(pid, tid int64, thread string, count int, frames ...frame) {
	st := &profilespb.Stack{}
	for _, f := range frames {
		st.LocationIndices = append(st.LocationIndices, b.location(f))
	}
	b.d.StackTable = append(b.d.StackTable, st)
	s := &profilespb.Sample{
		StackIndex:       int32(len(b.d.StackTable) - 1),
		AttributeIndices: []int32{b.attr("thread.name", strValue(thread)), b.attr("thread.id", intValue(tid))},
	}
	for i := range count {
		s.TimestampsUnixNano = append(s.TimestampsUnixNano, uint64(profileStart.UnixNano())+uint64(i))
	}
	p := b.profile[pid]
	p.Samples = append(p.Samples, s)
}

// testRequest builds two processes with kernel and native frames, one of
// them unnamed, and an inlined function.
func testRequest(t *testing.T) *collectorpb.ExportProfilesServiceRequest {
	b := newBuilder()
	kernel := b.mapping("[kernel.kallsyms]", "process.executable.build_id.gnu", "k1")
	app := b.mapping("/usr/bin/app", "process.executable.build_id.gnu", "0123abcd")
	libfoo := b.mapping("/usr/lib/libfoo.so", "process.executable.build_id.htlhash", "feedface")
	server := b.mapping("/usr/bin/server", "process.executable.build_id.go", "gobuild/id")

	sys := frame{funcs: []string{"do_syscall_64"}, typ: "kernel", mapping: kernel, addr: 0xffffffff81000010}
	mainF := frame{funcs: []string{"main"}, typ: "native", mapping: app, addr: 0x1000}
	work := frame{funcs: []string{"inlined_helper", "work"}, typ: "native", mapping: app, addr: 0x1100}
	unnamed := frame{typ: "native", mapping: libfoo, addr: 0x1234}
	serve := frame{funcs: []string{"main.serve"}, typ: "go", mapping: server, addr: 0x4000}
	goMain := frame{funcs: []string{"main.main"}, typ: "go", mapping: server, addr: 0x4100}

	b.process(100, "app")
	b.sample(100, 101, "app-worker", 3, sys, unnamed, work, mainF)
	b.sample(100, 100, "app", 2, work, mainF)
	b.process(200, "server")
	b.sample(200, 201, "serve;loop", 4, serve, goMain)
	b.sample(200, 202, "gc", 1, sys, serve, goMain)

	if err := otlpcheck.Validate(b.req); err != nil {
		t.Fatalf("test request is not valid: %v", err)
	}
	return b.req
}

func TestExport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	w, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Export(context.Background(), testRequest(t)); err != nil {
		t.Fatalf("Export: %v", err)
	}
	base := filepath.Join(dir, "stackline-20261122T101500Z")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	if want := []string{"stackline-20261122T101500Z.folded", "stackline-20261122T101500Z.pb.gz"}; !slices.Equal(files, want) {
		t.Fatalf("directory holds %q, want %q", files, want)
	}

	// The pprof profile.
	f, err := os.Open(base + ".pb.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("parse pprof: %v", err)
	}
	if err := p.CheckValid(); err != nil {
		t.Errorf("pprof profile invalid: %v", err)
	}
	if got := p.SampleType; len(got) != 2 || got[0].Type != "samples" || got[0].Unit != "count" ||
		got[1].Type != "cpu" || got[1].Unit != "nanoseconds" {
		t.Errorf("sample types %v, want samples/count and cpu/nanoseconds", got)
	}
	if p.PeriodType.Type != "cpu" || p.PeriodType.Unit != "nanoseconds" || p.Period != period {
		t.Errorf("period %d %v, want %d cpu/nanoseconds", p.Period, p.PeriodType, period)
	}
	if p.TimeNanos != profileStart.UnixNano() || p.DurationNanos != int64(5*time.Second) {
		t.Errorf("time %d duration %d, want %d and 5s", p.TimeNanos, p.DurationNanos, profileStart.UnixNano())
	}

	type sampleKey struct {
		stack, proc, thread string
		pid, tid            int64
	}
	got := map[sampleKey][2]int64{}
	for _, s := range p.Sample {
		var names []string
		for _, l := range s.Location {
			for _, ln := range l.Line {
				names = append(names, ln.Function.Name)
			}
		}
		k := sampleKey{
			stack:  strings.Join(names, " "),
			proc:   strings.Join(s.Label[LabelProcessName], ","),
			thread: strings.Join(s.Label[LabelThreadName], ","),
			pid:    s.NumLabel[LabelPID][0],
			tid:    s.NumLabel[LabelTID][0],
		}
		v := got[k]
		got[k] = [2]int64{v[0] + s.Value[0], v[1] + s.Value[1]}
	}
	want := map[sampleKey][2]int64{
		{"do_syscall_64 libfoo.so+0x1234 inlined_helper work main", "app", "app-worker", 100, 101}: {3, 3 * period},
		{"inlined_helper work main", "app", "app", 100, 100}:                                       {2, 2 * period},
		{"main.serve main.main", "server", "serve;loop", 200, 201}:                                 {4, 4 * period},
		{"do_syscall_64 main.serve main.main", "server", "gc", 200, 202}:                           {1, 1 * period},
	}
	if len(got) != len(want) {
		t.Errorf("pprof samples:\n%v\nwant\n%v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("pprof sample %+v = %v, want %v", k, got[k], v)
		}
	}

	buildIDs := map[string]string{}
	for _, m := range p.Mapping {
		buildIDs[m.File] = m.BuildID
	}
	wantIDs := map[string]string{
		"[kernel.kallsyms]":  "k1",
		"/usr/bin/app":       "0123abcd",
		"/usr/lib/libfoo.so": "feedface",
		"/usr/bin/server":    "gobuild/id",
	}
	for file, id := range wantIDs {
		if buildIDs[file] != id {
			t.Errorf("mapping %s build ID %q, want %q", file, buildIDs[file], id)
		}
	}
	for _, l := range p.Location {
		if l.Address == 0x1234 && (l.Mapping == nil || l.Mapping.File != "/usr/lib/libfoo.so") {
			t.Errorf("unnamed location's mapping %+v, want libfoo.so", l.Mapping)
		}
	}

	// The folded stacks.
	folded, err := os.ReadFile(base + ".folded")
	if err != nil {
		t.Fatal(err)
	}
	wantFolded := strings.Join([]string{
		"app;main;work;inlined_helper 2",
		"app;main;work;inlined_helper;libfoo.so+0x1234;do_syscall_64 3",
		"server;main.main;main.serve 4",
		"server;main.main;main.serve;do_syscall_64 1",
	}, "\n") + "\n"
	if string(folded) != wantFolded {
		t.Errorf("folded file:\n%s\nwant:\n%s", folded, wantFolded)
	}

	if s := w.Stats(); s.Written != 1 || s.Errors != 0 || s.Bytes == 0 {
		t.Errorf("stats %+v, want 1 written", s)
	}
	var size int64
	for _, name := range files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", name, fi.Mode())
		}
	}
	if s := w.Stats(); s.Bytes != uint64(size) {
		t.Errorf("Stats.Bytes = %d, want the files' size %d", s.Bytes, size)
	}
}

func TestGoToolPprof(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go tool pprof")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	dir := t.TempDir()
	w, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Export(context.Background(), testRequest(t)); err != nil {
		t.Fatalf("Export: %v", err)
	}
	file := filepath.Join(dir, "stackline-20261122T101500Z.pb.gz")
	cmd := exec.Command(goTool, "tool", "pprof", "-top", file)
	// Keep pprof from looking for the profiled binaries anywhere.
	cmd.Env = append(os.Environ(), "PPROF_BINARY_PATH="+t.TempDir())
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("go tool pprof -top: %v\n%s", err, out)
	}
	for _, name := range []string{"do_syscall_64", "libfoo.so+0x1234", "inlined_helper", "main.serve", "main.main"} {
		if !strings.Contains(string(out), name) {
			t.Errorf("go tool pprof -top output lacks %s:\n%s", name, out)
		}
	}
	if strings.Contains(string(out), "rror") {
		t.Errorf("go tool pprof -top reported problems:\n%s", out)
	}
}

func TestExportNamesDoNotCollide(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := w.Export(context.Background(), testRequest(t)); err != nil {
			t.Fatalf("Export: %v", err)
		}
	}
	for _, name := range []string{
		"stackline-20261122T101500Z.pb.gz", "stackline-20261122T101500Z-1.pb.gz", "stackline-20261122T101500Z-2.pb.gz",
		"stackline-20261122T101500Z.folded", "stackline-20261122T101500Z-1.folded", "stackline-20261122T101500Z-2.folded",
	} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 6 {
		t.Errorf("directory holds %d entries, want 6 (no temporary files left)", len(entries))
	}
	if s := w.Stats(); s.Written != 3 {
		t.Errorf("stats %+v, want 3 written", s)
	}
}

func TestExportRejectsInvalid(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := testRequest(t)
	req.Dictionary.StackTable[1].LocationIndices[0] = 1000
	err = w.Export(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "location_indices[0]") {
		t.Errorf("Export(broken request) = %v, want an error naming the index", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Export(ctx, testRequest(t)); err == nil {
		t.Error("Export with a canceled context succeeded")
	}
	if s := w.Stats(); s.Errors != 2 || s.Written != 0 {
		t.Errorf("stats %+v, want 2 errors", s)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("directory holds %d entries, want none", len(entries))
	}
}

func TestExportEmpty(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := newBuilder()
	b.process(1, "idle")
	if err := w.Export(context.Background(), b.req); err != nil {
		t.Fatalf("Export(no samples): %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("directory holds %d entries, want none", len(entries))
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New("", nil); err == nil {
		t.Error("New(\"\") succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(filepath.Join(file, "sub"), nil); err == nil {
		t.Error("New under a regular file succeeded")
	}
}
