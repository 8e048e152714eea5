// Package bench holds the whole-agent benchmark's results, the budgets they
// are held to, and the comparison that makes CI fail when a figure is over
// its budget.
package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Results are the figures of one whole-agent benchmark run. Every field
// tagged with a json name can be given a budget under that name.
type Results struct {
	// SteadyRSSMB is the median VmRSS of the second half of the run.
	SteadyRSSMB float64 `json:"steady_rss_mb"`
	// PeakRSSMB is the agent's VmHWM at the end of the run.
	PeakRSSMB float64 `json:"peak_rss_mb"`
	// StartupPeakRSSMB is the agent's VmHWM 10 s after its start: the peak
	// of loading every running process's tables and symbols.
	StartupPeakRSSMB float64 `json:"startup_peak_rss_mb"`
	// StartupAllocMB is the Go heap the agent allocated in its first 10 s
	// (go_memstats_alloc_bytes_total at 10 s), garbage included.
	StartupAllocMB float64 `json:"startup_go_alloc_mb"`
	// SteadyCPUPercent is the agent's CPU time from 10 s after its start
	// to the end of the run, in % of one core: the run's CPU without the
	// start.
	SteadyCPUPercent float64 `json:"steady_cpu_percent_one_core"`
	// SteadyAllocMBPerMin and SteadyGCPerMin are the Go heap the agent
	// allocated (garbage included) and its garbage collections, per
	// minute from 10 s after its start to the end of the run.
	SteadyAllocMBPerMin float64 `json:"steady_go_alloc_mb_per_min"`
	SteadyGCPerMin      float64 `json:"steady_gc_per_min"`
	// GCPercent is the garbage collector's target percent (GOGC) at the
	// end of the run, as the agent paced it (--min-gc-percent).
	GCPercent float64 `json:"go_gc_percent"`
	// SteadyWakeupsPerSec is the voluntary context switches of the
	// agent's threads per second from 10 s after its start to the end
	// of the run: how often its threads go to sleep, hence wake.
	SteadyWakeupsPerSec float64 `json:"steady_agent_wakeups_per_second"`
	// RSSAnonMB and RSSFileMB split the final RSS into anonymous memory
	// (heap, stacks, runtime) and file pages (mostly the agent's binary).
	RSSAnonMB float64 `json:"rss_anon_mb"`
	RSSFileMB float64 `json:"rss_file_mb"`
	// CPUPercent is the agent's CPU time over the run, in % of one core.
	CPUPercent float64 `json:"cpu_percent_one_core"`
	// SamplesPerSecond is the samples received per second of the run.
	SamplesPerSecond float64 `json:"samples_per_second"`
	// WireBytesPerSample and BytesPerSample are export bytes per sample,
	// gzip-compressed as sent and uncompressed.
	WireBytesPerSample float64 `json:"wire_bytes_per_sample"`
	BytesPerSample     float64 `json:"uncompressed_bytes_per_sample"`
	// FirstSampleSeconds is the time from the agent's start to its first
	// trace.
	FirstSampleSeconds float64 `json:"time_to_first_sample_seconds"`
	// GoHeapInUseMB is the Go heap in use at the end of the run.
	GoHeapInUseMB float64 `json:"go_heap_inuse_mb"`
	// BPFMapMB is the eBPF maps' memory as the kernel charges it.
	BPFMapMB float64 `json:"bpf_map_mb"`
	// LostTraces counts traces dropped by a full ring buffer.
	LostTraces float64 `json:"lost_traces"`
	// OffCPUWaitsPerSecond is the off-CPU waits received per second of
	// the run (0 without --off-cpu); LostOffCPUTraces those dropped by a
	// full ring buffer. Wire and uncompressed bytes per sample count a
	// wait as a sample.
	OffCPUWaitsPerSecond float64 `json:"off_cpu_waits_per_second"`
	// BPFCPUPercent is the run time of the agent's eBPF programs, which
	// the kernel spends in the context of the sampled and switching
	// threads (not in the agent's CPU time), in % of one core;
	// OffCPUBPFCPUPercent that of the off-CPU programs.
	BPFCPUPercent       float64 `json:"bpf_cpu_percent_one_core"`
	OffCPUBPFCPUPercent float64 `json:"off_cpu_bpf_cpu_percent_one_core"`
	LostOffCPUTraces    float64 `json:"lost_off_cpu_traces"`

	// Context of the run (not budgeted).
	DurationSeconds  float64 `json:"duration_seconds"`
	ConfiguredRate   int     `json:"configured_samples_per_second"`
	CPUs             int     `json:"cpus"`
	ShortLivedPerSec float64 `json:"short_lived_processes_per_second"`
	// ContextSwitchesPerSec is the host's context switches per second
	// over the run (/proc/stat ctxt): what off-CPU profiling's cost
	// grows with.
	ContextSwitchesPerSec float64 `json:"context_switches_per_second"`
	// Mix names the workload mix's processes.
	Mix string `json:"mix"`
	// AgentArgs are the flags the agent ran with beyond the benchmark's
	// own (e.g. --off-cpu).
	AgentArgs string `json:"agent_args,omitempty"`
	// ExecsPerSec and BuildsPerSec are the short-lived /bin/true processes
	// and compiler runs started per second of churn, as achieved.
	ExecsPerSec  float64 `json:"execs_per_second"`
	BuildsPerSec float64 `json:"builds_per_second"`
	Exports      int     `json:"exports"`
	// RSSEachSecondMB and RSSFileEachSecondMB are the agent's VmRSS and
	// its file-backed part (RssFile) read every second of the run: what
	// the steady and peak figures come from, kept to tell a run whose
	// RSS went up from one whose RSS sawed.
	RSSEachSecondMB     []float64 `json:"rss_mb_each_second,omitempty"`
	RSSFileEachSecondMB []float64 `json:"rss_file_mb_each_second,omitempty"`
	Date                string    `json:"date"`
	Kernel              string    `json:"kernel"`
	GoVersion           string    `json:"go_version"`
	Commit              string    `json:"commit"`
}

