package bench

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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

func TestStartupFiguresBudgetable(t *testing.T) {
	r := Results{StartupPeakRSSMB: 81, StartupAllocMB: 300}
	v := Compare(r, Budgets{"startup_peak_rss_mb": 80, "startup_go_alloc_mb": 300})
	if len(v) != 1 || v[0].Figure != "startup_peak_rss_mb" || v[0].Unknown {
		t.Fatalf("startup budgets: %v", v)
	}
}

// TestCommittedTargets: budgets.json may carry the targets under
// "_targets" (not checked), and each names a real figure.
func TestCommittedTargets(t *testing.T) {
	b, err := os.ReadFile("budgets.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Targets map[string]any `json:"_targets"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	figs := Results{}.Figures()
	for k := range raw.Targets {
		if _, ok := figs[k]; !ok && !strings.HasPrefix(k, "_") {
			t.Errorf("target %q names no figure", k)
		}
	}
}

func soakReport(rss func(i int) float64, end map[string]float64) SoakReport {
	plan := SoakPlan(400 * time.Second)
	r := SoakReport{Phases: plan, Baseline: map[string]float64{
		"stackline_unwind_tables": 20,
		"stackline_symbol_bytes":  10 << 20,
		"stackline_frame_cache":   100, // a cache gauge not named in returnGauges
		"stackline_first_sample":  1,   // not checked
	}, End: end}
	for i := range 400 {
		s := float64(i)
		r.Samples = append(r.Samples, SoakSample{Seconds: s, Phase: PhaseAt(plan, s), RSSMB: rss(i)})
	}
	r.Check()
	return r
}

func TestSoakChecks(t *testing.T) {
	flat := func(i int) float64 { return 40 + float64(i%3) }
	good := map[string]float64{
		"stackline_unwind_tables": 21, // within 10% + 5
		"stackline_symbol_bytes":  10 << 20,
		"stackline_frame_cache":   110,
		"stackline_first_sample":  99,
	}
	r := soakReport(flat, good)
	if !r.Passed() || len(r.Checks) != 4 {
		t.Fatalf("flat soak: %+v", r.Checks)
	}
	// Growth during the churn fails the RSS check.
	growing := func(i int) float64 { return 40 + 0.1*float64(i) }
	r = soakReport(growing, good)
	if r.Passed() || r.Checks[0].Pass {
		t.Fatalf("growing RSS passed: %+v", r.Checks[0])
	}
	if !strings.Contains(r.Checks[0].Detail, "slope +6.00 MB/min") {
		t.Errorf("slope: %s", r.Checks[0].Detail)
	}
	// RSS falling after the churn stops is fine; rising is not.
	falls := func(i int) float64 {
		if i >= 300 {
			return 20
		}
		return 40
	}
	if r = soakReport(falls, good); !r.Passed() {
		t.Fatalf("RSS falling in the quiet phase failed: %+v", r.Checks)
	}
	rises := func(i int) float64 {
		if i >= 300 {
			return 46
		}
		return 40
	}
	if r = soakReport(rises, good); r.Checks[0].Pass {
		t.Fatalf("RSS rising in the quiet phase passed: %+v", r.Checks[0])
	}
	// A table gauge or a cache gauge above its baseline fails; a missing
	// one fails.
	for _, k := range []string{"stackline_unwind_tables", "stackline_frame_cache", "stackline_symbol_bytes"} {
		end := maps.Clone(good)
		end[k] *= 2
		if r = soakReport(flat, end); r.Passed() {
			t.Errorf("%s doubled passed: %+v", k, r.Checks)
		}
		delete(end, k)
		if r = soakReport(flat, end); r.Passed() {
			t.Errorf("%s missing passed: %+v", k, r.Checks)
		}
	}
	md := soakReport(flat, good).Markdown()
	for _, want := range []string{"| RSS flat after warm-up (±5 MB) | pass |", "| stackline_symbol_bytes | 10.00 MB |", "| churn | 100–280 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestSoakPlan(t *testing.T) {
	p := SoakPlan(10 * time.Minute)
	want := []SoakPhase{{PhaseBaseline, 0, 60}, {PhaseWarmUp, 60, 150}, {PhaseChurn, 150, 450}, {PhaseQuiet, 450, 600}}
	if !slices.Equal(p, want) {
		t.Fatalf("plan %v", p)
	}
	if PhaseAt(p, 59.9) != PhaseBaseline || PhaseAt(p, 60) != PhaseWarmUp || PhaseAt(p, 700) != PhaseQuiet {
		t.Fatal("PhaseAt")
	}
	// Short runs keep 20 s of baseline and 120 s of quiet.
	if p := SoakPlan(180 * time.Second); p[0].End != 20 || p[3].Start != 60 {
		t.Fatalf("short plan %v", p)
	}
}
