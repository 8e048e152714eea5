package reporter

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/trace"
)

// replayExport is an export of the whole-agent benchmark, captured with
// `go run ./bench/agentbench -requests DIR` (the second 15 s interval of
// a quiet run of the benchmark's mix, with its JVM, node and build loop,
// on 2026-12-01, before frames named to a line lost their addresses) and
// gzipped: the replay tests and benchmark rebuild it from the interval
// it describes, so that changes to build are measured on what the agent
// really sends.
const replayExport = "testdata/agentbench-export.pb.gz"

func loadReplayExport(tb testing.TB) *collectorpb.ExportProfilesServiceRequest {
	tb.Helper()
	req, _ := otlptest.CapturedExport(tb, replayExport)
	if err := otlpcheck.Validate(req); err != nil {
		tb.Fatal(err)
	}
	return req
}

// frameTypeOf is the inverse of FrameType.String for the types build
// emits: the runtimes' several frame types share a name, and one of them
// stands for all.
var frameTypeOf = map[string]trace.FrameType{
	"native":  trace.FrameNative,
	"kernel":  trace.FrameKernel,
	"abort":   trace.FrameError,
	"go":      trace.FrameGo,
	"cpython": trace.FrameCPython,
	"jvm":     trace.FrameJVMCompiled,
	"v8js":    trace.FrameV8Code,
}

// replay turns an export back into the interval build made it from, and
// the configuration it was made with: the tracer's frame IDs, names,
// mappings, processes and samples as the reporter held them.
func replay(tb testing.TB, req *collectorpb.ExportProfilesServiceRequest) (Config, *interval, time.Time) {
	tb.Helper()
	d := req.Dictionary
	str := func(i int32) string { return d.StringTable[i] }
	attrs := func(idx []int32) map[string]string {
		m := make(map[string]string)
		for _, i := range idx {
			kv := d.AttributeTable[i]
			m[str(kv.KeyStrindex)] = otlpcheck.FormatValue(kv.Value)
		}
		return m
	}
	iv := newInterval(1, time.Time{}, 0)
	fileOf := make([]trace.FileID, len(d.MappingTable))
	for i, m := range d.MappingTable[1:] {
		a := attrs(m.AttributeIndices)
		var id trace.FileID
		if h, ok := a[semconv.BuildIDHTL]; ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != len(id) {
				tb.Fatalf("mapping %d: htlhash %q", i+1, h)
			}
			copy(id[:], b)
		} else {
			sum := sha256.Sum256(fmt.Appendf(nil, "replay mapping %d", i+1))
			copy(id[:], sum[:])
		}
		fileOf[i+1] = id
		iv.execs[id] = trace.ExecutableInfo{
			FileName:   str(m.FilenameStrindex),
			GNUBuildID: a[semconv.BuildIDGNU],
			GoBuildID:  a[semconv.BuildIDGo],
			Pseudo:     a[semconv.BuildIDHTL] == "",
		}
	}
	frames := make([]trace.FrameID, len(d.LocationTable))
	for i, loc := range d.LocationTable[1:] {
		typ, ok := frameTypeOf[attrs(loc.AttributeIndices)[semconv.FrameType]]
		if !ok {
			tb.Fatalf("location %d: frame type %v", i+1, attrs(loc.AttributeIndices))
		}
		f := trace.FrameID{File: fileOf[loc.MappingIndex], Addr: loc.Address, Type: typ}
		if typ.Interpreted() {
			f.Addr = uint64(i + 1) // a key of the function and line
		}
		frames[i+1] = f
		if len(loc.Lines) == 0 {
			continue
		}
		var info trace.FrameInfo
		for _, l := range loc.Lines {
			fn := d.FunctionTable[l.FunctionIndex]
			info.Lines = append(info.Lines, trace.Line{
				Function:   str(fn.NameStrindex),
				SystemName: str(fn.SystemNameStrindex),
				File:       str(fn.FilenameStrindex),
				Line:       l.Line,
			})
		}
		iv.frames.put(f, info)
	}
	stackOf := make([]int32, len(d.StackTable))
	for i, st := range d.StackTable[1:] {
		fs := make([]trace.FrameID, len(st.LocationIndices))
		for j, li := range st.LocationIndices {
			fs[j] = frames[li]
		}
		stackOf[i+1] = iv.internStack(fs)
	}
	cfg := testConfig()
	var start, end uint64
	for _, rp := range req.ResourceProfiles {
		ra := otlpcheck.ResourceAttrs(rp)
		cfg.HostName = ra[semconv.HostName]
		var pid uint32
		fmt.Sscan(ra[semconv.PID], &pid)
		iv.processes[pid] = &processInfo{
			executablePath: ra[semconv.ExePath],
			name:           ra[semconv.ExeName],
			meta: &trace.ProcessMeta{
				ContainerID: ra[semconv.ContainerID],
				PodUID:      ra[semconv.PodUID],
				ServiceName: ra[semconv.ServiceName],
				RuntimeName: ra[semconv.RuntimeName],
			},
		}
		for _, sp := range rp.ScopeProfiles {
			cfg.Version = sp.Scope.GetVersion()
			for _, p := range sp.Profiles {
				offCPU := str(p.SampleType.GetTypeStrindex()) == semconv.SampleTypeOffCPU
				if p.Period > 0 {
					cfg.SamplesPerSecond = int(time.Second) / int(p.Period)
				}
				if start == 0 || p.TimeUnixNano < start {
					start = p.TimeUnixNano
				}
				end = max(end, p.TimeUnixNano+p.DurationNano)
				for _, s := range p.Samples {
					a := attrs(s.AttributeIndices)
					var tid uint32
					fmt.Sscan(a[semconv.ThreadID], &tid)
					key := sampleKey{stack: stackOf[s.StackIndex], pid: pid, tid: tid, comm: a[semconv.ThreadName], offCPU: offCPU}
					smp := &sample{timestamps: slices.Clone(s.TimestampsUnixNano)}
					if offCPU {
						for _, v := range s.Values {
							smp.waits = append(smp.waits, uint64(v))
						}
					}
					iv.samples[key] = smp
					iv.numTraces += len(s.TimestampsUnixNano)
				}
			}
		}
	}
	iv.start = time.Unix(0, int64(start))
	return cfg, iv, time.Unix(0, int64(end))
}

