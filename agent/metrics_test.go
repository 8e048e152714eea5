package agent

import (
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/prometheus/client_golang/prometheus"

	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// TestMetricsExportEveryBPFCounter checks, against the committed eBPF
// object's enum counter, that every counter of the eBPF programs is
// exported by exactly one metric, a Prometheus counter, and that no metric
// reads a counter the programs do not have.
func TestMetricsExportEveryBPFCounter(t *testing.T) {
	spec, err := progs.LoadStackline()
	if err != nil {
		t.Fatal(err)
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("counter", &enum); err != nil {
		t.Fatal(err)
	}
	var s stats
	const base = 1000
	for i := range s.tracer.Counters {
		s.tracer.Counters[i] = base + uint64(i)
	}
	exportedBy := make(map[uint64][]string)
	for _, m := range metrics {
		v := m.value(&s)
		if v < base {
			continue
		}
		if m.typ != prometheus.CounterValue {
			t.Errorf("%s exports an eBPF counter as a gauge", m.name)
		}
		exportedBy[uint64(v)-base] = append(exportedBy[uint64(v)-base], m.name)
	}
	var n int
	for _, v := range enum.Values {
		if v.Name == "COUNTER_NUM" {
			continue
		}
		n++
		switch names := exportedBy[v.Value]; len(names) {
		case 0:
			t.Errorf("eBPF counter %s (%d) is exported by no metric: add a bpfCounter row to metrics", v.Name, v.Value)
		case 1:
		default:
			t.Errorf("eBPF counter %s (%d) is exported by several metrics: %v", v.Name, v.Value, names)
		}
	}
	if n != len(s.tracer.Counters) || len(exportedBy) != n {
		t.Errorf("%d eBPF counters in the object, %d in tracer.Stats, %d exported", n, len(s.tracer.Counters), len(exportedBy))
	}
}

// TestMetricDefinitions checks the metrics' names and help, and that a
// registry gathers every one of them.
func TestMetricDefinitions(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	seen := make(map[string]bool)
	for _, m := range metrics {
		if !valid.MatchString(m.name) || seen[m.name] {
			t.Errorf("metric %q: invalid or repeated name", m.name)
		}
		seen[m.name] = true
		if m.help == "" || !strings.HasSuffix(m.help, ".") {
			t.Errorf("metric %s: help %q is not a sentence", m.name, m.help)
		}
		if total := strings.HasSuffix(m.name, "_total"); total != (m.typ == prometheus.CounterValue) {
			t.Errorf("metric %s: counters, and only counters, end in _total", m.name)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatsCollector(func() *stats { return &stats{} }))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != len(metrics) {
		t.Errorf("gathered %d metrics, want %d", len(families), len(metrics))
	}
}
