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
	{"send_dropped_total", "Exports dropped because the send queue was full or the backend rejected them.", true},
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
		"samples_total":               float64(ts.Samples),
		"idle_samples_total":          float64(ts.Idle),
		"lost_traces_total":           float64(ts.LostTraces),
		"lost_events_total":           float64(ts.LostEvents),
		"traces_total":                float64(ts.Traces),
		"decode_errors_total":         float64(ts.DecodeErrors),
		"unwind_read_errors_total":    float64(ts.UserReadErrors),
		"unwind_max_depth_total":      float64(ts.MaxDepth),
		"maps_reads_total":            float64(ts.MapsReads),
		"unknown_mappings_total":      float64(ts.UnknownMappings),
		"file_errors_total":           float64(ts.FileErrors),
		"kernel_unknown_frames_total": float64(ts.UnknownKernel),
		"kernel_symbol_rereads_total": float64(ks.ModuleRereads + ks.KallsymsRereads + ks.BPFRereads),
		"kernel_modules":              float64(ks.Modules),
		"bpf_programs":                float64(ks.BPFPrograms),
		"processes":                   float64(ts.Processes),
		"first_sample_seconds":        c.a.firstSample(ts).Seconds(),
		"bpf_map_bytes":               float64(c.a.tracer.MapMemory()),
		"exports_total":               float64(rs.Exports),
		"export_errors_total":         float64(rs.ExportErrors),
		"samples_exported_total":      float64(rs.SamplesExported),
		"frame_cache_hits_total":      float64(rs.FrameCacheHits),
		"frame_cache_misses_total":    float64(rs.FrameCacheMisses),
		"unnamed_frames_total":        float64(rs.UnnamedFrames),
		"last_export_bytes":           float64(rs.LastRequestBytes),
		"symbol_files_loaded_total":   float64(ss.Loads),
		"symbol_bytes":                float64(ss.BytesHeld),
		"symbol_evictions_total":      float64(ss.Evictions),
		"symbol_dwarf_skipped_total":  float64(ss.DWARFSkipped),
	}
	if c.a.grpc != nil {
		gs := c.a.grpc.Stats()
		v["send_queue_length"] = float64(gs.Queued)
		v["sent_total"] = float64(gs.Sent)
		v["send_dropped_total"] = float64(gs.Dropped + gs.Rejected)
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
