package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/stackline-dev/stackline/flamegraph"
	"github.com/stackline-dev/stackline/interpreter/hotspot"
	"github.com/stackline-dev/stackline/interpreter/namecache"
	"github.com/stackline-dev/stackline/kallsyms"
	"github.com/stackline-dev/stackline/reporter"
	"github.com/stackline-dev/stackline/reporter/otlpexport"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/tracer"
)

// stats is what one scrape reads from the components.
type stats struct {
	tracer   tracer.Stats
	reporter reporter.Stats
	symbols  symbolizer.Stats
	kernel   kallsyms.Stats
	// send is the OTLP exporter's, zero with local output.
	send        otlpexport.Stats
	firstSample time.Duration
	mapBytes    uint64
	// kernelSymbolBytes is the heap of the kernel symbol table.
	kernelSymbolBytes int
	// page is the flame graph page's store, zero without --http.
	page flamegraph.StoreStats
	// jvm is the cache of Java method and compiled code names.
	jvm hotspot.CacheStats
	// node counts the naming of V8 frames; nodeCache is their caches'.
	nodeNamed, nodeUnnamed, nodeStale, nodeNoLine uint64
	nodeCache                                     namecache.Stats
	// python is the cache of Python code objects.
	python namecache.Stats
}

// metric defines one exported metric: its name (after the stackline_
// prefix), help, type and value in one scrape's stats.
type metric struct {
	name, help string
	typ        prometheus.ValueType
	value      func(*stats) float64
}

func counter(name, help string, value func(*stats) float64) metric {
	return metric{name, help, prometheus.CounterValue, value}
}

func gauge(name, help string, value func(*stats) float64) metric {
	return metric{name, help, prometheus.GaugeValue, value}
}

// bpfCounter exports the eBPF programs' counter c (enum counter of
// support/ebpf/maps.h).
func bpfCounter(c progs.StacklineCounter, name, help string) metric {
	return counter(name, help, func(s *stats) float64 { return float64(s.tracer.Counters[c]) })
}

