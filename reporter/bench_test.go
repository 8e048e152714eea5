package reporter

import (
	"context"
	"runtime"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/reporter/deflate"
	"github.com/stackline-dev/stackline/trace"
)

type discardExporter struct {
	bytes int
	last  *collectorpb.ExportProfilesServiceRequest
}

func (d *discardExporter) Export(_ context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	d.bytes = proto.Size(req)
	d.last = req
	return nil
}

// gzipSize is the size of req marshalled and gzipped as the exporters send
// it (package deflate).
func gzipSize(b *testing.B, req *collectorpb.ExportProfilesServiceRequest) int {
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	out, err := deflate.NewEncoder().AppendGzip(nil, raw)
	if err != nil {
		b.Fatal(err)
	}
	return len(out)
}

// benchTraces makes n distinct 20-frame stacks over a shared pool of frames,
// as a host running a few programs produces.
func benchTraces(n int) []*trace.Trace {
	traces := make([]*trace.Trace, n)
	for i := range traces {
		tr := &trace.Trace{}
		for j := range 20 {
			addr := uint64(j*1000 + (i*7+j)%50)
			if j == 0 {
				addr = uint64(1<<20 + i) // distinct leaf: distinct stack
			}
			tr.Frames = append(tr.Frames, trace.FrameID{File: fileID(j % 5), Addr: addr, Type: trace.FrameNative})
		}
		traces[i] = tr
	}
	return traces
}

// benchReporter returns a reporter with a frame cache of frameCache
// entries that knows the frames of 1000 traces, the traces and their
// metadata.
func benchReporter(b *testing.B, frameCache int) (*Reporter, []*trace.Trace, trace.TraceMeta) {
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = frameCache, 4096
	r, err := New(cfg, &discardExporter{})
	if err != nil {
		b.Fatal(err)
	}
	traces := benchTraces(1000)
	for _, tr := range traces {
		for _, f := range tr.Frames {
			resolve(r, f)
		}
	}
	meta := trace.TraceMeta{PID: 1, TID: 1, Comm: "w", Process: &trace.ProcessMeta{ContainerID: "c0ffee", RuntimeName: "go"}}
	return r, traces, meta
}

// BenchmarkReportTrace is the tracer's per-sample path: ask for each frame
// and executable, then report.
func BenchmarkReportTrace(b *testing.B) {
	r, traces, meta := benchReporter(b, 65536)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		tr := traces[i%len(traces)]
		for _, f := range tr.Frames {
			r.FrameKnown(f)
			r.ExecutableKnown(f.File)
		}
		meta.TimestampNS = uint64(i)
		r.ReportTrace(tr, meta)
		if i%100000 == 99999 {
			r.Flush(context.Background())
		}
	}
}

// BenchmarkReportTraceCold is BenchmarkReportTrace as the agent runs it:
// a few traces at a time (what arrived since the reader last woke), with
// the caches taken by other work in between, which every op evicts. An op
// is 4 traces; cpu-ns/trace is the thread's CPU time in the traces alone,
// without the eviction (CPU time rather than wall time: other work on a
// shared host does not count).
func BenchmarkReportTraceCold(b *testing.B) {
	r, traces, meta := benchReporter(b, 16384)
	evict := make([]byte, 16<<20)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var spent int64
	n := 0
	for i := range b.N {
		for j := 0; j < len(evict); j += 64 {
			evict[j]++
		}
		start := threadCPU(b)
		for range 4 {
			tr := traces[(n*7919)%len(traces)]
			for _, f := range tr.Frames {
				r.FrameKnown(f)
				r.ExecutableKnown(f.File)
			}
			meta.TimestampNS = uint64(n)
			r.ReportTrace(tr, meta)
			n++
		}
		spent += threadCPU(b) - start
		if i%2000 == 1999 {
			r.Flush(context.Background())
		}
	}
	b.ReportMetric(float64(spent)/float64(n), "cpu-ns/trace")
}

// threadCPU returns the CPU time of the calling thread in nanoseconds.
func threadCPU(tb testing.TB) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		tb.Fatal(err)
	}
	return ts.Nano()
}

func benchmarkBuild(b *testing.B, stacks int) {
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = 1<<20, 4096
	exp := &discardExporter{}
	r, err := New(cfg, exp)
	if err != nil {
		b.Fatal(err)
	}
	traces := benchTraces(stacks)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for i, tr := range traces {
			for _, f := range tr.Frames {
				resolve(r, f)
			}
			r.ReportTrace(tr, trace.TraceMeta{PID: uint32(1 + i%10), TID: uint32(i % 40), Comm: "w", TimestampNS: uint64(i)})
		}
		b.StartTimer()
		r.Flush(context.Background())
	}
	b.ReportMetric(float64(exp.bytes)/float64(stacks), "bytes/sample")
	b.ReportMetric(float64(gzipSize(b, exp.last))/float64(stacks), "gzip-bytes/sample")
}

func BenchmarkBuild1k(b *testing.B)   { benchmarkBuild(b, 1000) }
func BenchmarkBuild100k(b *testing.B) { benchmarkBuild(b, 100000) }

// BenchmarkNew makes a reporter with the agent's default cache sizes; its
// B/op is the heap an idle reporter's caches take.
func BenchmarkNew(b *testing.B) {
	cfg := testConfig()
	cfg.FrameCacheSize, cfg.ExecutableCacheSize = 16384, 4096
	cfg.CacheTTL = time.Minute
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(cfg, &captureExporter{}); err != nil {
			b.Fatal(err)
		}
	}
}
