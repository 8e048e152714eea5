// Package reporter owns the symbol cache, folds traces into samples per
// interval and builds one self-contained OTLP profiles request per interval,
// which it hands to an Exporter.
//
// The tracer asks the reporter before it does expensive work: FrameKnown and
// ExecutableKnown. An answer of true is a promise: the metadata stays held
// until every interval that references it has been exported, so an evicted
// cache entry only ever costs a re-resolve, never a missing symbol.
package reporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/go-freelru"
	"github.com/hashicorp/golang-lru/v2/expirable"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/trace"
)

// Exporter sends or stores one request. Export must not block for long: the
// reporter calls it once per interval from its own goroutine.
type Exporter interface {
	Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) error
}

// Config configures a Reporter.
type Config struct {
	// Interval is how often an export is built (--reporter-interval).
	Interval time.Duration
	// FrameCacheSize bounds the frame metadata cache (--frame-cache-size).
	FrameCacheSize int
	// ExecutableCacheSize bounds the executable metadata cache
	// (--executable-cache-size).
	ExecutableCacheSize int
	// SamplesPerSecond is the sampling rate; it sets the profile's period.
	SamplesPerSecond int
	// HostName is the host.name resource attribute.
	HostName string
	// ServiceName is the service.name resource attribute; when empty each
	// process gets "unknown_service:<executable name>".
	ServiceName string
	// Version is the agent version, sent as the instrumentation scope's.
	Version string
	// ResourceAttributes are added to every resource
	// (OTEL_RESOURCE_ATTRIBUTES); on a key clash, the attributes the
	// reporter sets itself win.
	ResourceAttributes map[string]string
	// OffCPUFraction is the share of waits the tracer samples
	// (--off-cpu-fraction): off-CPU values are scaled up by its inverse.
	// 0 means 1.
	OffCPUFraction float64
	// Logger receives warnings; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v: must be positive", c.Interval))
	}
	if c.FrameCacheSize < 1 {
		errs = append(errs, fmt.Errorf("frame cache size %d: must be at least 1", c.FrameCacheSize))
	}
	if c.ExecutableCacheSize < 1 {
		errs = append(errs, fmt.Errorf("executable cache size %d: must be at least 1", c.ExecutableCacheSize))
	}
	if c.OffCPUFraction < 0 || c.OffCPUFraction > 1 {
		errs = append(errs, fmt.Errorf("off-CPU fraction %v: must be within (0, 1]", c.OffCPUFraction))
	}
	if c.SamplesPerSecond < 1 {
		errs = append(errs, fmt.Errorf("samples per second %d: must be at least 1", c.SamplesPerSecond))
	}
	return errors.Join(errs...)
}

// executableTTL is how long executable metadata stays cached unused.
const executableTTL = time.Hour

// Reporter implements the tracer's reporting contract. It is safe for
// concurrent use.
type Reporter struct {
	cfg      Config
	log      *slog.Logger
	exporter Exporter

	mu     sync.Mutex
	frames *freelru.LRU[trace.FrameID, trace.FrameInfo]
	execs  *expirable.LRU[trace.FileID, trace.ExecutableInfo]
	cur    *interval
	// pendingFrames and pendingExecs are what was promised (FrameKnown
	// true, or FrameMetadata) since the last ReportTrace. A trace is
	// resolved frame by frame and then reported; when intervals switch in
	// between, these are pinned again in the new interval, so the promise
	// holds across any number of switches. The tracer reports from one
	// goroutine, which makes "since the last ReportTrace" exact.
	pendingFrames []trace.FrameID
	pendingExecs  []trace.FileID

	stats stats
}

type stats struct {
	traces, samplesExported, exports, exportErrors, unnamedFrames atomic.Uint64
	frameHits, frameMisses                                        atomic.Uint64
	lastRequestBytes                                              atomic.Uint64
}

// Stats are the reporter's self-metrics.
type Stats struct {
	// Traces is the number of traces reported.
	Traces uint64
	// SamplesExported counts traces that went out in an export.
	SamplesExported uint64
	// Exports and ExportErrors count Exporter.Export calls and failures.
	Exports, ExportErrors uint64
	// FrameCacheHits and FrameCacheMisses count FrameKnown answers.
	FrameCacheHits, FrameCacheMisses uint64
	// UnnamedFrames counts frames exported without metadata because the
	// tracer reported them without resolving them.
	UnnamedFrames uint64
	// LastRequestBytes is the uncompressed size of the last request.
	LastRequestBytes uint64
	// FrameCacheEntries and ExecutableCacheEntries are the entries the
	// frame and executable caches hold now.
	FrameCacheEntries, ExecutableCacheEntries uint64
}

func hashFrameID(id trace.FrameID) uint32 {
	// The FileID is a SHA-256 prefix, so its bytes are already mixed.
	h := binary.LittleEndian.Uint64(id.File[:8]) ^ (id.Addr * 0x9e3779b97f4a7c15) ^ uint64(id.Type)<<56
	return uint32(h ^ h>>32)
}

// New returns a Reporter that hands each interval's request to exporter.
func New(cfg Config, exporter Exporter) (*Reporter, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("reporter: %w", err)
	}
	if exporter == nil {
		return nil, errors.New("reporter: no exporter")
	}
	frames, err := freelru.New[trace.FrameID, trace.FrameInfo](uint32(cfg.FrameCacheSize), hashFrameID)
	if err != nil {
		return nil, fmt.Errorf("reporter: frame cache: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Reporter{
		cfg:      cfg,
		log:      log,
		exporter: exporter,
		frames:   frames,
		execs:    expirable.NewLRU[trace.FileID, trace.ExecutableInfo](cfg.ExecutableCacheSize, nil, executableTTL),
		cur:      newInterval(time.Now()),
	}, nil
}

