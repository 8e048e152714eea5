package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/flamegraph"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/hotspot"
	"github.com/stackline-dev/stackline/interpreter/namecache"
	"github.com/stackline-dev/stackline/interpreter/python"
	"github.com/stackline-dev/stackline/interpreter/v8"
	"github.com/stackline-dev/stackline/kallsyms"
	"github.com/stackline-dev/stackline/reporter"
	"github.com/stackline-dev/stackline/reporter/localfile"
	"github.com/stackline-dev/stackline/reporter/otlpexport"
	"github.com/stackline-dev/stackline/reporter/otlpgrpc"
	"github.com/stackline-dev/stackline/reporter/otlphttp"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/tracer"
)

// Agent is a configured stackline. Create it with New, run it with Run.
type Agent struct {
	cfg Config
	log *slog.Logger

	kernel   *kallsyms.Table
	symbols  *symbolizer.Symbolizer
	otlp     *otlpexport.Exporter // nil with local output
	files    *localfile.Writer    // nil with an endpoint
	page     *flamegraph.Server   // nil without --http
	reporter *reporter.Reporter
	tracer   *tracer.Tracer
	jvmCache *hotspot.Cache
	// pythonCache bounds the Python processes' caches of code objects.
	pythonCache *namecache.Budget
	// node holds the V8 processes' shared cache budget and counters.
	node    nodeRuntime
	metrics *prometheus.Registry
	started time.Time
	// image is the agent's own code and read-only data, whose pages
	// trimPages drops (nil when they could not be found).
	image []imageRange
	// imageTrim says when image is trimmed.
	imageTrim imageTrim
	// memLimit is the Go runtime's memory limit, adjusted by trimLoop
	// (zero: left to the runtime).
	memLimit memoryLimit
	// gcPace lowers the garbage collector's percent when the agent
	// allocates little (see gcPacing), from trimLoop.
	gcPace gcPacing
}

