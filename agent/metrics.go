package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// statsCollector turns the components' counters into Prometheus metrics,
// reading each component's Stats once per scrape.
type statsCollector struct {
	a     *Agent
	descs map[string]*prometheus.Desc
}

type metricDef struct {
	name, help string
	counter    bool
}

var metricDefs = []metricDef{
	{"samples_total", "Perf events handled by the eBPF sampler.", true},
	{"idle_samples_total", "Samples of idle CPUs (not exported).", true},
	{"lost_traces_total", "Traces dropped because the ring buffer was full.", true},
	{"lost_events_total", "Process events dropped because the ring buffer was full.", true},
	{"traces_total", "Traces received from the ring buffer.", true},
	{"decode_errors_total", "Malformed ring-buffer records.", true},
	{"unwind_read_errors_total", "User stack walks stopped by an unreadable frame.", true},
	{"unwind_max_depth_total", "User stacks truncated at --max-stack-depth.", true},
	{"unwind_no_mapping_total", "User stacks ended at an address outside the process's mappings.", true},
	{"unwind_no_cfi_total", "User stacks ended at an address without unwind information.", true},
	{"unwind_not_ready_total", "User stacks of processes whose mappings were not loaded yet (their first samples).", true},
	{"unwind_bad_frame_total", "User stacks ended at a corrupt frame.", true},
	{"unwind_cfi_frames_total", "Frames unwound with a stack-delta table.", true},
	{"unwind_fp_frames_total", "Frames unwound by frame pointer (no unwind table for the code).", true},
	{"unwind_vma_lookups_total", "Mappings the eBPF unwinder looked up in the kernel for processes not synced yet.", true},
	{"python_frames_total", "Python frames the eBPF unwinder emitted.", true},
	{"interpreter_read_errors_total", "Stacks whose interpreter frames the eBPF unwinder could not read.", true},
	{"interpreter_processes", "Processes running a known interpreter (CPython).", false},
	{"interpreter_errors_total", "Interpreter files that could not be used (unsupported version, no symbols) and processes that could not be attached.", true},
	{"interpreter_frames_unnamed_total", "Interpreter frames that could not be named (process exited, code object gone).", true},
	{"process_sync_requests_total", "Requests of the eBPF unwinder for a process's mappings.", true},
	{"process_syncs_total", "Processes' mappings given to the eBPF unwinder.", true},
	{"process_syncs_pending", "Processes waiting to be given to the eBPF unwinder.", false},
	{"process_sync_errors_total", "Processes' mappings that could not be given to the eBPF unwinder (map full, more than 8192 mappings).", true},
	{"unwind_tables", "Files whose unwind tables are loaded in eBPF.", false},
	{"unwind_table_bytes", "Kernel memory of the loaded unwind tables (bounded by --max-unwind-table-bytes).", false},
	{"process_mapping_bytes", "Kernel memory of the processes' mapping arrays.", false},
	{"unwind_tables_skipped_total", "Files unwound by frame pointer because their table did not fit in --max-unwind-table-bytes.", true},
	{"unwind_tables_failed_total", "Files whose call frame information could not be read.", true},
	{"unwind_table_build_seconds_total", "Time spent building unwind tables.", true},
	{"maps_reads_total", "Reads of /proc/PID/maps.", true},
	{"unknown_mappings_total", "User addresses outside every mapping of their process.", true},
	{"file_errors_total", "Mapped files that could not be opened or hashed.", true},
	{"kernel_unknown_frames_total", "Kernel frames at addresses no symbol covers (exported as [unknown]).", true},
	{"kernel_symbol_rereads_total", "Lazy re-reads of kernel module ranges, kallsyms and BPF programs.", true},
	{"kernel_modules", "Kernel modules known.", false},
	{"bpf_programs", "BPF programs known (named on kernel stacks).", false},
	{"processes", "Processes tracked.", false},
	{"first_sample_seconds", "Time from the agent's start to the first trace received (0 until then).", false},
	{"bpf_map_bytes", "Memory of the eBPF maps as the kernel charges it.", false},
	{"exports_total", "Profiles built and handed to the exporter.", true},
	{"export_errors_total", "Exports the exporter refused.", true},
	{"samples_exported_total", "Samples that went out in an export.", true},
	{"frame_cache_hits_total", "Frames the reporter already knew.", true},
	{"frame_cache_misses_total", "Frames the tracer had to resolve.", true},
	{"unnamed_frames_total", "Frames exported without a name.", true},
	{"last_export_bytes", "Uncompressed size of the last export.", false},
	{"symbol_files_loaded_total", "Symbol tables parsed.", true},
	{"symbol_bytes", "Bytes held by symbol tables.", false},
	{"symbol_evictions_total", "Symbol tables evicted to stay within --symbol-cache-bytes.", true},
	{"symbol_dwarf_skipped_total", "Files named without file:line because their DWARF is over --max-dwarf-bytes.", true},
	{"send_queue_length", "Exports waiting for the backend.", false},
	{"sent_total", "Exports the backend accepted.", true},
	{"sent_bytes_total", "Uncompressed bytes of the exports the backend accepted.", true},
	{"send_dropped_total", "Exports dropped unsent (send queue full, or still queued at exit) or rejected by the backend.", true},
	{"send_rejected_total", "Exports the backend refused as not retryable (also counted in send_dropped_total).", true},
	{"send_rejected_profiles_total", "Profiles the backend reported as rejected in partially successful exports.", true},
	{"send_failures_total", "Export attempts that failed (each retry counts).", true},
	{"send_retries_total", "Export attempts retried.", true},
}

