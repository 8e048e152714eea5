package reporter

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"strings"
	"testing"

	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/trace"
)

// TestCompactDictionary: a function's system name is sent only when it
// differs from its name; the location table is ordered by mapping and
// address and every stack still resolves to its frames in order.
func TestCompactDictionary(t *testing.T) {
	exp := &captureExporter{}
	cfg := testConfig()
	cfg.FrameCacheSize = 100
	cfg.ExecutableCacheSize = 100
	cfg.SystemNames = true
	r, err := New(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	// Frames of two files, reported in an order that is neither by file
	// nor by address.
	var ids []trace.FrameID
	for i, addr := range []uint64{0x9000, 0x100, 0x5000, 0x300, 0x7000, 0x200} {
		ids = append(ids, trace.FrameID{File: fileID(1 + i%2), Addr: addr, Type: trace.FrameNative})
	}
	py := trace.FrameID{File: trace.SourceFileID("cpython", "/app/x.py"), Addr: 0xdeadbeef, Type: trace.FrameCPython}
	for _, id := range ids {
		resolve(r, id)
	}
	mangled := trace.FrameID{File: fileID(1), Addr: 0x8000, Type: trace.FrameNative}
	r.FrameMetadata(mangled, trace.FrameInfo{Lines: []trace.Line{{Function: "ns::f()", SystemName: "_ZN2ns1fEv"}}})
	r.FrameMetadata(py, trace.FrameInfo{Lines: []trace.Line{{Function: "f", File: "/app/x.py", Line: 3}}})
	r.ExecutableMetadata(py.File, trace.ExecutableInfo{FileName: "x.py"})
	traces := [][]trace.FrameID{
		{ids[0], ids[1], ids[2], py},
		{mangled, ids[3], ids[4], ids[5], ids[1]},
		{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]},
	}
	for i, frames := range traces {
		r.ReportTrace(&trace.Trace{Frames: frames}, trace.TraceMeta{PID: 7, TID: uint32(7 + i), Comm: "x", TimestampNS: uint64(i)})
	}
	r.Flush(context.Background())
	req := exp.reqs[0]
	if err := otlpcheck.Validate(req); err != nil {
		t.Fatal(err)
	}
	d := req.Dictionary

	for i, fn := range d.FunctionTable[1:] {
		name, system := d.StringTable[fn.NameStrindex], d.StringTable[fn.SystemNameStrindex]
		if want := map[string]string{"ns::f()": "_ZN2ns1fEv"}[name]; system != want {
			t.Errorf("function %d %q: system name %q, want %q", i+1, name, system, want)
		}
	}
	if !slices.IsSortedFunc(d.LocationTable[1:], func(a, b *profilespb.Location) int {
		return cmp.Or(cmp.Compare(a.MappingIndex, b.MappingIndex), cmp.Compare(a.Address, b.Address))
	}) {
		t.Error("location table not ordered by mapping and address")
	}
	rootFirst := func(s *profilespb.Stack) []int32 {
		r := slices.Clone(s.LocationIndices)
		slices.Reverse(r)
		return r
	}
	if !slices.IsSortedFunc(d.StackTable[1:], func(a, b *profilespb.Stack) int {
		return slices.Compare(rootFirst(a), rootFirst(b))
	}) {
		t.Error("stack table not ordered by locations from the root")
	}
	// Functions are numbered in the order the sorted locations use them,
	// and their strings in the order the functions use them.
	var fnOrder []int32
	for _, loc := range d.LocationTable[1:] {
		for _, l := range loc.Lines {
			if !slices.Contains(fnOrder, l.FunctionIndex) {
				fnOrder = append(fnOrder, l.FunctionIndex)
			}
		}
	}
	if len(fnOrder) != len(d.FunctionTable)-1 || !slices.IsSorted(fnOrder) {
		t.Errorf("functions used in the order %v, want 1 to %d", fnOrder, len(d.FunctionTable)-1)
	}
	var strOrder []int32
	for _, fn := range d.FunctionTable[1:] {
		for _, i := range []int32{fn.NameStrindex, fn.FilenameStrindex, fn.SystemNameStrindex} {
			if i != 0 && !slices.Contains(strOrder, i) {
				strOrder = append(strOrder, i)
			}
		}
	}
	for i, si := range strOrder {
		if si != strOrder[0]+int32(i) {
			t.Fatalf("strings used by functions in the order %v, want consecutive", strOrder)
		}
	}
	samples := req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples
	if len(samples) != len(traces) {
		t.Fatalf("%d samples, want %d", len(samples), len(traces))
	}
	for _, s := range samples {
		tid, err := otlpcheck.SampleAttr(req, s, "thread.id")
		if err != nil {
			t.Fatal(err)
		}
		want := traces[int(tid[0]-'7')]
		frames, err := otlpcheck.Frames(req, s)
		if err != nil {
			t.Fatal(err)
		}
		if len(frames) != len(want) {
			t.Fatalf("thread %s: %d frames, want %d", tid, len(frames), len(want))
		}
		for j, f := range frames {
			wantName := frameName(want[j])
			switch want[j] {
			case py:
				wantName = "f"
			case mangled:
				wantName = "ns::f()"
			}
			if f.Name != wantName || (want[j] != py && f.Address != want[j].Addr) {
				t.Errorf("thread %s frame %d: %s at %#x, want %s at %#x", tid, j, f.Name, f.Address, wantName, want[j].Addr)
			}
		}
	}
}