// New validates cfg, loads kernel symbols and the eBPF programs, and starts
// sampling. Samples queue until Run reads them. Errors say what to change:
// a flag, a privilege or a kernel feature.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.HostName == "" {
		cfg.HostName, _ = os.Hostname()
	}
	a := &Agent{cfg: cfg, log: log, started: time.Now()}
	if err := tracer.CheckEnvironment(cfg.ProcRoot); err != nil {
		return nil, err
	}

	var err error
	a.kernel, err = kallsyms.Load(kallsyms.Options{ProcRoot: cfg.ProcRoot, SysRoot: cfg.SysRoot})
	if err != nil {
		return nil, fmt.Errorf("kernel symbols: %w", err)
	}
	if err := a.kernel.Fallback(); err != nil {
		log.Warn("kernel symbols read from /proc/kallsyms: the kernel cannot name them itself", "reason", err)
	}
	mode, _ := symbolizer.ParseDemangleMode(cfg.Demangle)
	a.symbols, err = symbolizer.New(symbolizer.Options{
		CacheSize: cfg.SymbolCacheSize,
		MaxBytes:  cfg.SymbolCacheBytes,
		Demangle:  mode,
		LineInfo:  !cfg.NoLineInfo && cfg.MaxDWARFBytes > 0,
		// A bound of its own: the DWARF of one large library parses into
		// tens of MB of short-lived garbage, paid again whenever the
		// table is evicted and needed back.
		MaxDWARFBytes: cfg.MaxDWARFBytes,
	})
	if err != nil {
		return nil, err
	}

	var exp reporter.Exporter
	if cfg.CollectionAgent != "" {
		a.otlp, err = newOTLPExporter(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("OTLP exporter: %w", err)
		}
		exp = a.otlp
	} else {
		var opts []localfile.Option
		if cfg.OffCPU {
			// Threads' timelines of CPU samples and waits.
			opts = append(opts, localfile.TraceEvents())
		}
		a.files, err = localfile.New(cfg.OutputDir, log, opts...)
		if err != nil {
			return nil, fmt.Errorf("local output: %w", err)
		}
		exp = a.files
	}
	if cfg.HTTPAddress != "" {
		a.page, err = flamegraph.New(flamegraph.Options{
			History:   cfg.HTTPHistory,
			MaxStacks: cfg.HTTPMaxStacks,
			Address:   cfg.HTTPAddress,
			Logger:    log,
		})
		if err != nil {
			a.closeExporter()
			return nil, err
		}
		exp = pageExporter{next: exp, page: a.page, log: log}
	}

	a.reporter, err = reporter.New(reporter.Config{
		Interval:            cfg.ReporterInterval,
		FrameCacheSize:      cfg.FrameCacheSize,
		ExecutableCacheSize: cfg.ExecutableCacheSize,
		FrameCacheBytes:     int(cfg.FrameCacheBytes),
		CacheTTL:            cfg.CacheTTL,
		SamplesPerSecond:    cfg.SamplesPerSecond,
		HostName:            cfg.HostName,
		ServiceName:         cfg.ServiceName,
		Version:             cfg.Version,
		ResourceAttributes:  cfg.ResourceAttributes,
		OffCPUFraction:      cfg.OffCPUFraction,
		// Local files cost no network: they keep mangled names, the
		// addresses of frames named down to a line and timestamps to
		// the nanosecond.
		SystemNames:      cfg.SystemNames || cfg.CollectionAgent == "",
		LineAddresses:    cfg.LineAddresses || cfg.CollectionAgent == "",
		CoarseTimestamps: cfg.CollectionAgent != "",
		Logger:           log,
	}, exp)
	if err != nil {
		a.closeExporter()
		return nil, err
	}

	ringSize := cfg.RingBufferSize
	if ringSize == 0 {
		ringSize = AutoRingBufferSize(cfg.SamplesPerSecond, runtime.NumCPU())
	}
	a.jvmCache = hotspot.NewCache(hotspot.CacheConfig{MaxBytes: cfg.JVMCacheBytes, MaxProcessBytes: cfg.JVMProcessCacheBytes, TTL: cfg.CacheTTL})
	a.node = nodeRuntime{budget: namecache.NewBudget(cfg.NodeCacheBytes), stats: new(v8.RuntimeStats)}
	a.node.budget.SetTTL(cfg.CacheTTL)
	a.pythonCache = namecache.NewBudget(cfg.PythonCacheBytes)
	a.pythonCache.SetTTL(cfg.CacheTTL)
	a.tracer, err = tracer.New(tracer.Config{
		SamplesPerSecond:    cfg.SamplesPerSecond,
		MaxStackDepth:       cfg.MaxStackDepth,
		MaxUnwindTableBytes: uint64(cfg.MaxUnwindTableBytes),
		RingBufferSize:      ringSize,
		FileCacheSize:       cfg.ExecutableCacheSize,
		FileCacheTTL:        cfg.CacheTTL,
		ProcRoot:            cfg.ProcRoot,
		Reporter:            a.reporter,
		Symbolizer:          a.symbols,
		Kernel:              a.kernel,
		Interpreters:        interpreters(cfg, a.pythonCache, a.jvmCache, a.node),
		OffCPU:              tracer.OffCPU{Enabled: cfg.OffCPU, Threshold: cfg.OffCPUThreshold, Fraction: cfg.OffCPUFraction},
		Logger:              log,
	})
	if err != nil {
		a.closeExporter()
		return nil, err
	}
	a.metrics = a.newMetrics()
	if cfg.MemoryLimit > 0 {
		// The garbage of table and symbol builds comes in bursts: past
		// the limit the collector runs early instead of letting the
		// heap grow to twice what is live.
		debug.SetMemoryLimit(cfg.MemoryLimit)
		a.memLimit = memoryLimit{configured: cfg.MemoryLimit, set: cfg.MemoryLimit}
	}
	if cfg.MinGCPercent > 0 {
		a.gcPace = newGCPacing(cfg.MinGCPercent, currentGCPercent())
	}
	// Building the kernel and symbol tables leaves tens of MB of garbage
	// behind, once. Hand it back now rather than carry it in the RSS until
	// the scavenger gets to it; and the pages of code and data only the
	// start ran through (flags, protobuf and gRPC registration, eBPF
	// loading) with it.
	debug.FreeOSMemory()
	if a.image, err = selfImage(); err != nil {
		log.Debug("own executable's mappings not found: its pages are not trimmed", "error", err)
	}
	a.trimPages(true)
	return a, nil
}