// Figures returns the numeric figures of r by their json names.
func (r Results) Figures() map[string]float64 {
	b, _ := json.Marshal(r)
	var all map[string]any
	json.Unmarshal(b, &all)
	out := make(map[string]float64)
	for k, v := range all {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}

// Budgets maps a figure's json name to its maximum.
type Budgets map[string]float64

// LoadBudgets reads budgets from a JSON file. Keys starting with "_" are
// comments.
func LoadBudgets(path string) (Budgets, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("budgets: %w", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("budgets %s: %w", path, err)
	}
	out := make(Budgets)
	for k, v := range raw {
		if strings.HasPrefix(k, "_") {
			continue
		}
		f, ok := v.(float64)
		if !ok {
			return nil, fmt.Errorf("budgets %s: %q is not a number", path, k)
		}
		out[k] = f
	}
	return out, nil
}

// Violation is a figure over its budget, or a budget naming no figure.
type Violation struct {
	Figure        string
	Value, Budget float64
	// Unknown is set when the budget names a figure the results lack.
	Unknown bool
}

func (v Violation) String() string {
	if v.Unknown {
		return fmt.Sprintf("budget %q names no figure", v.Figure)
	}
	return fmt.Sprintf("%s = %.2f is over its budget of %.2f", v.Figure, v.Value, v.Budget)
}

// Compare returns every budget r does not meet, sorted by figure name. A
// budget for a figure r does not have is a violation too, so a renamed
// figure cannot silently escape its budget.
func Compare(r Results, b Budgets) []Violation {
	figs := r.Figures()
	var out []Violation
	for name, max := range b {
		v, ok := figs[name]
		switch {
		case !ok:
			out = append(out, Violation{Figure: name, Budget: max, Unknown: true})
		case v > max:
			out = append(out, Violation{Figure: name, Value: v, Budget: max})
		}
	}
	slices.SortFunc(out, func(a, b Violation) int { return strings.Compare(a.Figure, b.Figure) })
	return out
}

// Table renders r's figures with their budgets as a Markdown table.
func Table(r Results, b Budgets) string {
	figs := r.Figures()
	names := make([]string, 0, len(figs))
	for k := range figs {
		names = append(names, k)
	}
	slices.Sort(names)
	var sb strings.Builder
	sb.WriteString("| figure | value | budget | |\n|---|---:|---:|---|\n")
	for _, n := range names {
		budget, verdict := "", ""
		if max, ok := b[n]; ok {
			budget = fmt.Sprintf("%.2f", max)
			verdict = "ok"
			if figs[n] > max {
				verdict = "OVER"
			}
		}
		fmt.Fprintf(&sb, "| %s | %.2f | %s | %s |\n", n, figs[n], budget, verdict)
	}
	return sb.String()
}
