package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Soak phases, in order. The mix's burners run throughout; the churn (the
// short-lived process loop and the build loop) runs in the warm-up and
// churn phases only.
const (
	PhaseBaseline = "baseline" // burners only; the baseline is read at its end
	PhaseWarmUp   = "warm-up"  // churn starts; RSS is not held flat yet
	PhaseChurn    = "churn"    // churn continues; RSS must stay flat
	PhaseQuiet    = "quiet"    // churn stopped; gauges must return to the baseline
)

// SoakPhase is one phase of a soak run, in seconds from the agent's start.
type SoakPhase struct {
	Name  string  `json:"name"`
	Start float64 `json:"start_seconds"`
	End   float64 `json:"end_seconds"`
}

// MinQuiet is the shortest quiet phase: the agent unloads an unwind table a
// minute after the last process mapping its file exits, and its caches
// drop what was unused for --cache-ttl (a minute), both checked every 30 s
// at most; the rest is margin for the last processes of the churn to exit.
const MinQuiet = 2 * time.Minute

// SoakPlan splits a soak run of d into its phases: 10% baseline (at least
// 20 s, so startup is over), 15% warm-up, then churn, and the last 25% (at
// least MinQuiet) quiet.
func SoakPlan(d time.Duration) []SoakPhase {
	t := d.Seconds()
	base := max(0.10*t, 20)
	warm := base + 0.15*t
	quiet := min(0.75*t, t-MinQuiet.Seconds())
	return []SoakPhase{
		{PhaseBaseline, 0, base},
		{PhaseWarmUp, base, warm},
		{PhaseChurn, warm, quiet},
		{PhaseQuiet, quiet, t},
	}
}

// PhaseAt returns the name of the phase of plan that second s falls in.
func PhaseAt(plan []SoakPhase, s float64) string {
	for _, p := range plan {
		if s < p.End {
			return p.Name
		}
	}
	return plan[len(plan)-1].Name
}

// SoakSample is one reading of the agent during a soak run: RSS every
// second, and every gauge of its /metrics every few seconds.
type SoakSample struct {
	Seconds float64 `json:"seconds"`
	Phase   string  `json:"phase"`
	RSSMB   float64 `json:"rss_mb"`
	// RSSAnonMB and RSSFileMB split RSSMB: the Go heap, stacks and
	// runtime, and file pages (the agent's own image, symbol files).
	RSSAnonMB float64            `json:"rss_anon_mb,omitempty"`
	RSSFileMB float64            `json:"rss_file_mb,omitempty"`
	Gauges    map[string]float64 `json:"gauges,omitempty"`
}

// SoakCheck is one verdict of a soak run.
type SoakCheck struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// SoakReport is a soak run: its phases, readings, the gauges at the end of
// the baseline and at the end of the run, and the verdicts.
type SoakReport struct {
	Results  Results            `json:"results"`
	Phases   []SoakPhase        `json:"phases"`
	Samples  []SoakSample       `json:"samples"`
	Baseline map[string]float64 `json:"baseline"`
	End      map[string]float64 `json:"end"`
	// ChurnMax is each gauge's largest value during the churn.
	ChurnMax map[string]float64 `json:"churn_max"`
	// Unmapped lists the largest unwind tables no process mapped at the end
	// ("name bytes"): the churn's leftovers, or other processes' on a
	// shared host.
	Unmapped []string    `json:"unmapped_tables_at_end,omitempty"`
	Checks   []SoakCheck `json:"checks"`
}

// RSSFlatMB is how far RSS may move around its median after warm-up.
const RSSFlatMB = 5

// tolerance is how far above its baseline a gauge may end: rel × baseline
// plus abs. The host may run other processes the agent also tracks.
type tolerance struct{ rel, abs float64 }

// returnGauges are the gauges that must return to their baseline when the
// churn stops: the agent's tables, eBPF maps and caches. Any other gauge
// whose name says it is a cache is checked too, with defaultTolerance.
var returnGauges = map[string]tolerance{
	"stackline_processes":             {0.10, 10},
	"stackline_interpreter_processes": {0, 1},
	"stackline_unwind_tables":         {0.10, 5},
	"stackline_unwind_table_bytes":    {0.10, 1 << 20},
	"stackline_process_mapping_bytes": {0.10, 256 << 10},
	"stackline_bpf_map_bytes":         {0.10, 1 << 20},
	"stackline_symbol_bytes":          {0.10, 1 << 20},
	"stackline_process_syncs_pending": {0, 5},
	// From /debug/unwind-tables: tables no process maps any more.
	GaugeIdleTables:     {0.10, 5},
	GaugeIdleTableBytes: {0.10, 1 << 20},
}

// Gauges the soak derives from the agent's /debug/unwind-tables.
const (
	GaugeIdleTables     = "debug_unwind_tables_unmapped"
	GaugeIdleTableBytes = "debug_unwind_table_bytes_unmapped"
)

var defaultTolerance = tolerance{0.10, 1}

