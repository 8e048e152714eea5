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
	"unsafe"

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
	// FrameCacheBytes bounds the names the frame cache holds, in bytes
	// as FrameInfoBytes counts them (--frame-cache-bytes); 0 means no
	// bound but FrameCacheSize.
	FrameCacheBytes int
	// CacheTTL is how long a frame or executable stays cached unused
	// (--cache-ttl): once the processes that used them are gone, both
	// caches shrink back to what is still sampled. 0 means never.
	CacheTTL time.Duration
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
	// SystemNames sends a function's name as the binary spells it (a
	// mangled C++ or Rust name), when it differs from its name, as its
	// system_name (--system-names). Without it functions carry their
	// (demangled) name only, and two that differ only by their system
	// name are one function.
	SystemNames bool
	// LineAddresses keeps the instruction address of frames named down
	// to a source line (--line-addresses). Without it such a frame's
	// location has no address, and one location stands for every
	// address of one line (with the calls inlined there): the function,
	// file and line say where it ran. Frames named by their symbol only,
	// and unnamed ones, always keep their address, from which a backend
	// with the file's debug information can name them further.
	LineAddresses bool
	// CoarseTimestamps rounds the timestamps of samples and waits down
	// to a multiple of 1,024 ns. A sample is taken in an interrupt some
	// microseconds after its timer expired, so finer digits are noise;
	// the 8 bytes of a timestamp are about a sixth of a compressed
	// export, and a low byte that is always zero takes gzip about a
	// byte less per sample.
	CoarseTimestamps bool
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
	if c.FrameCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("frame cache bytes %d: must not be negative", c.FrameCacheBytes))
	}
	if c.CacheTTL < 0 {
		errs = append(errs, fmt.Errorf("cache TTL %v: must not be negative", c.CacheTTL))
	}
	if c.OffCPUFraction < 0 || c.OffCPUFraction > 1 {
		errs = append(errs, fmt.Errorf("off-CPU fraction %v: must be within (0, 1]", c.OffCPUFraction))
	}
	if c.SamplesPerSecond < 1 {
		errs = append(errs, fmt.Errorf("samples per second %d: must be at least 1", c.SamplesPerSecond))
	}
	return errors.Join(errs...)
}

// Reporter implements the tracer's reporting contract. It is safe for
// concurrent use.
type Reporter struct {
	cfg      Config
	log      *slog.Logger
	exporter Exporter

	mu     sync.Mutex
	frames *growingLRU[trace.FrameID, trace.FrameInfo]
	execs  *growingLRU[trace.FileID, trace.ExecutableInfo]
	// frameBytes is what the frame cache's entries hold, as
	// FrameInfoBytes counts it; kept by frameEvicted and FrameMetadata.
	frameBytes int
	// lastPurge is when expired entries were last dropped.
	lastPurge time.Time
	cur       *interval
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
	// framesDropped and execsDropped count entries leaving the caches
	// for any reason; framesExpired and execsExpired those purged after
	// CacheTTL unused.
	framesDropped, execsDropped, framesExpired, execsExpired atomic.Uint64
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
	// FrameCacheBytes is what the frame cache's names take
	// (FrameInfoBytes summed over its entries).
	FrameCacheBytes uint64
	// FrameCacheExpired and ExecutableCacheExpired count entries dropped
	// after CacheTTL unused.
	FrameCacheExpired, ExecutableCacheExpired uint64
}

// FrameInfoBytes is the memory a cached frame's metadata takes, as the
// frame cache counts it against Config.FrameCacheBytes: its lines and
// their strings (strings shared with other frames are counted for each).
func FrameInfoBytes(info trace.FrameInfo) int {
	n := len(info.Lines) * int(unsafe.Sizeof(trace.Line{}))
	for _, l := range info.Lines {
		n += len(l.Function) + len(l.SystemName) + len(l.File)
	}
	return n
}

func hashFrameID(id trace.FrameID) uint32 {
	// The FileID is a SHA-256 prefix, so its bytes are already mixed.
	h := binary.LittleEndian.Uint64(id.File[:8]) ^ (id.Addr * 0x9e3779b97f4a7c15) ^ uint64(id.Type)<<56
	return uint32(h ^ h>>32)
}

