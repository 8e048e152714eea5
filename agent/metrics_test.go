package agent

import (
	"os"
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

// TestReadmeMetrics: README's table of self-metrics lists exactly the
// metrics the agent exports, each with its type.
func TestReadmeMetrics(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`stackline_") {
			continue
		}
		name := strings.TrimPrefix(strings.Trim(strings.TrimSpace(cells[1]), "`"), "stackline_")
		documented[name] = strings.TrimSpace(cells[2])
	}
	for _, m := range metrics {
		typ := "counter"
		if m.typ == prometheus.GaugeValue {
			typ = "gauge"
		}
		doc, ok := documented[m.name]
		switch {
		case !ok:
			t.Errorf("stackline_%s is not in README's metrics table", m.name)
		case doc != typ:
			t.Errorf("stackline_%s: README says %s, it is a %s", m.name, doc, typ)
		}
		delete(documented, m.name)
	}
	for name := range documented {
		t.Errorf("README documents stackline_%s, which the agent does not export", name)
	}
}
