package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// offCPUScreenshotEnv names a file that TestFlameGraphOffCPU writes its
// screenshot of the off-CPU view to (docs/flamegraph-offcpu.png is made
// so).
const offCPUScreenshotEnv = "STACKLINE_FLAMEGRAPH_OFFCPU_SCREENSHOT"

// timeText is an amount of time as the page writes it for people: a
// number and a unit, never raw nanoseconds.
var timeText = regexp.MustCompile(`\b\d+(\.\d+)? (ns|µs|ms|s|min) waited\b`)

// TestFlameGraphOffCPU runs the built agent with --http and --off-cpu
// next to the off-CPU workload (its main thread blocked in main ->
// waitOuter -> waitInner -> read() on a pipe, spinning in spin() between
// reads) and checks in headless Chromium that the page offers the CPU /
// Off-CPU switch once the store holds both sample types; that the
// off-CPU view draws waitInner (native) with the kernel's pipe_read
// (kernel) on its callee side in either orientation, its tooltip and
// status in time waited, not samples; that its download is an off_cpu
// pprof profile; that switching back shows the CPU view; and that the
// frame colours of every kind are far apart and match the legend.
func TestFlameGraphOffCPU(t *testing.T) {
	testenv.RequireBPF(t)
	b := startBrowser(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	cBin := filepath.Join(dir, "wait")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O2", "-fomit-frame-pointer", "-pthread", "-o", cBin, "tracer/testdata/offcpu/wait.c")
	wl := startCmd(t, nil, cBin)
	pid := wl.Process.Pid

	a := startPageAgent(t, bin, dir, "--off-cpu")
	// The data first: both views of the workload, whole. Until the agent
	// has built its unwind tables (seconds on a loaded host), its stacks
	// end early: wait for the chain to hold a third of its waits (the
	// main thread's half, less the intervals before).
	view := "api/flamegraph?window=60&pid=" + strconv.Itoa(pid)
	a.waitGraph(t, 2*time.Minute, view+"&type=off_cpu", `"waitInner"`, `"waitOuter"`, `pipe_read"`) // anon_pipe_read since Linux 6.16
	a.waitGraph(t, time.Minute, view+"&type=samples", `"spin"`)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p, err := getProfile(a.base + "api/flamegraph.pb.gz?type=off_cpu&pid=" + strconv.Itoa(pid))
		if err != nil {
			t.Fatal(err)
		}
		total, chain := offCPUChain(p)
		if float64(chain) >= float64(total)/3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2m, %v of the workload's %v waited in the chain", time.Duration(chain), time.Duration(total))
		}
		time.Sleep(time.Second)
	}

	b.navigate(a.base)
	b.waitScript("the CPU / Off-CPU switch", `const l = document.querySelector('#type-label');
		return !l.hidden && [...document.querySelectorAll('#type option')].map(o => o.value + '=' + o.textContent).join() ===
		  'samples=CPU,off_cpu=Off-CPU'`)
	// Hold the view: the elements clicked below stay as they are.
	b.click(b.find(`#live`))
	var typ string
	b.exec(&typ, `return document.body.dataset.type + ' ' + document.querySelector('#type').value`)
	if typ != "samples samples" {
		t.Errorf("the page opens on type %q, want the CPU samples", typ)
	}
	showProcess(b, pid, "wait")

	// Off-CPU.
	b.click(b.find(`#type option[value="off_cpu"]`))
	b.waitScript("the off-CPU view", `return document.body.dataset.type === 'off_cpu' &&
		document.querySelector('#graph g[aria-label="waitInner"]') !== null`)
	// waitInner is native, the wait's kernel frame below it (icicle, the
	// default: the root at the top) or above it (flame graph), within its
	// width.
	wait := `const byName = (re) => [...document.querySelectorAll('#graph g[aria-label]')].filter(g => re.test(g.getAttribute('aria-label')));
		const x = (g) => g.querySelector('rect').x.baseVal.value, y = (g) => g.querySelector('rect').y.baseVal.value;
		const w = (g) => g.querySelector('rect').width.baseVal.value;
		const gi = byName(/^waitInner$/).sort((a, b) => w(b) - w(a))[0];
		const gk = byName(/pipe_read/).filter(g => x(g) >= x(gi) - 0.5 && x(g) + w(g) <= x(gi) + w(gi) + 0.5).sort((a, b) => w(b) - w(a))[0];
		if (!gk) return 'no pipe_read within waitInner';
		return gi.getAttribute('class').split(' ')[0] + ' ' + gk.getAttribute('class').split(' ')[0] + ' ' +
		  (y(gk) > y(gi) ? 'below' : 'above')`
	for _, tc := range []struct{ orientation, want string }{
		{"icicle", "k-native k-kernel below"},
		{"flame graph", "k-native k-kernel above"},
	} {
		var got string
		b.exec(&got, wait)
		if got != tc.want {
			t.Errorf("%s: waitInner and pipe_read: %q, want %q", tc.orientation, got, tc.want)
		}
		b.click(b.find(`#icicle`))
	}

	// Tooltip and status: time waited, for people.
	b.hover(b.find(`#graph g[aria-label="waitInner"]`))
	b.waitScript("tooltip naming waitInner", `const tt = document.querySelector('#tooltip');
		return !tt.hidden && tt.textContent.includes('waitInner')`)
	var tooltip, status string
	b.exec(&tooltip, `return [...document.querySelectorAll('#tooltip div')].map(d => d.textContent).join(' | ')`)
	b.exec(&status, `return document.querySelector('#status').textContent`)
	t.Logf("off-CPU tooltip: %s; status: %s", tooltip, status)
	for what, text := range map[string]string{"tooltip": tooltip, "status": status} {
		if !timeText.MatchString(text) || strings.Contains(text, "samples") || regexp.MustCompile(`\d{7}`).MatchString(text) {
			t.Errorf("off-CPU %s %q does not give the time waited (ns, µs, ms, s or min)", what, text)
		}
	}
	// The status's total is the data's, formatted. The page, held since
	// the checks above, follows the updates again (and loads the view at
	// once); an interval may land between reading the page and fetching
	// the data: then the page is read again.
	b.click(b.find(`#live`))
	checkStatusTime(t, a, view+"&window=300&type=off_cpu", func() (string, int) {
		var status, intervals string
		b.exec(&status, `return document.querySelector('#status').textContent`)
		b.exec(&intervals, `return document.body.dataset.intervals`)
		n, _ := strconv.Atoi(intervals)
		return status, n
	})
	b.click(b.find(`#live`)) // held again

	// The download of the off-CPU view: waits, in nanoseconds.
	var href string
	b.exec(&href, `return document.querySelector('#download').href`)
	checkOffCPUDownload(t, href, pid)

	// Back to CPU: samples, and the spin drawn.
	b.click(b.find(`#type option[value="samples"]`))
	b.waitScript("the CPU view again", `return document.body.dataset.type === 'samples' &&
		document.querySelector('#graph g[aria-label="spin"]') !== null`)
	b.exec(&status, `return document.querySelector('#status').textContent`)
	if !strings.Contains(status, "samples") || strings.Contains(status, "waited") {
		t.Errorf("CPU status %q", status)
	}
	b.hover(b.find(`#graph g[aria-label="spin"]`))
	b.waitScript("tooltip of spin in samples", `const tt = document.querySelector('#tooltip');
		return !tt.hidden && tt.textContent.includes('spin') && tt.textContent.includes('samples') && !tt.textContent.includes('waited')`)
	if !strings.Contains(b.hrefOf("#download"), "type=samples") {
		t.Errorf("CPU download link %s", b.hrefOf("#download"))
	}

	checkFrameColours(t, b)

	// The picture for the README: the off-CPU view of the workload over
	// ten intervals, live, the tooltip of waitInner.
	if path := os.Getenv(offCPUScreenshotEnv); path != "" {
		b.click(b.find(`#type option[value="off_cpu"]`))
		b.click(b.find(`#live`))
		b.timeout = time.Minute
		b.waitScript("ten intervals of the off-CPU view", `return document.body.dataset.type === 'off_cpu' &&
			Number(document.body.dataset.intervals) >= 10 && document.querySelector('#graph g[aria-label="waitInner"]') !== null`)
		b.click(b.find(`#live`))
		b.hover(b.find(`#graph g[aria-label="waitInner"]`))
		b.waitScript("tooltip naming waitInner", `const tt = document.querySelector('#tooltip');
			return !tt.hidden && tt.textContent.includes('waitInner')`)
		if err := os.WriteFile(path, b.screenshot(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", path)
	}
	a.stop(t)
}

// hrefOf returns the href of the element css selects.
func (b *browser) hrefOf(css string) string {
	b.t.Helper()
	var href string
	b.exec(&href, `return document.querySelector(arguments[0]).href`, css)
	return href
}

// checkStatusTime checks that the time the status line of a view gives
// is the view's total at path, in the unit it names. read returns the
// page's status and the intervals it covers; while the data has other
// intervals than the page showed (one landed in between), the page, which
// follows the updates, is read again. The check is per interval, within a
// factor 1.5 (a wrong scale is a factor 1000).
func checkStatusTime(t *testing.T, a *pageAgent, path string, read func() (status string, intervals int)) {
	t.Helper()
	var (
		m         []string
		intervals int
		g         struct {
			Intervals int `json:"intervals"`
			Nodes     struct {
				Total []float64 `json:"total"`
			} `json:"nodes"`
		}
	)
	for try := 0; ; try++ {
		var status string
		status, intervals = read()
		m = regexp.MustCompile(`^(\d+(?:\.\d+)?) (ns|µs|ms|s|min) waited`).FindStringSubmatch(status)
		if m == nil || intervals <= 0 {
			t.Errorf("status %q of %d intervals does not begin with the time waited", status, intervals)
			return
		}
		body, err := get(a.base + path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(body), &g); err != nil || g.Intervals == 0 || len(g.Nodes.Total) == 0 {
			t.Fatalf("%s: %v: %.300s", path, err, body)
		}
		if g.Intervals == intervals || try == 5 {
			break
		}
		time.Sleep(500 * time.Millisecond) // the page catches up
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	shown := v * map[string]float64{"ns": 1, "µs": 1e3, "ms": 1e6, "s": 1e9, "min": 60e9}[m[2]]
	perShown, perData := shown/float64(intervals), g.Nodes.Total[0]/float64(g.Intervals)
	t.Logf("status: %.3g ns over %d intervals; data: %.3g ns over %d", shown, intervals, g.Nodes.Total[0], g.Intervals)
	if r := perShown / perData; r < 1/1.5 || r > 1.5 {
		t.Errorf("status shows %s %s over %d intervals, the data %.0f ns over %d", m[1], m[2], intervals, g.Nodes.Total[0], g.Intervals)
	}
}

// checkOffCPUDownload fetches the page's pprof download of the off-CPU
// view of pid and checks that it is an off_cpu/nanoseconds profile of
// pid's waits, most of them in waitInner <- waitOuter <- main under the
// kernel's pipe_read.
func checkOffCPUDownload(t *testing.T, href string, pid int) {
	t.Helper()
	if !strings.Contains(href, "type=off_cpu") {
		t.Errorf("off-CPU download link %s", href)
	}
	resp, err := http.Get(href)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasSuffix(cd, `.offcpu.pb.gz"`) {
		t.Errorf("off-CPU download's Content-Disposition is %q", cd)
	}
	p, err := profile.Parse(resp.Body)
	if err != nil {
		t.Fatalf("download is not a pprof profile: %v", err)
	}
	if len(p.SampleType) != 1 || p.SampleType[0].Type != "off_cpu" || p.SampleType[0].Unit != "nanoseconds" {
		t.Errorf("off-CPU download's sample types are %v, want [off_cpu/nanoseconds]", p.SampleType)
	}
	for _, s := range p.Sample {
		if s.NumLabel["pid"][0] != int64(pid) {
			t.Errorf("downloaded sample of pid %v, want %d", s.NumLabel["pid"], pid)
		}
	}
	total, chain := offCPUChain(p)
	t.Logf("off-CPU download: %d samples, %v waited, %v in pipe_read ... waitInner <- waitOuter <- main",
		len(p.Sample), time.Duration(total), time.Duration(chain))
	// The main thread waits in the chain, the feeder thread in nanosleep:
	// about half each.
	if total == 0 || float64(chain) < 0.25*float64(total) {
		t.Errorf("%v of %v waited in the chain, want at least a quarter", time.Duration(chain), time.Duration(total))
	}
}

// offCPUChain sums the values of p and those of its samples in
// main -> waitOuter -> waitInner with the kernel's pipe_read.
func offCPUChain(p *profile.Profile) (total, chain int64) {
	for _, s := range p.Sample {
		var names []string
		for _, l := range s.Location {
			names = append(names, l.Line[0].Function.Name)
		}
		total += s.Value[0]
		if hasCalls(names, "waitInner", "waitOuter", "main") && strings.Contains(strings.Join(names, ";"), "pipe_read") {
			chain += s.Value[0]
		}
	}
	return total, chain
}

// getProfile fetches a pprof profile.
func getProfile(url string) (*profile.Profile, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p, err := profile.Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return p, nil
}

// frameKinds are the profile.frame.type values the page colours, as the
// legend lists them.
var frameKinds = []string{"kernel", "native", "go", "cpython", "jvm", "v8js", "abort"}

// checkFrameColours checks that the legend lists every frame kind, that
// each kind's frames are drawn in its legend colour, and that the kinds
// (and the search highlight) are told apart at a glance: coloured kinds
// at least 25° of hue from each other, unwinding-stopped grey.
func checkFrameColours(t *testing.T, b *browser) {
	t.Helper()
	var got struct {
		Legend []string          `json:"legend"`
		Swatch map[string]string `json:"swatch"`
		Fill   map[string]string `json:"fill"`
		Match  string            `json:"match"`
	}
	// A frame of each kind, drawn as the page draws them, then removed.
	b.exec(&got, `const svg = document.querySelector('#graph'), ns = 'http://www.w3.org/2000/svg';
		const out = { legend: [...document.querySelectorAll('#legend li')].map(li => li.className), swatch: {}, fill: {} };
		const probe = (cls) => {
		  const g = document.createElementNS(ns, 'g'), r = document.createElementNS(ns, 'rect');
		  g.setAttribute('class', cls); g.append(r); svg.append(g);
		  const fill = getComputedStyle(r).fill; g.remove(); return fill;
		};
		for (const k of arguments[0]) {
		  const li = document.querySelector('#legend li.k-' + k);
		  out.swatch[k] = li ? getComputedStyle(li, '::before').backgroundColor : '';
		  out.fill[k] = probe('k-' + k);
		}
		out.match = probe('k-native match');
		return out;`, frameKinds)
	want := make([]string, len(frameKinds))
	for i, k := range frameKinds {
		want[i] = "k-" + k
	}
	if strings.Join(got.Legend, " ") != strings.Join(want, " ") {
		t.Errorf("legend lists %v, want %v", got.Legend, want)
	}
	type hsl struct{ h, s, l float64 }
	colours := map[string]hsl{}
	for _, k := range frameKinds {
		if got.Swatch[k] != got.Fill[k] {
			t.Errorf("%s frames are drawn %s, the legend shows %s", k, got.Fill[k], got.Swatch[k])
		}
		h, s, l, err := parseRGB(got.Fill[k])
		if err != nil {
			t.Errorf("%s: %v", k, err)
			continue
		}
		colours[k] = hsl{h, s, l}
	}
	t.Logf("frame colours: %v (search: %s)", got.Fill, got.Match)
	if h, s, l, err := parseRGB(got.Match); err != nil {
		t.Errorf("search highlight: %v", err)
	} else {
		colours["search"] = hsl{h, s, l}
	}
	if c := colours["abort"]; c.s > 0.1 {
		t.Errorf("unwinding-stopped frames are coloured (%s), want grey", got.Fill["abort"])
	}
	delete(colours, "abort")
	for a, ca := range colours {
		if ca.s < 0.4 {
			t.Errorf("%s frames are washed out (%.2f saturation)", a, ca.s)
		}
		for b, cb := range colours {
			d := math.Abs(ca.h - cb.h)
			d = math.Min(d, 360-d)
			if a < b && d < 25 {
				t.Errorf("%s and %s frames are %.0f° of hue apart (%s, %s), want at least 25°", a, b, d, got.Fill[a], got.Fill[b])
			}
		}
	}
}

// parseRGB parses a computed CSS colour "rgb(r, g, b)" into hue
// (degrees), saturation and lightness (0-1).
func parseRGB(s string) (h, sat, l float64, err error) {
	var r, g, b float64
	if _, err := fmt.Sscanf(s, "rgb(%g, %g, %g)", &r, &g, &b); err != nil {
		return 0, 0, 0, fmt.Errorf("colour %q: %w", s, err)
	}
	r, g, b = r/255, g/255, b/255
	hi, lo := max(r, g, b), min(r, g, b)
	l = (hi + lo) / 2
	c := hi - lo
	if c == 0 {
		return 0, 0, l, nil
	}
	sat = c / (1 - math.Abs(2*l-1))
	switch hi {
	case r:
		h = 60 * math.Mod((g-b)/c+6, 6)
	case g:
		h = 60 * ((b-r)/c + 2)
	default:
		h = 60 * ((r-g)/c + 4)
	}
	return h, sat, l, nil
}