// metrics are all the agent's own metrics. A counter added to the eBPF
// programs' enum counter is exported by one bpfCounter row here
// (TestMetricsExportEveryBPFCounter fails until it is).
var metrics = []metric{
	bpfCounter(progs.StacklineCounterCOUNTER_SAMPLES, "samples_total", "Perf events handled by the eBPF sampler."),
	bpfCounter(progs.StacklineCounterCOUNTER_IDLE, "idle_samples_total", "Samples of idle CPUs (not exported)."),
	bpfCounter(progs.StacklineCounterCOUNTER_LOST_TRACES, "lost_traces_total", "Traces dropped because the ring buffer was full."),
	bpfCounter(progs.StacklineCounterCOUNTER_LOST_EVENTS, "lost_events_total", "Process events dropped because the ring buffer was full."),
	bpfCounter(progs.StacklineCounterCOUNTER_KERNEL_STACK_ERR, "kernel_stack_errors_total", "Samples whose kernel stack could not be read (bpf_get_stack failed)."),
	counter("traces_total", "Traces received from the ring buffer.", func(s *stats) float64 { return float64(s.tracer.Traces) }),
	bpfCounter(progs.StacklineCounterCOUNTER_OFF_CPU_WAITS, "off_cpu_waits_total", "Threads blocking that off-CPU profiling sampled (--off-cpu-fraction)."),
	bpfCounter(progs.StacklineCounterCOUNTER_OFF_CPU_SHORT, "off_cpu_short_waits_total", "Sampled waits shorter than --off-cpu-threshold (not sent)."),
	bpfCounter(progs.StacklineCounterCOUNTER_OFF_CPU_FULL, "off_cpu_wait_table_full_total", "Sampled waits not recorded because 16384 sampled threads were blocked already."),
	bpfCounter(progs.StacklineCounterCOUNTER_LOST_OFF_CPU, "lost_off_cpu_traces_total", "Off-CPU traces dropped because the ring buffer was full."),
	counter("off_cpu_traces_total", "Off-CPU traces received from the ring buffer (not in traces_total).", func(s *stats) float64 { return float64(s.tracer.OffCPUTraces) }),
	counter("repeated_traces_total", "Traces reported with the frames named for the same trace earlier in the interval, without naming them again.", func(s *stats) float64 { return float64(s.tracer.RepeatedTraces) }),
	counter("decode_errors_total", "Malformed ring-buffer records.", func(s *stats) float64 { return float64(s.tracer.DecodeErrors) }),
	bpfCounter(progs.StacklineCounterCOUNTER_USER_READ_ERR, "unwind_read_errors_total", "User stack walks stopped by an unreadable frame."),
	bpfCounter(progs.StacklineCounterCOUNTER_MAX_DEPTH, "unwind_max_depth_total", "User stacks truncated at --max-stack-depth."),
	bpfCounter(progs.StacklineCounterCOUNTER_NO_MAPPING, "unwind_no_mapping_total", "User stacks ended at an address outside the process's mappings."),
	bpfCounter(progs.StacklineCounterCOUNTER_NO_CFI, "unwind_no_cfi_total", "User stacks ended at an address without unwind information."),
	bpfCounter(progs.StacklineCounterCOUNTER_NOT_READY, "unwind_not_ready_total", "User stacks of processes whose mappings were not loaded yet (their first samples)."),
	bpfCounter(progs.StacklineCounterCOUNTER_BAD_FRAME, "unwind_bad_frame_total", "User stacks ended at a corrupt frame."),
	bpfCounter(progs.StacklineCounterCOUNTER_CFI_FRAMES, "unwind_cfi_frames_total", "Frames unwound with a stack-delta table."),
	bpfCounter(progs.StacklineCounterCOUNTER_FP_FRAMES, "unwind_fp_frames_total", "Frames unwound by frame pointer (no unwind table for the code)."),
	bpfCounter(progs.StacklineCounterCOUNTER_VMA_LOOKUPS, "unwind_vma_lookups_total", "Mappings the eBPF unwinder looked up in the kernel for processes not synced yet."),
	bpfCounter(progs.StacklineCounterCOUNTER_PYTHON_FRAMES, "python_frames_total", "Python frames the eBPF unwinder emitted."),
	bpfCounter(progs.StacklineCounterCOUNTER_INTERP_ERRORS, "interpreter_read_errors_total", "Stacks whose interpreter frames the eBPF unwinder could not read."),
	bpfCounter(progs.StacklineCounterCOUNTER_NO_CFI_FP, "unwind_no_cfi_fp_frames_total", "Frames in code a file's unwind information leaves out, unwound by frame pointer."),
	bpfCounter(progs.StacklineCounterCOUNTER_JVM_FRAMES, "jvm_frames_total", "HotSpot frames the eBPF unwinder emitted."),
	bpfCounter(progs.StacklineCounterCOUNTER_JVM_ERRORS, "jvm_read_errors_total", "Stacks that stopped at a HotSpot frame whose code could not be found or read."),
	gauge("interpreter_processes", "Processes running a known interpreter (CPython).", func(s *stats) float64 { return float64(s.tracer.InterpreterProcesses) }),
	counter("interpreter_errors_total", "Interpreter files that could not be used (unsupported version, no symbols) and processes that could not be attached.", func(s *stats) float64 { return float64(s.tracer.InterpreterErrors) }),
	counter("jvm_frames_unnamed_total", "Java frames that could not be named (method or compiled code gone or changed since the sample, malformed VM data); counted, never guessed.", func(s *stats) float64 { return float64(s.jvm.Unnamed) }),
	counter("jvm_cache_hits_total", "Lookups of Java methods and compiled code answered from the cache.", func(s *stats) float64 { return float64(s.jvm.Hits) }),
	counter("jvm_cache_misses_total", "Lookups of Java methods and compiled code read from the JVM's memory.", func(s *stats) float64 { return float64(s.jvm.Misses) }),
	counter("jvm_cache_evictions_total", "Java method and compiled code entries dropped to stay within --jvm-cache-bytes and --jvm-process-cache-bytes.", func(s *stats) float64 { return float64(s.jvm.Evictions) }),
	counter("jvm_cache_expired_total", "Java method and compiled code entries dropped after --cache-ttl unused (methods recompiled or unloaded, code no longer running).", func(s *stats) float64 { return float64(s.jvm.Expired) }),
	gauge("jvm_cache_bytes", "Bytes held of Java method names, line tables and inlined methods (bounded by --jvm-cache-bytes).", func(s *stats) float64 { return float64(s.jvm.Bytes) }),
	bpfCounter(progs.StacklineCounterCOUNTER_V8JS_FRAMES, "node_frames_total", "V8 frames (JavaScript, entry, exit, stub) the eBPF frame walker emitted."),
	bpfCounter(progs.StacklineCounterCOUNTER_V8JS_ERRORS, "node_read_errors_total", "V8 JavaScript frames whose function could not be read in eBPF (left native)."),
	counter("node_frames_named_total", "JavaScript frames named (function, script, line where known).", func(s *stats) float64 { return float64(s.nodeNamed) }),
	counter("node_frames_unnamed_total", "JavaScript frames that could not be named (function moved, died or changed since the sample, or unreadable); counted, never guessed.", func(s *stats) float64 { return float64(s.nodeUnnamed) }),
	counter("node_frames_stale_total", "JavaScript frames left unnamed because their function no longer matched the sample's check value.", func(s *stats) float64 { return float64(s.nodeStale) }),
	counter("node_frames_no_line_total", "JavaScript frames named without a line (no source positions, or code replaced since the sample).", func(s *stats) float64 { return float64(s.nodeNoLine) }),
	gauge("node_cache_bytes", "Bytes held of JavaScript function names, scripts, line ends and position tables (bounded by --node-cache-bytes).", func(s *stats) float64 { return float64(s.nodeCache.Bytes) }),
	counter("node_cache_hits_total", "Lookups of JavaScript functions, scripts and code answered from the cache.", func(s *stats) float64 { return float64(s.nodeCache.Hits) }),
	counter("node_cache_misses_total", "Lookups of JavaScript functions, scripts and code read from the process's heap.", func(s *stats) float64 { return float64(s.nodeCache.Misses) }),
	counter("node_cache_evictions_total", "JavaScript cache entries dropped to stay within --node-cache-bytes and --node-process-cache-bytes.", func(s *stats) float64 { return float64(s.nodeCache.Evictions) }),
	counter("node_cache_expired_total", "JavaScript cache entries dropped after --cache-ttl unused.", func(s *stats) float64 { return float64(s.nodeCache.Expired) }),
	gauge("python_cache_bytes", "Bytes held of Python function names, files and line tables (bounded by --python-cache-bytes).", func(s *stats) float64 { return float64(s.python.Bytes) }),
	counter("python_cache_hits_total", "Lookups of Python code objects answered from the cache.", func(s *stats) float64 { return float64(s.python.Hits) }),
	counter("python_cache_misses_total", "Lookups of Python code objects read from the process's memory.", func(s *stats) float64 { return float64(s.python.Misses) }),
	counter("python_cache_evictions_total", "Python code objects dropped to stay within --python-cache-bytes and --python-process-cache-bytes.", func(s *stats) float64 { return float64(s.python.Evictions) }),
	counter("python_cache_expired_total", "Python code objects dropped after --cache-ttl unused.", func(s *stats) float64 { return float64(s.python.Expired) }),
	counter("interpreter_frames_unnamed_total", "Interpreter frames that could not be named (process exited, code object gone).", func(s *stats) float64 { return float64(s.tracer.InterpreterUnnamed) }),
	bpfCounter(progs.StacklineCounterCOUNTER_SYNC_REQUESTS, "process_sync_requests_total", "Requests of the eBPF unwinder for a process's mappings."),
	counter("process_syncs_total", "Processes' mappings given to the eBPF unwinder.", func(s *stats) float64 { return float64(s.tracer.Syncs) }),
	gauge("process_syncs_pending", "Processes waiting to be given to the eBPF unwinder.", func(s *stats) float64 { return float64(s.tracer.PendingSyncs) }),
	counter("process_sync_errors_total", "Processes' mappings that could not be given to the eBPF unwinder (map full, more than 8192 mappings).", func(s *stats) float64 { return float64(s.tracer.SyncErrors) }),
	gauge("unwind_tables", "Files whose unwind tables are loaded in eBPF.", func(s *stats) float64 { return float64(s.tracer.TablesLoaded) }),
	gauge("unwind_table_bytes", "Kernel memory of the loaded unwind tables (bounded by --max-unwind-table-bytes).", func(s *stats) float64 { return float64(s.tracer.TableBytes) }),
	gauge("process_mapping_bytes", "Kernel memory of the processes' mapping arrays.", func(s *stats) float64 { return float64(s.tracer.ProcessMapBytes) }),
	counter("unwind_tables_skipped_total", "Files unwound by frame pointer because their table did not fit in --max-unwind-table-bytes.", func(s *stats) float64 { return float64(s.tracer.TablesSkipped) }),
	counter("unwind_tables_failed_total", "Files whose call frame information could not be read.", func(s *stats) float64 { return float64(s.tracer.TablesFailed) }),
	counter("unwind_table_build_seconds_total", "Time spent building unwind tables.", func(s *stats) float64 { return s.tracer.TableBuildTime.Seconds() }),
	counter("maps_reads_total", "Reads of /proc/PID/maps.", func(s *stats) float64 { return float64(s.tracer.MapsReads) }),
	counter("unknown_mappings_total", "User addresses outside every mapping of their process.", func(s *stats) float64 { return float64(s.tracer.UnknownMappings) }),
	counter("file_errors_total", "Mapped files that could not be opened or hashed.", func(s *stats) float64 { return float64(s.tracer.FileErrors) }),
	counter("debug_file_errors_total", "Files whose separate debug file exists but was rejected for their unwind tables (other build ID, CRC mismatch, unreadable); each is logged once.", func(s *stats) float64 { return float64(s.tracer.DebugFileErrors) }),
	counter("kernel_unknown_frames_total", "Kernel frames at addresses no symbol covers (exported as [unknown]).", func(s *stats) float64 { return float64(s.tracer.UnknownKernel) }),
	counter("kernel_symbol_rereads_total", "Lazy re-reads of kernel module ranges, kallsyms and BPF programs.", func(s *stats) float64 {
		return float64(s.kernel.ModuleRereads + s.kernel.KallsymsRereads + s.kernel.BPFRereads)
	}),
	counter("kernel_namer_runs_total", "Kernel functions named by the kernel itself (a run of the kernel namer each, a few microseconds).", func(s *stats) float64 { return float64(s.kernel.NamerRuns) }),
	gauge("kernel_named_functions", "Kernel functions whose range and name are kept (bounded: 1 MiB).", func(s *stats) float64 { return float64(s.kernel.Named) }),
	gauge("kernel_modules", "Kernel modules known.", func(s *stats) float64 { return float64(s.kernel.Modules) }),
	gauge("bpf_programs", "BPF programs known (named on kernel stacks).", func(s *stats) float64 { return float64(s.kernel.BPFPrograms) }),
	gauge("processes", "Processes tracked.", func(s *stats) float64 { return float64(s.tracer.Processes) }),
	gauge("file_cache_entries", "Mapped files whose identity (htlhash, build IDs, interpreter) is cached (bounded by --executable-cache-size).", func(s *stats) float64 { return float64(s.tracer.FileCacheEntries) }),
	gauge("held_files", "Files kept open from their identification until their symbols load, for processes that exit first (at most 128, 10 s each).", func(s *stats) float64 { return float64(s.tracer.HeldFiles) }),
	gauge("parked_traces", "Traces waiting for their process to be read or their files' symbols (bounded: 4096 traces, 4 MiB, 5 s).", func(s *stats) float64 { return float64(s.tracer.ParkedTraces) }),
	counter("park_overflows_total", "Traces reported with what was known because the parked-trace buffer was full or they waited too long.", func(s *stats) float64 { return float64(s.tracer.ParkOverflows) }),
	gauge("first_sample_seconds", "Time from the agent's start to the first trace received (0 until then).", func(s *stats) float64 { return s.firstSample.Seconds() }),
	gauge("bpf_map_bytes", "Memory of the eBPF maps as the kernel charges it.", func(s *stats) float64 { return float64(s.mapBytes) }),
	counter("exports_total", "Profiles built and handed to the exporter.", func(s *stats) float64 { return float64(s.reporter.Exports) }),
	counter("export_errors_total", "Exports the exporter refused.", func(s *stats) float64 { return float64(s.reporter.ExportErrors) }),
	counter("samples_exported_total", "Samples that went out in an export.", func(s *stats) float64 { return float64(s.reporter.SamplesExported) }),
	counter("frame_cache_hits_total", "Frames the reporter already knew.", func(s *stats) float64 { return float64(s.reporter.FrameCacheHits) }),
	counter("frame_cache_misses_total", "Frames the tracer had to resolve.", func(s *stats) float64 { return float64(s.reporter.FrameCacheMisses) }),
	gauge("frame_cache_entries", "Frames the reporter's frame cache holds (bounded by --frame-cache-size).", func(s *stats) float64 { return float64(s.reporter.FrameCacheEntries) }),
	gauge("executable_cache_entries", "Files the reporter's executable cache holds (bounded by --executable-cache-size).", func(s *stats) float64 { return float64(s.reporter.ExecutableCacheEntries) }),
	gauge("frame_cache_bytes", "Bytes of frame names the reporter's frame cache holds (bounded by --frame-cache-bytes).", func(s *stats) float64 { return float64(s.reporter.FrameCacheBytes) }),
	counter("frame_cache_expired_total", "Frames dropped from the frame cache after --cache-ttl unused.", func(s *stats) float64 { return float64(s.reporter.FrameCacheExpired) }),
	counter("executable_cache_expired_total", "Files dropped from the executable cache after --cache-ttl unused.", func(s *stats) float64 { return float64(s.reporter.ExecutableCacheExpired) }),
	counter("unnamed_frames_total", "Frames exported without a name.", func(s *stats) float64 { return float64(s.reporter.UnnamedFrames) }),
	gauge("last_export_bytes", "Uncompressed size of the last export.", func(s *stats) float64 { return float64(s.reporter.LastRequestBytes) }),
	counter("symbol_files_loaded_total", "Symbol tables parsed.", func(s *stats) float64 { return float64(s.symbols.Loads) }),
	gauge("symbol_files", "Files whose symbol tables are cached (bounded by --symbol-cache-size).", func(s *stats) float64 { return float64(s.symbols.Files) }),
	gauge("symbol_bytes", "Heap bytes of the cached symbol indexes, line tables and Go inline trees (bounded by --symbol-cache-bytes).", func(s *stats) float64 { return float64(s.symbols.BytesHeld) }),
	gauge("symbol_mapped_bytes", "Bytes of files the cached symbol tables keep mapped read-only (string tables, .gopclntab: page cache, resident only where looked up).", func(s *stats) float64 { return float64(s.symbols.BytesMapped) }),
	gauge("kernel_symbol_bytes", "Heap bytes of the kernel symbol table (vmlinux, modules, BPF programs).", func(s *stats) float64 { return float64(s.kernelSymbolBytes) }),
	counter("symbol_evictions_total", "Symbol tables evicted to stay within --symbol-cache-bytes.", func(s *stats) float64 { return float64(s.symbols.Evictions) }),
	counter("symbol_dwarf_skipped_total", "Files named without file:line because their DWARF is over --max-dwarf-bytes.", func(s *stats) float64 { return float64(s.symbols.DWARFSkipped) }),
	counter("symbol_debug_file_errors_total", "Files whose separate debug file exists but was rejected for their symbols (other build ID, CRC mismatch, unreadable).", func(s *stats) float64 { return float64(s.symbols.DebugFileErrors) }),
	counter("symbol_files_too_large_total", "Files named by nothing because their symbol table alone exceeds --symbol-cache-bytes.", func(s *stats) float64 { return float64(s.symbols.TooLarge) }),
	gauge("send_queue_length", "Exports waiting for the backend.", func(s *stats) float64 { return float64(s.send.Queued) }),
	counter("sent_total", "Exports the backend accepted.", func(s *stats) float64 { return float64(s.send.Sent) }),
	counter("sent_bytes_total", "Uncompressed bytes of the exports the backend accepted.", func(s *stats) float64 { return float64(s.send.SentBytes) }),
	counter("send_dropped_total", "Exports dropped unsent (send queue full, or still queued at exit) or rejected by the backend.", func(s *stats) float64 { return float64(s.send.Dropped + s.send.Rejected) }),
	counter("send_rejected_total", "Exports the backend refused as not retryable (also counted in send_dropped_total).", func(s *stats) float64 { return float64(s.send.Rejected) }),
	counter("send_rejected_profiles_total", "Profiles the backend reported as rejected in partially successful exports.", func(s *stats) float64 { return float64(s.send.RejectedProfiles) }),
	counter("send_failures_total", "Export attempts that failed (each retry counts).", func(s *stats) float64 { return float64(s.send.Failed) }),
	counter("send_retries_total", "Export attempts retried.", func(s *stats) float64 { return float64(s.send.Retries) }),
	gauge("page_intervals", "Intervals the flame graph page holds (bounded by --http-history).", func(s *stats) float64 { return float64(s.page.Intervals) }),
	gauge("page_stacks", "Distinct stacks the flame graph page holds (bounded by --http-max-stacks).", func(s *stats) float64 { return float64(s.page.Stacks) }),
	gauge("page_bytes", "Estimated heap bytes of the flame graph page's stacks, frames and functions.", func(s *stats) float64 { return float64(s.page.Bytes) }),
}