func (a *Agent) newMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := &statsCollector{a: a, descs: make(map[string]*prometheus.Desc)}
	for _, d := range metricDefs {
		c.descs[d.name] = prometheus.NewDesc("stackline_"+d.name, d.help, nil, nil)
	}
	reg.MustRegister(c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ts := c.a.tracer.Stats()
	rs := c.a.reporter.Stats()
	ss := c.a.symbols.Stats()
	ks := c.a.kernel.Stats()
	v := map[string]float64{
		"samples_total":                    float64(ts.Samples),
		"idle_samples_total":               float64(ts.Idle),
		"lost_traces_total":                float64(ts.LostTraces),
		"lost_events_total":                float64(ts.LostEvents),
		"traces_total":                     float64(ts.Traces),
		"decode_errors_total":              float64(ts.DecodeErrors),
		"unwind_read_errors_total":         float64(ts.UserReadErrors),
		"unwind_max_depth_total":           float64(ts.MaxDepth),
		"unwind_no_mapping_total":          float64(ts.NoMapping),
		"unwind_no_cfi_total":              float64(ts.NoCFI),
		"unwind_not_ready_total":           float64(ts.NotReady),
		"unwind_bad_frame_total":           float64(ts.BadFrame),
		"unwind_cfi_frames_total":          float64(ts.CFIFrames),
		"unwind_fp_frames_total":           float64(ts.FPFrames),
		"unwind_vma_lookups_total":         float64(ts.VMALookups),
		"python_frames_total":              float64(ts.PythonFrames),
		"interpreter_read_errors_total":    float64(ts.InterpreterReadErrors),
		"interpreter_processes":            float64(ts.InterpreterProcesses),
		"interpreter_errors_total":         float64(ts.InterpreterErrors),
		"interpreter_frames_unnamed_total": float64(ts.InterpreterUnnamed),
		"process_sync_requests_total":      float64(ts.SyncRequests),
		"process_syncs_total":              float64(ts.Syncs),
		"process_syncs_pending":            float64(ts.PendingSyncs),
		"process_sync_errors_total":        float64(ts.SyncErrors),
		"unwind_tables":                    float64(ts.TablesLoaded),
		"unwind_table_bytes":               float64(ts.TableBytes),
		"process_mapping_bytes":            float64(ts.ProcessMapBytes),
		"unwind_tables_skipped_total":      float64(ts.TablesSkipped),
		"unwind_tables_failed_total":       float64(ts.TablesFailed),
		"unwind_table_build_seconds_total": ts.TableBuildTime.Seconds(),
		"maps_reads_total":                 float64(ts.MapsReads),
		"unknown_mappings_total":           float64(ts.UnknownMappings),
		"file_errors_total":                float64(ts.FileErrors),
		"kernel_unknown_frames_total":      float64(ts.UnknownKernel),
		"kernel_symbol_rereads_total":      float64(ks.ModuleRereads + ks.KallsymsRereads + ks.BPFRereads),
		"kernel_modules":                   float64(ks.Modules),
		"bpf_programs":                     float64(ks.BPFPrograms),
		"processes":                        float64(ts.Processes),
		"first_sample_seconds":             c.a.firstSample(ts).Seconds(),
		"bpf_map_bytes":                    float64(c.a.tracer.MapMemory()),
		"exports_total":                    float64(rs.Exports),
		"export_errors_total":              float64(rs.ExportErrors),
		"samples_exported_total":           float64(rs.SamplesExported),
		"frame_cache_hits_total":           float64(rs.FrameCacheHits),
		"frame_cache_misses_total":         float64(rs.FrameCacheMisses),
		"unnamed_frames_total":             float64(rs.UnnamedFrames),
		"last_export_bytes":                float64(rs.LastRequestBytes),
		"symbol_files_loaded_total":        float64(ss.Loads),
		"symbol_bytes":                     float64(ss.BytesHeld),
		"symbol_evictions_total":           float64(ss.Evictions),
		"symbol_dwarf_skipped_total":       float64(ss.DWARFSkipped),
	}
	if c.a.otlp != nil {
		gs := c.a.otlp.Stats()
		v["send_queue_length"] = float64(gs.Queued)
		v["sent_total"] = float64(gs.Sent)
		v["sent_bytes_total"] = float64(gs.SentBytes)
		v["send_dropped_total"] = float64(gs.Dropped + gs.Rejected)
		v["send_rejected_total"] = float64(gs.Rejected)
		v["send_rejected_profiles_total"] = float64(gs.RejectedProfiles)
		v["send_failures_total"] = float64(gs.Failed)
		v["send_retries_total"] = float64(gs.Retries)
	}
	for _, d := range metricDefs {
		typ := prometheus.GaugeValue
		if d.counter {
			typ = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(c.descs[d.name], typ, v[d.name])
	}
}