// Check fills r.Checks from its samples, baseline and end gauges: RSS flat
// after warm-up, and every table, map and cache gauge back to its baseline.
func (r *SoakReport) Check() {
	r.Checks = nil
	var churn, after []float64
	for _, s := range r.Samples {
		switch s.Phase {
		case PhaseChurn:
			churn = append(churn, s.RSSMB)
			after = append(after, s.RSSMB)
		case PhaseQuiet:
			after = append(after, s.RSSMB)
		}
	}
	r.Checks = append(r.Checks, checkFlat(churn, after))
	r.ChurnMax = make(map[string]float64)
	for _, s := range r.Samples {
		if s.Phase != PhaseChurn && s.Phase != PhaseWarmUp {
			continue
		}
		for k, v := range s.Gauges {
			if old, ok := r.ChurnMax[k]; !ok || v > old {
				r.ChurnMax[k] = v
			}
		}
	}
	names := make([]string, 0, len(r.Baseline))
	for k := range r.Baseline {
		if _, ok := returnGauges[k]; ok || strings.Contains(k, "cache") {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		tol, ok := returnGauges[k]
		if !ok {
			tol = defaultTolerance
		}
		base := r.Baseline[k]
		end, ok := r.End[k]
		limit := base*(1+tol.rel) + tol.abs
		c := SoakCheck{Name: k + " back to baseline", Pass: ok && end <= limit}
		if ok {
			c.Detail = fmt.Sprintf("baseline %s, churn max %s, end %s (limit %s)",
				num(base), num(r.ChurnMax[k]), num(end), num(limit))
		} else {
			c.Detail = "missing at the end of the run"
		}
		r.Checks = append(r.Checks, c)
	}
}

// checkFlat holds RSS flat after warm-up: every churn-phase sample within
// RSSFlatMB of the churn phase's median, and no later sample above it by
// more (RSS may fall once the churn stops).
func checkFlat(churn, after []float64) SoakCheck {
	c := SoakCheck{Name: fmt.Sprintf("RSS flat after warm-up (±%d MB)", RSSFlatMB)}
	if len(churn) == 0 {
		c.Detail = "no RSS sample in the churn phase"
		return c
	}
	med := median(churn)
	lo, hi := slices.Min(churn), slices.Max(after)
	c.Pass = hi <= med+RSSFlatMB && lo >= med-RSSFlatMB
	c.Detail = fmt.Sprintf("churn median %.1f MB, churn min %.1f, max after warm-up %.1f, slope %+.2f MB/min",
		med, lo, hi, slopePerMinute(churn))
	return c
}

// Passed reports whether every check passed.
func (r SoakReport) Passed() bool {
	for _, c := range r.Checks {
		if !c.Pass {
			return false
		}
	}
	return len(r.Checks) > 0
}

// Markdown renders the report: verdicts, RSS per phase, the gauges at the
// baseline, during the churn and at the end, and the run's figures.
func (r SoakReport) Markdown() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Soak run of %s at %s\n\n", r.Results.Date, r.Results.Commit)
	fmt.Fprintf(&sb, "%.0f s, %d Hz, %d CPUs; mix: %s; churn %.0f execs/s and %.1f compiler runs/s (as achieved).\n\n",
		r.Results.DurationSeconds, r.Results.ConfiguredRate, r.Results.CPUs, r.Results.Mix,
		r.Results.ExecsPerSec, r.Results.BuildsPerSec)
	sb.WriteString("| check | verdict | detail |\n|---|---|---|\n")
	for _, c := range r.Checks {
		v := "pass"
		if !c.Pass {
			v = "FAIL"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s |\n", c.Name, v, c.Detail)
	}
	sb.WriteString("\n| phase | seconds | RSS min / median / max (MB) | anonymous / file-backed, median (MB) |\n|---|---|---|---|\n")
	for _, p := range r.Phases {
		var rss, anon, file []float64
		for _, s := range r.Samples {
			if s.Phase == p.Name {
				rss = append(rss, s.RSSMB)
				anon = append(anon, s.RSSAnonMB)
				file = append(file, s.RSSFileMB)
			}
		}
		if len(rss) == 0 {
			continue
		}
		fmt.Fprintf(&sb, "| %s | %.0f–%.0f | %.1f / %.1f / %.1f | %.1f / %.1f |\n",
			p.Name, p.Start, p.End, slices.Min(rss), median(rss), slices.Max(rss), median(anon), median(file))
	}
	names := make([]string, 0, len(r.Baseline))
	for k := range r.Baseline {
		names = append(names, k)
	}
	slices.Sort(names)
	sb.WriteString("\n| gauge | baseline | churn max | end |\n|---|---:|---:|---:|\n")
	for _, k := range names {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", k, num(r.Baseline[k]), num(r.ChurnMax[k]), num(r.End[k]))
	}
	if len(r.Unmapped) > 0 {
		fmt.Fprintf(&sb, "\nLargest unwind tables no process mapped at the end: %s.\n", strings.Join(r.Unmapped, ", "))
	}
	sb.WriteString("\n")
	sb.WriteString(Table(r.Results, nil))
	return sb.String()
}

// num formats a gauge: integers as integers, large byte counts in MB.
func num(v float64) string {
	switch {
	case math.Abs(v) >= 1<<20:
		return fmt.Sprintf("%.2f MB", v/(1<<20))
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// slopePerMinute is the least-squares slope of v, sampled once a second, in
// units per minute.
func slopePerMinute(v []float64) float64 {
	n := float64(len(v))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i, y := range v {
		x := float64(i)
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	return 60 * (n*sxy - sx*sy) / (n*sxx - sx*sx)
}
