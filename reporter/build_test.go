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

// TestLineAddresses: without Config.LineAddresses, frames named down to a
// source line lose their address, frames at two addresses of one line (and
// the same inlined calls) are one location, and traces that then have the
// same stack are one sample with the timestamps of both; frames named by
// symbol only and unnamed frames keep their address. With it, every
// address is its own location.
func TestLineAddresses(t *testing.T) {
	file := fileID(1)
	at := func(addr uint64) trace.FrameID { return trace.FrameID{File: file, Addr: addr, Type: trace.FrameNative} }
	lineA1, lineA2, inlined, lineB, symbolOnly, unnamed := at(0x1010), at(0x1020), at(0x1030), at(0x2000), at(0x3000), at(0x4000)
	caller := at(0x5000)
	for _, lineAddresses := range []bool{false, true} {
		exp := &captureExporter{}
		cfg := testConfig()
		cfg.FrameCacheSize, cfg.ExecutableCacheSize = 100, 100
		cfg.LineAddresses = lineAddresses
		r, err := New(cfg, exp)
		if err != nil {
			t.Fatal(err)
		}
		f := trace.Line{Function: "f", File: "f.c", Line: 10}
		r.FrameMetadata(lineA1, trace.FrameInfo{Lines: []trace.Line{f}})
		r.FrameMetadata(lineA2, trace.FrameInfo{Lines: []trace.Line{f}})
		// The same line with a call inlined into it is another location.
		r.FrameMetadata(inlined, trace.FrameInfo{Lines: []trace.Line{{Function: "g", File: "g.h", Line: 3}, f}})
		r.FrameMetadata(lineB, trace.FrameInfo{Lines: []trace.Line{{Function: "f", File: "f.c", Line: 11}}})
		r.FrameMetadata(symbolOnly, trace.FrameInfo{Lines: []trace.Line{{Function: "h"}}})
		r.FrameMetadata(unnamed, trace.FrameInfo{})
		r.FrameMetadata(caller, trace.FrameInfo{Lines: []trace.Line{{Function: "main", File: "main.c", Line: 5}}})
		r.ExecutableMetadata(file, trace.ExecutableInfo{FileName: "prog"})
		for i, leaf := range []trace.FrameID{lineA1, lineA2, inlined, lineB, symbolOnly, unnamed} {
			r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{leaf, caller}}, trace.TraceMeta{PID: 7, TID: 7, Comm: "x", TimestampNS: uint64(1000 + i)})
		}
		// Waits at two addresses of one line, reported out of order.
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{lineA2, caller}}, trace.TraceMeta{PID: 7, TID: 7, Comm: "x", TimestampNS: 2000, OffCPUNS: 300})
		r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{lineA1, caller}}, trace.TraceMeta{PID: 7, TID: 7, Comm: "x", TimestampNS: 1999, OffCPUNS: 100})
		r.Flush(context.Background())
		req := exp.reqs[0]
		if err := otlpcheck.Validate(req); err != nil {
			t.Fatal(err)
		}
		waits := req.ResourceProfiles[0].ScopeProfiles[0].Profiles[1].Samples
		if !lineAddresses && (len(waits) != 1 || !slices.Equal(waits[0].TimestampsUnixNano, []uint64{1999, 2000}) || !slices.Equal(waits[0].Values, []int64{100, 300})) {
			t.Errorf("waits at one line: %v, want one sample of both, in time order", waits)
		}
		if lineAddresses && len(waits) != 2 {
			t.Errorf("waits at two addresses: %d samples, want 2", len(waits))
		}
		type leafSample struct {
			name    string
			line    int64
			inlined int
			addr    uint64
			count   int
		}
		var got []leafSample
		for _, s := range req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples {
			frames, err := otlpcheck.Frames(req, s)
			if err != nil {
				t.Fatal(err)
			}
			leaf := req.Dictionary.LocationTable[req.Dictionary.StackTable[s.StackIndex].LocationIndices[0]]
			var line int64
			if len(leaf.Lines) > 0 {
				line = leaf.Lines[0].Line
			}
			got = append(got, leafSample{frames[0].Name, line, len(frames[0].Functions), frames[0].Address, len(s.TimestampsUnixNano)})
			if caller := frames[len(frames)-1]; caller.Name != "main" || caller.Address != map[bool]uint64{false: 0, true: 0x5000}[lineAddresses] {
				t.Errorf("LineAddresses %v: caller %+v", lineAddresses, caller)
			}
		}
		slices.SortFunc(got, func(a, b leafSample) int {
			return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(a.line, b.line), cmp.Compare(a.inlined, b.inlined), cmp.Compare(a.addr, b.addr))
		})
		want := []leafSample{{"", 0, 0, 0x4000, 1}, {"f", 10, 1, 0, 2}, {"f", 11, 1, 0, 1}, {"g", 3, 2, 0, 1}, {"h", 0, 1, 0x3000, 1}}
		if lineAddresses {
			want = []leafSample{{"", 0, 0, 0x4000, 1}, {"f", 10, 1, 0x1010, 1}, {"f", 10, 1, 0x1020, 1}, {"f", 11, 1, 0x2000, 1}, {"g", 3, 2, 0x1030, 1}, {"h", 0, 1, 0x3000, 1}}
		}
		if !slices.Equal(got, want) {
			t.Errorf("LineAddresses %v: samples by leaf\n%+v, want\n%+v", lineAddresses, got, want)
		}
		if n, want := len(req.Dictionary.LocationTable)-1, len(want)+1; n != want {
			t.Errorf("LineAddresses %v: %d locations, want %d", lineAddresses, n, want)
		}
	}
}

// TestCoarseTimestamps: with Config.CoarseTimestamps the timestamps of
// samples and waits are rounded down to a multiple of 1,024 ns and the
// profile's range still holds them; without it they are exact.
func TestCoarseTimestamps(t *testing.T) {
	stamps := []uint64{1_700_000_000_123_456_789, 1_700_000_000_223_456_001, 1_700_000_001_000_000_000}
	for _, coarse := range []bool{false, true} {
		exp := &captureExporter{}
		cfg := testConfig()
		cfg.CoarseTimestamps = coarse
		r, err := New(cfg, exp)
		if err != nil {
			t.Fatal(err)
		}
		id := trace.FrameID{File: fileID(1), Addr: 0x100, Type: trace.FrameNative}
		resolve(r, id)
		for _, ts := range stamps {
			r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{id}}, trace.TraceMeta{PID: 7, TID: 7, Comm: "x", TimestampNS: ts})
			r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{id}}, trace.TraceMeta{PID: 7, TID: 7, Comm: "x", TimestampNS: ts, OffCPUNS: 5000})
		}
		r.Flush(context.Background())
		req := exp.reqs[0]
		if err := otlpcheck.Validate(req); err != nil {
			t.Fatal(err)
		}
		profiles := req.ResourceProfiles[0].ScopeProfiles[0].Profiles
		if len(profiles) != 2 {
			t.Fatalf("%d profiles, want CPU and off-CPU", len(profiles))
		}
		for _, p := range profiles {
			got := p.Samples[0].TimestampsUnixNano
			want := slices.Clone(stamps)
			for i := range want {
				if coarse {
					want[i] &^= 1023
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("CoarseTimestamps %v: timestamps %v, want %v", coarse, got, want)
			}
		}
	}
}