// exportContent lists what an export says, one line per sample
// timestamp, sorted: the process (resource attributes), thread, sample
// type, time and value, and the stack, each frame with its type, address,
// mapping (file name and build IDs) and lines. Two exports that list the
// same content carry the same information however their tables are laid
// out. systemNames says whether functions' system names are listed,
// lineAddresses whether the addresses of frames named down to a source
// line are (Config.LineAddresses): without it they are listed as 0.
func exportContent(tb testing.TB, req *collectorpb.ExportProfilesServiceRequest, systemNames, lineAddresses bool) []string {
	tb.Helper()
	d := req.Dictionary
	str := func(i int32) string { return d.StringTable[i] }
	attrs := func(idx []int32) string {
		var kvs []string
		for _, i := range idx {
			kv := d.AttributeTable[i]
			kvs = append(kvs, str(kv.KeyStrindex)+"="+otlpcheck.FormatValue(kv.Value))
		}
		slices.Sort(kvs)
		return strings.Join(kvs, ",")
	}
	locs := make([]string, len(d.LocationTable))
	for i, loc := range d.LocationTable {
		var b strings.Builder
		m := d.MappingTable[loc.MappingIndex]
		addr := loc.Address
		if !lineAddresses && namedToLine(loc.Lines) {
			addr = 0
		}
		fmt.Fprintf(&b, "[%s %#x %s(%s)", attrs(loc.AttributeIndices), addr, str(m.FilenameStrindex), attrs(m.AttributeIndices))
		for _, l := range loc.Lines {
			fn := d.FunctionTable[l.FunctionIndex]
			fmt.Fprintf(&b, " %s %s:%d", str(fn.NameStrindex), str(fn.FilenameStrindex), l.Line)
			if systemNames && fn.SystemNameStrindex != 0 {
				fmt.Fprintf(&b, " (%s)", str(fn.SystemNameStrindex))
			}
		}
		b.WriteString("]")
		locs[i] = b.String()
	}
	var out []string
	for _, rp := range req.ResourceProfiles {
		var res []string
		for k, v := range otlpcheck.ResourceAttrs(rp) {
			res = append(res, k+"="+v)
		}
		slices.Sort(res)
		for _, sp := range rp.ScopeProfiles {
			for _, p := range sp.Profiles {
				typ := str(p.SampleType.GetTypeStrindex()) + "/" + str(p.SampleType.GetUnitStrindex())
				for _, s := range p.Samples {
					var stack strings.Builder
					for _, li := range d.StackTable[s.StackIndex].LocationIndices {
						stack.WriteString(locs[li])
					}
					for i, ts := range s.TimestampsUnixNano {
						v := int64(1)
						if len(s.Values) > 0 {
							v = s.Values[i]
						}
						out = append(out, fmt.Sprintf("%s|%s|%s|%d|%d|%s", strings.Join(res, ","), attrs(s.AttributeIndices), typ, ts, v, stack.String()))
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// replayBuild builds the export the captured one describes with today's
// build.
func replayBuild(tb testing.TB, orig *collectorpb.ExportProfilesServiceRequest, systemNames, lineAddresses bool) *collectorpb.ExportProfilesServiceRequest {
	tb.Helper()
	cfg, iv, end := replay(tb, orig)
	cfg.SystemNames, cfg.LineAddresses = systemNames, lineAddresses
	r, err := New(cfg, &discardExporter{})
	if err != nil {
		tb.Fatal(err)
	}
	req, _ := r.build(iv, end)
	return req
}

// TestReplayKeepsContent rebuilds a captured export of the whole-agent
// benchmark: the rebuilt export passes otlpcheck and says exactly what
// the captured one says, sample by sample and frame by frame (without
// functions' system names unless Config.SystemNames asks for them, and
// without the addresses of frames named down to a line unless
// Config.LineAddresses asks for them; the capture has both).
func TestReplayKeepsContent(t *testing.T) {
	orig := loadReplayExport(t)
	for _, cfg := range []struct{ systemNames, lineAddresses bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		req := replayBuild(t, orig, cfg.systemNames, cfg.lineAddresses)
		if err := otlpcheck.Validate(req); err != nil {
			t.Fatal(err)
		}
		want, got := exportContent(t, orig, cfg.systemNames, cfg.lineAddresses), exportContent(t, req, true, true)
		if len(want) < 500 {
			t.Fatalf("the captured export holds %d samples, want at least 500", len(want))
		}
		if !slices.Equal(got, want) {
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Fatalf("%+v: %d samples, want %d; first difference at %d:\ngot  %.600s\nwant %.600s", cfg, len(got), len(want), i, got[i], want[i])
				}
			}
			t.Fatalf("%+v: %d samples, want %d", cfg, len(got), len(want))
		}
		// Without line addresses, no two locations say the same, and no
		// two stacks hold the same locations.
		seen := make(map[string]bool)
		for _, loc := range req.Dictionary.LocationTable[1:] {
			if !cfg.lineAddresses && loc.Address != 0 && namedToLine(loc.Lines) {
				t.Errorf("%+v: location named to a line at %#x", cfg, loc.Address)
			}
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(loc)
			if err != nil {
				t.Fatal(err)
			}
			if seen[string(b)] {
				t.Errorf("%+v: location %v twice", cfg, loc)
			}
			seen[string(b)] = true
		}
		stacks := make(map[string]bool)
		for _, st := range req.Dictionary.StackTable {
			k := fmt.Sprint(st.LocationIndices)
			if stacks[k] {
				t.Errorf("%+v: stack %s twice", cfg, k)
			}
			stacks[k] = true
		}
	}
}

var (
	replaySystemNames     = flag.Bool("replay-system-names", false, "BenchmarkReplayExport: build with Config.SystemNames")
	replayLineAddresses   = flag.Bool("replay-line-addresses", false, "BenchmarkReplayExport: build with Config.LineAddresses")
	replayExactTimestamps = flag.Bool("replay-exact-timestamps", false, "BenchmarkReplayExport: build without Config.CoarseTimestamps")
)

// BenchmarkReplayExport builds the captured export again and reports its
// size on the wire: gzip bytes per sample as the exporters send it
// (wire-B/sample) and uncompressed (B/sample). Being deterministic, it
// measures a change to build before and after on the same data.
func BenchmarkReplayExport(b *testing.B) {
	orig := loadReplayExport(b)
	n := len(exportContent(b, orig, false, false))
	var req *collectorpb.ExportProfilesServiceRequest
	b.ReportAllocs()
	for b.Loop() {
		cfg, iv, end := replay(b, orig)
		cfg.SystemNames, cfg.LineAddresses = *replaySystemNames, *replayLineAddresses
		cfg.CoarseTimestamps = !*replayExactTimestamps
		r, err := New(cfg, &discardExporter{})
		if err != nil {
			b.Fatal(err)
		}
		req, _ = r.build(iv, end)
	}
	b.ReportMetric(float64(gzipSize(b, req))/float64(n), "wire-B/sample")
	b.ReportMetric(float64(proto.Size(req))/float64(n), "B/sample")
	b.ReportMetric(float64(gzipSize(b, orig))/float64(n), "captured-wire-B/sample")
}