// TestProfileIDs: every profile of a request has its own 16-byte ID, none
// all zero, and two requests share none.
func TestProfileIDs(t *testing.T) {
	exp := &captureExporter{}
	r, err := New(testConfig(), exp)
	if err != nil {
		t.Fatal(err)
	}
	id := trace.FrameID{File: fileID(1), Addr: 0x10, Type: trace.FrameNative}
	for range 2 {
		resolve(r, id)
		for pid := range uint32(5) {
			r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{id}}, trace.TraceMeta{PID: 100 + pid, TID: 100 + pid, Comm: "x"})
		}
		r.Flush(context.Background())
	}
	seen := map[string]bool{}
	for _, req := range exp.reqs {
		for _, rp := range req.ResourceProfiles {
			for _, p := range rp.ScopeProfiles[0].Profiles {
				if len(p.ProfileId) != 16 || bytes.Equal(p.ProfileId, make([]byte, 16)) || seen[string(p.ProfileId)] {
					t.Fatalf("profile ID %x: not 16 bytes, zero or seen before", p.ProfileId)
				}
				seen[string(p.ProfileId)] = true
			}
		}
	}
	if len(seen) != 10 {
		t.Fatalf("%d profile IDs, want 10", len(seen))
	}
}

// TestSystemNames: a function's mangled name is sent as its system name
// only with Config.SystemNames; without it, two overloads that demangle
// to one name are one function and no mangled name is in the export.
func TestSystemNames(t *testing.T) {
	for _, systemNames := range []bool{false, true} {
		exp := &captureExporter{}
		cfg := testConfig()
		cfg.SystemNames = systemNames
		r, err := New(cfg, exp)
		if err != nil {
			t.Fatal(err)
		}
		f1 := trace.FrameID{File: fileID(1), Addr: 0x100, Type: trace.FrameNative}
		f2 := trace.FrameID{File: fileID(1), Addr: 0x200, Type: trace.FrameNative}
		r.ExecutableMetadata(f1.File, trace.ExecutableInfo{FileName: "libx.so"})
		r.FrameMetadata(f1, trace.FrameInfo{Lines: []trace.Line{{Function: "ns::f", SystemName: "_ZN2ns1fEi"}}})
		r.FrameMetadata(f2, trace.FrameInfo{Lines: []trace.Line{{Function: "ns::f", SystemName: "_ZN2ns1fEd"}}})
		// A frame with a system name only is named by it.
		f3 := trace.FrameID{File: fileID(1), Addr: 0x300, Type: trace.FrameNative}
		r.FrameMetadata(f3, trace.FrameInfo{Lines: []trace.Line{{SystemName: "raw_name"}}})
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{f1, f2, f3}}, trace.TraceMeta{PID: 7, TID: 7, Comm: "x", TimestampNS: 1})
		r.Flush(context.Background())
		req := exp.reqs[0]
		if err := otlpcheck.Validate(req); err != nil {
			t.Fatal(err)
		}
		d := req.Dictionary
		var got []string
		for _, fn := range d.FunctionTable[1:] {
			got = append(got, d.StringTable[fn.NameStrindex]+" "+d.StringTable[fn.SystemNameStrindex])
		}
		want := []string{"ns::f ", "raw_name "}
		if systemNames {
			want = []string{"ns::f _ZN2ns1fEi", "ns::f _ZN2ns1fEd", "raw_name "}
		}
		if !slices.Equal(got, want) {
			t.Errorf("SystemNames %v: functions %q, want %q", systemNames, got, want)
		}
		if !systemNames && slices.ContainsFunc(d.StringTable, func(s string) bool { return strings.HasPrefix(s, "_Z") }) {
			t.Errorf("SystemNames false: a mangled name is in the string table %q", d.StringTable)
		}
	}
}
