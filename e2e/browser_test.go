package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// screenshotEnv names a file that TestFlameGraphPage writes its
// screenshot of the whole page to (docs/flamegraph.png is made so).
const screenshotEnv = "STACKLINE_FLAMEGRAPH_SCREENSHOT"

// TestFlameGraphPage runs the built agent with --http next to the C chain
// workload, opens the page in headless Chromium and checks what a person
// would: the workload's leaf function is drawn and named, the search
// highlights it, a click zooms into its caller, the tooltip names it, the
// download holds the zoomed view, and the page follows new intervals
// without reloading.
func TestFlameGraphPage(t *testing.T) {
	testenv.RequireBPF(t)
	b := startBrowser(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	cBin := filepath.Join(dir, "workload")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O0", "-fno-omit-frame-pointer", "-fno-inline", "-g", "-o", cBin, "e2e/testdata/workload.c")
	wl := startCmd(t, nil, cBin, "chain")
	pid := wl.Process.Pid

	a := startPageAgent(t, bin, dir)
	base := a.base

	// The data first, without the browser: the workload's function in the
	// flame graph of its process.
	a.waitGraph(t, time.Minute, "api/flamegraph?window=60&pid="+strconv.Itoa(pid), `"fp_gamma"`)

	b.navigate(base)
	b.find(`#graph g[aria-label="fp_gamma"]`)
	// Until the agent has read the workload's mappings and built its
	// unwind tables (seconds on a loaded host), its stacks end early:
	// wait, redrawn live, for the whole chain.
	b.timeout = 2 * time.Minute
	b.waitScript("the workload's whole chain", `return document.querySelector('#graph g[aria-label="fp_beta"]') !== null`)
	b.timeout = 30 * time.Second
	// Hold the view: the elements clicked below stay as they are.
	live := b.find(`#live`)
	b.click(live)

	// Show the workload's process alone, through the filter.
	showProcess(b, pid, "workload")
	// Wide enough to be labelled in the picture, not only in the DOM.
	var labelled bool
	b.exec(&labelled, `return [...document.querySelectorAll('#graph g[aria-label="fp_gamma"] text')].some(t => t.textContent === 'fp_gamma')`)
	if !labelled {
		t.Error("fp_gamma is drawn without its name")
	}

	// Icicle (the default) puts the root at the top; unchecked, a flame
	// graph puts it at the bottom.
	rootY := `const r = document.querySelector('#graph g[aria-label="all"] rect');
		return r.y.baseVal.value === 0 ? 'top' : r.y.baseVal.value + r.height.baseVal.value === document.querySelector('#graph').viewBox.baseVal.height ? 'bottom' : 'middle'`
	var where string
	b.exec(&where, rootY)
	if where != "top" {
		t.Errorf("icicle: root at the %s", where)
	}
	b.click(b.find(`#icicle`))
	b.exec(&where, rootY)
	if where != "bottom" {
		t.Errorf("flame graph: root at the %s", where)
	}
	b.click(b.find(`#icicle`))

	// Search.
	b.sendKeys(b.find(`#search`), "fp_gam")
	b.find(`#graph g.match[aria-label="fp_gamma"]`)
	matched := b.text(b.find(`#match`))
	if !strings.Contains(matched, "Matched:") {
		t.Errorf("search status reads %q", matched)
	}
	var others int
	b.exec(&others, `return [...document.querySelectorAll('#graph g.match')].filter(g => !/fp_gam/i.test(g.getAttribute('aria-label'))).length`)
	if others != 0 {
		t.Errorf("%d frames not named fp_gam* are highlighted", others)
	}

	// Tooltip.
	b.hover(b.find(`#graph g[aria-label="fp_gamma"]`))
	b.waitScript("tooltip naming fp_gamma", `const tt = document.querySelector('#tooltip');
		return !tt.hidden && tt.textContent.includes('fp_gamma') && tt.textContent.includes('samples') &&
		  tt.textContent.includes('workload.c:')`)

	// Zoom into fp_beta: it fills the width, and the reset button wakes.
	b.exec(nil, `window.__samePage = true`)
	b.click(b.find(`#graph g[aria-label="fp_beta"]`))
	b.waitScript("fp_beta zoomed to the full width", `const r = document.querySelector('#graph g[aria-label="fp_beta"] rect');
		return r !== null && Math.abs(r.width.baseVal.value - document.querySelector('#graph').viewBox.baseVal.width) < 1 &&
		  !document.querySelector('#reset').disabled`)
	var zoomed bool
	b.exec(&zoomed, `return document.querySelector('#graph g[aria-label="fp_alpha"]').classList.contains('anc')`)
	if !zoomed {
		t.Error("fp_alpha, fp_beta's caller, is not drawn as an ancestor of the zoomed frame")
	}

	// The download is the zoomed view: every sample passes fp_beta.
	var href string
	b.exec(&href, `return document.querySelector('#download').href`)
	checkDownload(t, href, pid)

	// Live again: a new interval is drawn without reloading the page,
	// still zoomed and filtered.
	var v0 string
	b.exec(&v0, `return document.body.dataset.version`)
	b.click(live)
	b.waitScript("a redraw for a new interval", `return document.body.dataset.version !== arguments[0] && window.__samePage === true &&
		document.querySelector('#graph g.match[aria-label="fp_gamma"]') !== null && !document.querySelector('#reset').disabled`, v0)

	png := b.screenshot()
	if err := os.WriteFile(filepath.Join(dir, "zoomed.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	// The picture for the README: the whole host, the search on.
	b.click(b.find(`#reset`))
	b.click(b.find(`#process option[value=""]`))
	b.waitScript("graph of all processes", `return document.querySelector('#graph g[aria-label="stackline"]') !== null`)
	if path := os.Getenv(screenshotEnv); path != "" {
		b.timeout = time.Minute
		b.waitScript("ten intervals in the view", `return Number(document.body.dataset.intervals) >= 10`)
		if err := os.WriteFile(path, b.screenshot(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", path)
	}
	var status string
	b.exec(&status, `return document.querySelector('#status').textContent`)
	t.Logf("page status: %s", status)

	a.stop(t)
}

// pageAgent is the built agent serving the flame graph page.
type pageAgent struct {
	cmd  *exec.Cmd
	logs bytes.Buffer
	// base is the page's URL, http://ADDRESS/.
	base string
}

// startPageAgent starts the agent bin with --http on a free loopback
// port, one interval a second, writing local files under dir, and args
// after those; its output is logged when the test fails.
func startPageAgent(t *testing.T, bin, dir string, args ...string) *pageAgent {
	t.Helper()
	addr := freeAddr(t)
	a := &pageAgent{base: "http://" + addr + "/"}
	args = append([]string{"--http", addr, "--reporter-interval", "1s", "--samples-per-second", "49",
		"--output-dir", filepath.Join(dir, "out"), "--log-level", "warn"}, args...)
	a.cmd = startCmd(t, &a.logs, bin, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent output:\n%s", a.logs.String())
		}
	})
	return a
}

// waitGraph polls the page's data at path (relative to the page) until
// its answer holds every one of needles, failing the test after timeout.
func (a *pageAgent) waitGraph(t *testing.T, timeout time.Duration, path string, needles ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		body, err := get(a.base + path)
		if err == nil && !slices.ContainsFunc(needles, func(n string) bool { return !strings.Contains(body, n) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not all in %s after %v (last error %v): %.500s", needles, path, timeout, err, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// stop stops the agent with SIGTERM, as a person would with the page
// open, and checks that it exits cleanly within 30s.
func (a *pageAgent) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("agent did not stop within 30s of SIGTERM with the page open")
	}
}

// showProcess picks process pid, named name, in the page's process
// filter and waits for the graph of that process alone.
func showProcess(b *browser, pid int, name string) {
	b.t.Helper()
	var opt element
	b.exec(&opt, `return [...document.querySelectorAll('#process option')].find(o => o.value.endsWith('\u0000' + arguments[0]))`, strconv.Itoa(pid))
	if opt == nil {
		b.t.Fatalf("process filter lists no option for pid %d", pid)
	}
	b.click(opt)
	b.waitScript("graph of process "+name+" alone",
		`const gs = document.querySelectorAll('#graph g[aria-label]');
		 return gs.length > 0 && [...gs].every(g => g.getAttribute('aria-label') !== 'stackline') &&
		   document.querySelector('#graph g[aria-label="' + arguments[0] + '"]') !== null`, name)
}

// checkDownload fetches the page's pprof download and checks that it
// holds the workload's chain, every sample through fp_beta, of pid only.
func checkDownload(t *testing.T, href string, pid int) {
	t.Helper()
	if !strings.Contains(href, "focus=fp_beta") {
		t.Errorf("download link %s does not focus on fp_beta", href)
	}
	resp, err := http.Get(href)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") {
		t.Errorf("download's Content-Disposition is %q", cd)
	}
	p, err := profile.Parse(resp.Body)
	if err != nil {
		t.Fatalf("download is not a pprof profile: %v", err)
	}
	if len(p.Sample) == 0 {
		t.Fatal("download holds no samples")
	}
	var gamma int64
	for _, s := range p.Sample {
		var names []string
		for _, l := range s.Location {
			names = append(names, l.Line[0].Function.Name)
		}
		if !strings.Contains(strings.Join(names, ";"), "fp_beta;fp_alpha;main") {
			t.Errorf("downloaded sample outside the zoomed frame: %v", names)
		}
		if s.NumLabel["pid"][0] != int64(pid) {
			t.Errorf("downloaded sample of pid %v, want %d", s.NumLabel["pid"], pid)
		}
		if names[0] == "fp_gamma" {
			gamma += s.Value[0]
		}
	}
	if gamma == 0 {
		t.Error("download holds no sample in fp_gamma")
	}
}

// startCmd starts a command, its output into out (when not nil); it is
// killed when the test ends.
func startCmd(t *testing.T, out io.Writer, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), err
}