// FrameKnown reports whether the reporter holds metadata for id. When it
// returns true the metadata is pinned until the intervals that may
// reference it are exported, so the caller need not resolve the frame.
func (r *Reporter) FrameKnown(id trace.FrameID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cur.frames[id]; !ok {
		info, ok := r.frames.Get(id)
		if !ok {
			r.stats.frameMisses.Add(1)
			return false
		}
		r.cur.frames[id] = info
	}
	r.stats.frameHits.Add(1)
	r.promiseFrame(id)
	return true
}

// promiseFrame and promiseExec record a promise until the next ReportTrace.
// The lists are bounded: a caller that never reports cannot grow them.
func (r *Reporter) promiseFrame(id trace.FrameID) {
	if len(r.pendingFrames) < maxPending {
		r.pendingFrames = append(r.pendingFrames, id)
	}
}

func (r *Reporter) promiseExec(id trace.FileID) {
	if len(r.pendingExecs) < maxPending {
		r.pendingExecs = append(r.pendingExecs, id)
	}
}

// maxPending bounds the promises held between two ReportTrace calls; a
// trace has at most a few hundred frames.
const maxPending = 4096

// FrameMetadata stores the metadata of id, in the cache and pinned in the
// current interval.
func (r *Reporter) FrameMetadata(id trace.FrameID, info trace.FrameInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames.Add(id, info)
	r.cur.frames[id] = info
	r.promiseFrame(id)
}

// ExecutableKnown reports whether the reporter holds metadata for the file
// id; true pins it like FrameKnown.
func (r *Reporter) ExecutableKnown(id trace.FileID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cur.execs[id]; !ok {
		info, ok := r.execs.Get(id)
		if !ok {
			return false
		}
		r.cur.execs[id] = info
	}
	r.promiseExec(id)
	return true
}

// ExecutableMetadata stores the metadata of the file id.
func (r *Reporter) ExecutableMetadata(id trace.FileID, info trace.ExecutableInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.execs.Add(id, info)
	r.cur.execs[id] = info
	r.promiseExec(id)
}

// ReportTrace adds one sampled trace to the current interval and ends the
// promises made for it. The reporter copies what it keeps; t may be reused
// by the caller.
func (r *Reporter) ReportTrace(t *trace.Trace, meta trace.TraceMeta) {
	r.stats.traces.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pendingFrames = r.pendingFrames[:0]
	r.pendingExecs = r.pendingExecs[:0]
	r.cur.add(t.Frames, &meta)
}

// Run exports an interval every cfg.Interval until ctx is done, then exports
// the last (partial) interval, with a context that is not cancelled, and
// returns. A failed periodic export is logged and counted and Run goes on;
// the final export's failure is returned, since nothing comes after it.
func (r *Reporter) Run(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// The final flush: the interval in progress is not lost.
			if err := r.Flush(context.WithoutCancel(ctx)); err != nil {
				return fmt.Errorf("final export: %w", err)
			}
			return nil
		case <-tick.C:
			r.Flush(ctx) // logged and counted there
		}
	}
}

// Flush closes the current interval, builds its request and hands it to the
// exporter. An interval without samples is not exported. The exporter's
// error is logged, counted and returned.
func (r *Reporter) Flush(ctx context.Context) error {
	now := time.Now()
	r.mu.Lock()
	done := r.cur
	r.cur = newInterval(now)
	// Promises made for a trace not yet reported move to the new
	// interval, which that trace will land in.
	for _, id := range r.pendingFrames {
		if info, ok := done.frames[id]; ok {
			r.cur.frames[id] = info
		}
	}
	for _, id := range r.pendingExecs {
		if info, ok := done.execs[id]; ok {
			r.cur.execs[id] = info
		}
	}
	r.mu.Unlock()

	if len(done.samples) == 0 {
		return nil
	}
	req, unnamed := r.build(done, now)
	r.stats.unnamedFrames.Add(uint64(unnamed))
	r.stats.samplesExported.Add(uint64(done.numTraces))
	r.stats.exports.Add(1)
	r.stats.lastRequestBytes.Store(uint64(protoSize(req)))
	if err := r.exporter.Export(ctx, req); err != nil {
		r.stats.exportErrors.Add(1)
		r.log.Warn("export failed", "error", err, "samples", done.numTraces)
		return fmt.Errorf("export of %d samples: %w", done.numTraces, err)
	}
	return nil
}

// Stats returns the reporter's counters.
func (r *Reporter) Stats() Stats {
	return Stats{
		Traces:           r.stats.traces.Load(),
		SamplesExported:  r.stats.samplesExported.Load(),
		Exports:          r.stats.exports.Load(),
		ExportErrors:     r.stats.exportErrors.Load(),
		FrameCacheHits:   r.stats.frameHits.Load(),
		FrameCacheMisses: r.stats.frameMisses.Load(),
		UnnamedFrames:    r.stats.unnamedFrames.Load(),
		LastRequestBytes: r.stats.lastRequestBytes.Load(),
		// Both caches are safe for concurrent use.
		FrameCacheEntries:      uint64(r.frames.Len()),
		ExecutableCacheEntries: uint64(r.execs.Len()),
	}
}