// firstSample is the time from the agent's start to its first trace.
func (a *Agent) firstSample(ts tracer.Stats) time.Duration {
	if ts.FirstSample.IsZero() {
		return 0
	}
	return ts.FirstSample.Sub(a.started)
}

func (a *Agent) closeExporter() {
	if a.otlp != nil {
		a.otlp.Close()
	}
}

// newOTLPExporter returns the send queue with the transport cfg asks for.
func newOTLPExporter(cfg Config, log *slog.Logger) (*otlpexport.Exporter, error) {
	target, err := cfg.exportTarget()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := otlpexport.LoadTLS(cfg.tlsFiles())
	if err != nil {
		return nil, err
	}
	ua := "stackline/" + cfg.Version
	var s otlpexport.Sender
	switch target.protocol {
	case ProtocolHTTP:
		s, err = otlphttp.New(otlphttp.Config{
			URL:           target.address,
			TLS:           tlsCfg,
			Headers:       cfg.OTLPHeaders,
			NoCompression: cfg.OTLPCompression == "none",
			UserAgent:     ua,
		})
	default:
		s, err = otlpgrpc.New(otlpgrpc.Config{
			Endpoint:      target.address,
			Insecure:      target.insecure,
			TLS:           tlsCfg,
			Headers:       cfg.OTLPHeaders,
			NoCompression: cfg.OTLPCompression == "none",
			MaxBackoff:    30 * time.Second,
			UserAgent:     ua,
		})
	}
	if err != nil {
		return nil, err
	}
	e, err := otlpexport.New(s, otlpexport.Config{
		Endpoint:   target.address,
		QueueSize:  cfg.SendQueueSize,
		Timeout:    cfg.ExportTimeout,
		MaxBackoff: 30 * time.Second,
		Logger:     log.With("protocol", target.protocol),
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	return e, nil
}

// Run profiles until ctx is done, then stops in order: sampling stops and
// the ring buffer is drained, the last interval is exported, the send queue
// is flushed within the shutdown timeout. It returns the first error that
// stopped a component early.
func (a *Agent) Run(ctx context.Context) error {
	defer a.closeExporter()
	defer a.kernel.Close() // after the tracer, which looks kernel frames up
	defer a.tracer.Close()

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()

	// The exporter outlives the reporter, which outlives the tracer.
	expCtx, stopExporter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopExporter()
	if a.otlp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.otlp.Run(expCtx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("exporter: %w", err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.trimLoop(runCtx)
	}()
	repCtx, stopReporter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReporter()
	repDone := make(chan struct{})
	go func() {
		defer close(repDone)
		if err := a.reporter.Run(repCtx); err != nil {
			errc <- fmt.Errorf("reporter: %w", err)
		}
	}()

	if a.cfg.MetricsAddress != "" {
		srv, err := a.serveMetrics()
		if err != nil {
			cancelRun()
			errc <- err
		} else {
			defer srv.Shutdown(context.Background())
		}
	}
	if a.page != nil {
		if a.cfg.HTTPAddress != a.cfg.MetricsAddress {
			srv, err := a.servePage()
			if err != nil {
				cancelRun()
				errc <- err
			} else {
				defer srv.Shutdown(context.Background())
			}
		}
		// Deferred after the servers' Shutdown, so it runs first: the
		// pages' update streams end and the servers can stop.
		defer a.page.Close()
	}

	tracerErr := a.tracer.Run(runCtx)
	if tracerErr != nil {
		errc <- tracerErr
	}
	cancelRun() // the trim loop stops too, however the tracer stopped
	// Sampling has stopped and the ring buffer is drained: export the
	// last interval, then flush what the backend has not taken yet.
	stopReporter()
	<-repDone
	stopExporter()
	wg.Wait()
	if a.otlp != nil {
		flushCtx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		if err := a.otlp.Flush(flushCtx); err != nil {
			a.log.Warn("final flush incomplete", "error", err)
		}
		cancel()
	}
	a.logSummary()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (a *Agent) serveMetrics() (*http.Server, error) {
	ln, err := net.Listen("tcp", a.cfg.MetricsAddress)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))
	// The agent's own profiles, for finding where its memory and CPU go.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	// Its execution trace: what wakes its goroutines and threads.
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// Which files have unwind tables in eBPF, their sizes, and why the
	// others have none.
	mux.HandleFunc("/debug/unwind-tables", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.tracer.Tables())
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	if a.page != nil && a.cfg.HTTPAddress == a.cfg.MetricsAddress {
		a.page.Register(mux)
		a.log.Info("serving the flame graph", "url", "http://"+ln.Addr().String()+"/")
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) // stopped by Shutdown in Run
	a.log.Info("serving metrics", "address", ln.Addr().String())
	return srv, nil
}

// servePage serves the live flame graph on --http when it is not the
// metrics server's address.
func (a *Agent) servePage() (*http.Server, error) {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddress)
	if err != nil {
		return nil, fmt.Errorf("flame graph page: %w", err)
	}
	mux := http.NewServeMux()
	a.page.Register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) // stopped by Shutdown in Run
	a.log.Info("serving the flame graph", "url", "http://"+ln.Addr().String()+"/")
	return srv, nil
}

