package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	r := Results{SteadyRSSMB: 30, PeakRSSMB: 70, WireBytesPerSample: 40}
	b := Budgets{"steady_rss_mb": 40, "peak_rss_mb": 60, "wire_bytes_per_sample": 40}
	v := Compare(r, b)
	if len(v) != 1 || v[0].Figure != "peak_rss_mb" || v[0].Value != 70 || v[0].Budget != 60 {
		t.Fatalf("over budget: %v", v)
	}
	// Equal to the budget passes; under passes.
	r.PeakRSSMB = 60
	if v := Compare(r, b); len(v) != 0 {
		t.Fatalf("at budget: %v", v)
	}
	// A budget for a figure that does not exist fails.
	b["rss_typo"] = 1
	if v := Compare(r, b); len(v) != 1 || !v[0].Unknown {
		t.Fatalf("unknown figure: %v", v)
	}
}

func TestLoadBudgets(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "b.json")
	os.WriteFile(p, []byte(`{"_comment": "why", "steady_rss_mb": 40}`), 0o644)
	b, err := LoadBudgets(p)
	if err != nil || len(b) != 1 || b["steady_rss_mb"] != 40 {
		t.Fatalf("%v %v", b, err)
	}
	os.WriteFile(p, []byte(`{"steady_rss_mb": "40"}`), 0o644)
	if _, err := LoadBudgets(p); err == nil {
		t.Fatal("string budget accepted")
	}
}

// TestCommittedBudgets: the committed budgets name real figures and the
// committed results are real figures.
func TestCommittedBudgets(t *testing.T) {
	b, err := LoadBudgets("budgets.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range Compare(Results{}, b) {
		if v.Unknown {
			t.Errorf("%v", v)
		}
	}
}

func TestTable(t *testing.T) {
	tab := Table(Results{SteadyRSSMB: 50}, Budgets{"steady_rss_mb": 40})
	if !strings.Contains(tab, "| steady_rss_mb | 50.00 | 40.00 | OVER |") {
		t.Fatalf("table:\n%s", tab)
	}
}