// statsCollector exports metrics, reading each component's Stats once per
// scrape.
type statsCollector struct {
	read  func() *stats
	descs []*prometheus.Desc // by index in metrics
}

func newStatsCollector(read func() *stats) *statsCollector {
	c := &statsCollector{read: read, descs: make([]*prometheus.Desc, len(metrics))}
	for i, m := range metrics {
		c.descs[i] = prometheus.NewDesc("stackline_"+m.name, m.help, nil, nil)
	}
	return c
}

func (a *Agent) newMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatsCollector(a.readStats),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// readStats reads the components' counters for one scrape.
func (a *Agent) readStats() *stats {
	s := &stats{
		tracer:            a.tracer.Stats(),
		reporter:          a.reporter.Stats(),
		symbols:           a.symbols.Stats(),
		kernel:            a.kernel.Stats(),
		kernelSymbolBytes: a.kernel.Bytes(),
		jvm:               a.jvmCache.Stats(),
		nodeNamed:         a.node.stats.Named.Load(),
		nodeUnnamed:       a.node.stats.Unnamed.Load(),
		nodeStale:         a.node.stats.Stale.Load(),
		nodeNoLine:        a.node.stats.NoLine.Load(),
		nodeCache:         a.node.budget.Stats(),
		python:            a.pythonCache.Stats(),
	}
	s.mapBytes = a.tracer.MapMemory() + s.kernel.MapBytes
	s.firstSample = a.firstSample(s.tracer)
	if a.otlp != nil {
		s.send = a.otlp.Stats()
	}
	if a.page != nil {
		s.page = a.page.Store().Stats()
	}
	return s
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	for i, m := range metrics {
		ch <- prometheus.MustNewConstMetric(c.descs[i], m.typ, m.value(s))
	}
}