// pageExporter hands each export to the flame graph page, then to the
// exporter. A page that cannot take an export is logged; the export goes
// on.
type pageExporter struct {
	next reporter.Exporter
	page *flamegraph.Server
	log  *slog.Logger
}

func (e pageExporter) Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	if err := e.page.Export(ctx, req); err != nil {
		e.log.Warn("flame graph page", "error", err)
	}
	return e.next.Export(ctx, req)
}

func (a *Agent) logSummary() {
	ts := a.tracer.Stats()
	rs := a.reporter.Stats()
	a.log.Info("stopped",
		"uptime", time.Since(a.started).Round(time.Millisecond),
		"first_sample", a.firstSample(ts).Round(time.Millisecond),
		"samples", ts.Counters[progs.StacklineCounterCOUNTER_SAMPLES], "traces", ts.Traces,
		"lost", ts.Counters[progs.StacklineCounterCOUNTER_LOST_TRACES]+ts.Counters[progs.StacklineCounterCOUNTER_LOST_EVENTS],
		"exports", rs.Exports, "export_errors", rs.ExportErrors)
}

// TracerStats and ReporterStats expose the components' counters (for tests
// and the whole-agent benchmark).
func (a *Agent) TracerStats() tracer.Stats { return a.tracer.Stats() }

// ReporterStats returns the reporter's counters.
func (a *Agent) ReporterStats() reporter.Stats { return a.reporter.Stats() }

// Metrics returns the agent's Prometheus registry.
func (a *Agent) Metrics() *prometheus.Registry { return a.metrics }

// interpreters returns the runtimes whose frames the tracer unwinds.
func interpreters(cfg Config, py *namecache.Budget, jvm *hotspot.Cache, node nodeRuntime) []interpreter.Runtime {
	var rts []interpreter.Runtime
	if !cfg.NoPython {
		rts = append(rts, python.Runtime{Budget: py, ProcessCacheBytes: cfg.PythonProcessCacheBytes})
	}
	if !cfg.NoJava {
		rts = append(rts, hotspot.Runtime{Cache: jvm})
	}
	if !cfg.NoNode {
		rts = append(rts, v8.Runtime{Budget: node.budget, ProcessCacheBytes: cfg.NodeProcessCacheBytes, Stats: node.stats})
	}
	return rts
}

// nodeRuntime is what the V8 processes share: their caches' byte budget
// and the naming counters.
type nodeRuntime struct {
	budget *namecache.Budget
	stats  *v8.RuntimeStats
}