func hashFileID(id trace.FileID) uint32 {
	return binary.LittleEndian.Uint32(id[:4])
}

// New returns a Reporter that hands each interval's request to exporter.
func New(cfg Config, exporter Exporter) (*Reporter, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("reporter: %w", err)
	}
	if exporter == nil {
		return nil, errors.New("reporter: no exporter")
	}
	frames, err := newGrowingLRU[trace.FrameID, trace.FrameInfo](initialFrameCache, uint32(cfg.FrameCacheSize), hashFrameID, cfg.CacheTTL)
	if err != nil {
		return nil, fmt.Errorf("reporter: frame cache: %w", err)
	}
	execs, err := newGrowingLRU[trace.FileID, trace.ExecutableInfo](initialExecutableCache, uint32(cfg.ExecutableCacheSize), hashFileID, cfg.CacheTTL)
	if err != nil {
		return nil, fmt.Errorf("reporter: executable cache: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	now := time.Now()
	r := &Reporter{
		cfg:       cfg,
		log:       log,
		exporter:  exporter,
		frames:    frames,
		execs:     execs,
		lastPurge: now,
		cur:       newInterval(1, now, 0),
	}
	frames.SetOnEvict(r.frameEvicted)
	execs.SetOnEvict(func(trace.FileID, trace.ExecutableInfo) { r.stats.execsDropped.Add(1) })
	return r, nil
}

// The caches start with room for this many entries and grow, as they fill,
// to FrameCacheSize and ExecutableCacheSize: a frame entry takes about 90
// bytes and an executable entry about 180 even when unused.
const (
	initialFrameCache      = 1024
	initialExecutableCache = 256
)

// frameEvicted keeps the frame cache's byte count when an entry leaves it
// (for room, expired, or removed). The cache calls it with r.mu held.
func (r *Reporter) frameEvicted(_ trace.FrameID, info trace.FrameInfo) {
	r.frameBytes -= FrameInfoBytes(info)
	r.stats.framesDropped.Add(1)
}

// getFrame looks id up in the frame cache; a hit counts as a use, which
// restarts the entry's CacheTTL. The caller holds r.mu.
func (r *Reporter) getFrame(id trace.FrameID) (trace.FrameInfo, bool) {
	if r.cfg.CacheTTL > 0 {
		return r.frames.GetAndRefresh(id, r.cfg.CacheTTL)
	}
	return r.frames.Get(id)
}

// getExec is getFrame for the executable cache.
func (r *Reporter) getExec(id trace.FileID) (trace.ExecutableInfo, bool) {
	if r.cfg.CacheTTL > 0 {
		return r.execs.GetAndRefresh(id, r.cfg.CacheTTL)
	}
	return r.execs.Get(id)
}

// purgeExpired drops the entries unused for CacheTTL, at most once a
// second (or a quarter of CacheTTL): a cache keeps an expired entry until
// it is purged. The caller holds r.mu.
func (r *Reporter) purgeExpired(now time.Time) {
	if r.cfg.CacheTTL <= 0 || now.Sub(r.lastPurge) < min(time.Second, r.cfg.CacheTTL/4) {
		return
	}
	r.lastPurge = now
	r.purge()
}

// purge drops the expired entries of both caches now. The caller holds
// r.mu.
func (r *Reporter) purge() {
	frames, execs := r.stats.framesDropped.Load(), r.stats.execsDropped.Load()
	r.frames.PurgeExpired()
	r.execs.PurgeExpired()
	r.stats.framesExpired.Add(r.stats.framesDropped.Load() - frames)
	r.stats.execsExpired.Add(r.stats.execsDropped.Load() - execs)
}

// makeRoom grows a full cache that may grow, once its expired entries are
// gone, before an entry that is not in it is added. The caller holds r.mu.
func makeRoom[K comparable, V any](r *Reporter, c *growingLRU[K, V], key K) {
	if !c.full() || c.Contains(key) {
		return
	}
	if r.cfg.CacheTTL > 0 {
		r.purge()
	}
	if c.full() {
		c.grow()
	}
}

// FrameKnown reports whether the reporter holds metadata for id. When it
// returns true the metadata is pinned until the intervals that may
// reference it are exported, so the caller need not resolve the frame.
func (r *Reporter) FrameKnown(id trace.FrameID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.cur.frames.has(id) {
		info, ok := r.getFrame(id)
		if !ok {
			r.stats.frameMisses.Add(1)
			return false
		}
		r.cur.frames.put(id, info)
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
	r.cur.frames.put(id, info)
	r.promiseFrame(id)
	size := FrameInfoBytes(info)
	if r.cfg.FrameCacheBytes > 0 && size > r.cfg.FrameCacheBytes {
		// Held by the interval only: the promise stands, the cache
		// would hold nothing else.
		r.frames.Remove(id)
		return
	}
	makeRoom(r, r.frames, id)
	if old, ok := r.frames.Peek(id); ok {
		r.frameBytes -= FrameInfoBytes(old)
	}
	r.frameBytes += size
	r.frames.Add(id, info)
	for r.cfg.FrameCacheBytes > 0 && r.frameBytes > r.cfg.FrameCacheBytes {
		if _, _, ok := r.frames.RemoveOldest(); !ok {
			break
		}
	}
}

// ExecutableKnown reports whether the reporter holds metadata for the file
// id; true pins it like FrameKnown.
func (r *Reporter) ExecutableKnown(id trace.FileID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cur.execs[id]; !ok {
		info, ok := r.getExec(id)
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
	makeRoom(r, r.execs, id)
	r.execs.Add(id, info)
	r.cur.execs[id] = info
	r.promiseExec(id)
}

// ReportTrace adds one sampled trace to the current interval and ends the
// promises made for it. The reporter copies what it keeps; t may be reused
// by the caller.
func (r *Reporter) ReportTrace(t *trace.Trace, meta trace.TraceMeta) {
	r.ReportTraceIn(t, meta)
}

// ReportTraceIn is ReportTrace, and returns the interval the trace went
// in: the metadata of its frames and executables (what FrameKnown and
// ExecutableKnown said true to, or FrameMetadata and ExecutableMetadata
// gave, since the last trace reported) is pinned there, for ReportAgain.
func (r *Reporter) ReportTraceIn(t *trace.Trace, meta trace.TraceMeta) uint64 {
	r.stats.traces.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pendingFrames = r.pendingFrames[:0]
	r.pendingExecs = r.pendingExecs[:0]
	r.cur.add(t.Frames, &meta)
	return r.cur.id
}

// ReportAgain reports a trace whose frames are those of a trace that
// ReportTraceIn reported in interval, without asking about them again:
// their metadata is pinned there. When that interval is over (exported,
// or being exported) it reports nothing and returns false: the caller
// asks about the frames again, as for a new trace.
func (r *Reporter) ReportAgain(t *trace.Trace, meta trace.TraceMeta, interval uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur.id != interval {
		return false
	}
	r.stats.traces.Add(1)
	r.pendingFrames = r.pendingFrames[:0]
	r.pendingExecs = r.pendingExecs[:0]
	r.cur.add(t.Frames, &meta)
	return true
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
	r.purgeExpired(now)
	done := r.cur
	r.cur = newInterval(done.id+1, now, done.frames.len())
	// Promises made for a trace not yet reported move to the new
	// interval, which that trace will land in.
	for _, id := range r.pendingFrames {
		if info, ok := done.frames.get(id); ok {
			r.cur.frames.put(id, info)
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
	r.mu.Lock()
	frames, execs, frameBytes := r.frames.Len(), r.execs.Len(), r.frameBytes
	r.mu.Unlock()
	return Stats{
		Traces:                 r.stats.traces.Load(),
		SamplesExported:        r.stats.samplesExported.Load(),
		Exports:                r.stats.exports.Load(),
		ExportErrors:           r.stats.exportErrors.Load(),
		FrameCacheHits:         r.stats.frameHits.Load(),
		FrameCacheMisses:       r.stats.frameMisses.Load(),
		UnnamedFrames:          r.stats.unnamedFrames.Load(),
		LastRequestBytes:       r.stats.lastRequestBytes.Load(),
		FrameCacheEntries:      uint64(frames),
		ExecutableCacheEntries: uint64(execs),
		FrameCacheBytes:        uint64(max(frameBytes, 0)),
		FrameCacheExpired:      r.stats.framesExpired.Load(),
		ExecutableCacheExpired: r.stats.execsExpired.Load(),
	}
}
