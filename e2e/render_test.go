package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/flamegraph"
	"github.com/stackline-dev/stackline/reporter/localfile"
)

// renderStacks is the number of distinct stacks TestFlameGraphRender50k
// draws.
const renderStacks = 50_000

// manyStacks returns an interval of n distinct stacks, 8 to 40 frames deep,
// in 20 processes of five runtimes, the last frames in the kernel, from a
// fixed seed. At each depth a frame is one of six functions, so stacks
// share little below their first frames: a hard case for the page.
func manyStacks(n int) *localfile.Folded {
	r := rand.New(rand.NewPCG(3, 4))
	kinds := []string{"native", "go", "cpython", "jvm", "v8js"}
	end := time.Now()
	f := &localfile.Folded{Start: end.Add(-5 * time.Second), End: end}
	seen := map[string]bool{}
	for len(f.Stacks) < n {
		kind := kinds[r.IntN(len(kinds))]
		st := &localfile.FoldedStack{
			Process: fmt.Sprintf("service-%d", r.IntN(20)),
			PID:     int64(1000 + r.IntN(40)),
			Thread:  "worker-" + strconv.Itoa(r.IntN(4)),
			Type:    localfile.ValueType{Type: "samples", Unit: "count"},
			Value:   1 + r.Int64N(100),
		}
		depth := 8 + r.IntN(33)
		var key strings.Builder
		fmt.Fprint(&key, st.Process, st.PID, st.Thread)
		for d := range depth {
			k := kind
			if d >= depth-3 {
				k = "kernel"
			}
			name := fmt.Sprintf("%s_function_%d_%d", k, d, r.IntN(6))
			st.Frames = append(st.Frames, localfile.Frame{Name: name, File: k + ".src", Line: int64(d + 1), Kind: k})
			key.WriteString(";" + name)
		}
		if !seen[key.String()] {
			seen[key.String()] = true
			f.Stacks = append(f.Stacks, st)
		}
	}
	return f
}

// TestFlameGraphRender50k serves 50,000 distinct stacks and measures, in
// headless Chromium, how long the page takes to load and draw them, to
// zoom and to search. It checks the page drew them; the times are logged
// (they depend on the host), not asserted.
func TestFlameGraphRender50k(t *testing.T) {
	b := startBrowser(t)
	srv, err := flamegraph.New(flamegraph.Options{History: 15 * time.Minute, MaxStacks: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	srv.Store().Add(manyStacks(renderStacks))
	mux := http.NewServeMux()
	srv.Register(mux)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	defer srv.Close()

	start := time.Now()
	b.navigate(ts.URL + "/")
	b.waitScript("the flame graph drawn", `return document.body.dataset.frames !== undefined`)
	wall := time.Since(start)
	var m map[string]string
	b.exec(&m, `return Object.assign({status: document.querySelector('#status').textContent}, document.body.dataset)`)
	if !strings.Contains(m["status"], "50,000 stacks") {
		t.Errorf("status reads %q, want 50,000 stacks", m["status"])
	}
	t.Logf("%d stacks, %s tree nodes: load (fetch, parse, prepare) %s ms, draw %s ms of %s frames; page ready %.0f ms after navigation",
		renderStacks, m["nodes"], m["loadMs"], m["renderMs"], m["frames"], wall.Seconds()*1000)

	// Zoom into a process, then search.
	b.click(b.find(`#graph g[aria-label="service-7"]`))
	b.waitScript("the zoomed graph", `return !document.querySelector('#reset').disabled`)
	b.exec(&m, `return Object.assign({}, document.body.dataset)`)
	t.Logf("zoom: draw %s ms of %s frames", m["renderMs"], m["frames"])
	b.click(b.find(`#reset`))
	b.click(b.find(`#graph g[aria-label="service-3"]`))
	b.exec(&m, `return Object.assign({}, document.body.dataset)`)
	t.Logf("zoom: draw %s ms of %s frames", m["renderMs"], m["frames"])
	b.sendKeys(b.find(`#search`), "kernel_function")
	b.find(`#graph g.match`)
	b.exec(&m, `return Object.assign({match: document.querySelector('#match').textContent}, document.body.dataset)`)
	t.Logf("search: draw %s ms of %s frames; %s", m["renderMs"], m["frames"], m["match"])
	if !strings.Contains(m["match"], "Matched:") {
		t.Errorf("search status reads %q", m["match"])
	}
}
