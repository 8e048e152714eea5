package flamegraph

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/reporter/localfile"
)

var (
	t0      = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	cpuType = localfile.ValueType{Type: "samples", Unit: "count"}
)

// stackOf builds a folded stack from "name" or "name@file:line/kind"
// frames, root first.
func stackOf(proc string, pid int64, thread string, value int64, frames ...string) *localfile.FoldedStack {
	st := &localfile.FoldedStack{Process: proc, PID: pid, Thread: thread, Type: cpuType, Value: value}
	for _, f := range frames {
		fr := localfile.Frame{Kind: "native"}
		f, fr.Kind, _ = strings.Cut(f, "/")
		if fr.Kind == "" {
			fr.Kind = "native"
		}
		var loc string
		fr.Name, loc, _ = strings.Cut(f, "@")
		if loc != "" {
			var line string
			fr.File, line, _ = strings.Cut(loc, ":")
			fmt.Sscan(line, &fr.Line)
		}
		st.Frames = append(st.Frames, fr)
	}
	return st
}

// folded is an interval of 5 s starting at t0 + i*5s.
func folded(i int, stacks ...*localfile.FoldedStack) *localfile.Folded {
	start := t0.Add(time.Duration(i) * 5 * time.Second)
	return &localfile.Folded{Start: start, End: start.Add(5 * time.Second), Stacks: stacks}
}

// checkInterned checks that the store holds exactly the frames and
// functions its stacks reference, each with as many references.
func checkInterned(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	frameRefs := map[uint32]int{}
	for _, st := range s.stacks {
		if st.refs <= 0 {
			t.Errorf("stack with %d references held", st.refs)
		}
		for _, id := range st.frames {
			frameRefs[id]++
		}
	}
	refs := 0
	for _, iv := range s.intervals {
		refs += len(iv.entries)
	}
	held := 0
	for _, st := range s.stacks {
		held += st.refs
	}
	if held != refs {
		t.Errorf("stacks hold %d references, intervals give %d", held, refs)
	}
	if len(frameRefs) != len(s.frames.ids) {
		t.Errorf("%d frames interned, %d referenced", len(s.frames.ids), len(frameRefs))
	}
	fnRefs := map[uint32]int{}
	for k, id := range s.frames.ids {
		if s.frames.list[id] != k {
			t.Errorf("frame %d is %v in the list, %v in the map", id, s.frames.list[id], k)
		}
		if s.frames.refs[id] != frameRefs[id] {
			t.Errorf("frame %d counts %d references, has %d", id, s.frames.refs[id], frameRefs[id])
		}
		fnRefs[k.fn]++
	}
	if len(fnRefs) != len(s.fns.ids) {
		t.Errorf("%d functions interned, %d referenced", len(s.fns.ids), len(fnRefs))
	}
	for fn, id := range s.fns.ids {
		if s.fns.list[id] != fn || s.fns.refs[id] != fnRefs[id] {
			t.Errorf("function %v (%d): list %v, %d references, want %d", fn, id, s.fns.list[id], s.fns.refs[id], fnRefs[id])
		}
	}
}

func TestStoreHistory(t *testing.T) {
	s, err := NewStore(time.Minute, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		// One stack shared by every interval, one of its own.
		s.Add(folded(i,
			stackOf("app", 1, "main", 1, "main", "work"),
			stackOf("app", 1, "main", 2, "main", fmt.Sprintf("only%d", i))))
		checkInterned(t, s)
	}
	st := s.Stats()
	// Intervals ending at most a minute before the newest: 13 of them.
	if st.Intervals != 13 || st.Stacks != 14 || st.Added != 30 {
		t.Errorf("stats %+v, want 13 intervals, 14 stacks, 30 added", st)
	}
	if st.Functions != 15 || st.Frames != 15 {
		t.Errorf("stats %+v, want 15 functions and frames (main, work, 13 only*)", st)
	}
	sel := s.selectStacks(Query{Window: 20 * time.Second})
	if sel.intervals != 4 || !sel.end.Equal(t0.Add(150*time.Second)) || !sel.start.Equal(t0.Add(130*time.Second)) {
		t.Errorf("20 s window: %d intervals [%v, %v]", sel.intervals, sel.start, sel.end)
	}
}

func TestStoreMaxStacks(t *testing.T) {
	s, err := NewStore(time.Hour, 10)
	if err != nil {
		t.Fatal(err)
	}
	var stacks []*localfile.FoldedStack
	for i := range 25 {
		stacks = append(stacks, stackOf("app", 1, "main", int64(i+1), "main", fmt.Sprintf("f%d", i)))
	}
	s.Add(folded(0, stacks...))
	checkInterned(t, s)
	sel := s.selectStacks(Query{})
	var kept []int64
	for _, v := range sel.values {
		kept = append(kept, v)
	}
	slices.Sort(kept)
	if !slices.Equal(kept, []int64{16, 17, 18, 19, 20, 21, 22, 23, 24, 25}) {
		t.Errorf("kept values %v, want the 10 heaviest", kept)
	}
	if sel.dropped != 15*16/2 {
		t.Errorf("dropped %d, want %d", sel.dropped, 15*16/2)
	}
	// A second interval of 5 new stacks pushes the first out.
	s.Add(folded(1, stacks[:5]...))
	checkInterned(t, s)
	if st := s.Stats(); st.Intervals != 1 || st.Stacks != 5 {
		t.Errorf("stats %+v, want the newest interval alone", st)
	}
}

func TestStoreOutOfOrder(t *testing.T) {
	s, _ := NewStore(time.Hour, 1000)
	s.Add(folded(2, stackOf("a", 1, "", 1, "x")))
	s.Add(folded(1, stackOf("a", 1, "", 1, "y")))
	s.Add(folded(3, stackOf("a", 1, "", 1, "z")))
	var ends []time.Time
	for _, iv := range s.intervals {
		ends = append(ends, iv.end)
	}
	if !slices.IsSortedFunc(ends, func(a, b time.Time) int { return a.Compare(b) }) {
		t.Errorf("intervals out of order: %v", ends)
	}
}

func TestNewStoreErrors(t *testing.T) {
	if _, err := NewStore(0, 10); err == nil {
		t.Error("NewStore accepted no history")
	}
	if _, err := NewStore(time.Minute, 0); err == nil {
		t.Error("NewStore accepted no stacks")
	}
}

// decodedGraph is /api/flamegraph's answer as a page reads it.
type decodedGraph struct {
	graphJSON
	Nodes struct {
		Fn    []uint32 `json:"fn"`
		Line  []int64  `json:"line"`
		Depth []int32  `json:"depth"`
		Total []int64  `json:"total"`
		Self  []int64  `json:"self"`
	} `json:"nodes"`
}

// graphOf returns s's graph for q, decoded.
func graphOf(t *testing.T, srv *Server, q Query) decodedGraph {
	t.Helper()
	b, err := srv.Graph(q)
	if err != nil {
		t.Fatal(err)
	}
	var g decodedGraph
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("%v: %.300s", err, b)
	}
	if n := len(g.Nodes.Fn); len(g.Nodes.Line) != n || len(g.Nodes.Depth) != n || len(g.Nodes.Total) != n || len(g.Nodes.Self) != n {
		t.Fatalf("node columns of different lengths: %.300s", b)
	}
	return g
}

// render returns g's nodes one a line: indented by depth, "name total
// self line".
func render(g decodedGraph) string {
	var b strings.Builder
	for i, fn := range g.Nodes.Fn {
		fmt.Fprintf(&b, "%s%s/%s %d %d %d\n", strings.Repeat(" ", int(g.Nodes.Depth[i])), g.Names[fn],
			g.Kinds[g.Kind[fn]], g.Nodes.Total[i], g.Nodes.Self[i], g.Nodes.Line[i])
	}
	return b.String()
}

func TestGraph(t *testing.T) {
	srv, err := New(Options{History: time.Hour, MaxStacks: 1000})
	if err != nil {
		t.Fatal(err)
	}
	srv.add(folded(0,
		stackOf("app", 1, "main", 3, "main@app.c:10", "work@app.c:20", "read/kernel"),
		stackOf("app", 1, "worker", 2, "main@app.c:10", "work@app.c:21"),
		stackOf("app", 2, "main", 4, "main@app.c:10", "idle@app.c:5"),
		stackOf("db", 3, "main", 1, "main.main@db.go:7/go")))
	srv.add(folded(1, stackOf("app", 1, "main", 5, "main@app.c:10", "work@app.c:20")))

	g := graphOf(t, srv, Query{})
	want := `all/root 15 0 0
 app/process 14 0 0
  main/native 14 0 10
   idle/native 4 4 5
   work/native 10 7 -1
    read/kernel 3 3 0
 db/process 1 0 0
  main.main/go 1 1 7
`
	if got := render(g); got != want {
		t.Errorf("graph:\n%s\nwant:\n%s", got, want)
	}
	if g.Stacks != 5 || g.Intervals != 2 || g.Type != "samples" || g.Unit != "count" {
		t.Errorf("graph of %d stacks, %d intervals, type %s/%s", g.Stacks, g.Intervals, g.Type, g.Unit)
	}
	if len(g.Processes) != 3 || g.Processes[0] != (processJSON{"app", 1, 10}) {
		t.Errorf("processes %v", g.Processes)
	}

	// The filters, and the window.
	for _, tc := range []struct {
		q     Query
		total int64
	}{
		{Query{Process: "app"}, 14},
		{Query{PID: 1}, 10},
		{Query{Process: "app", Thread: "worker"}, 2},
		{Query{Thread: "main"}, 13},
		{Query{Window: 5 * time.Second}, 5},
		{Query{Type: "off_cpu"}, 0},
	} {
		g := graphOf(t, srv, tc.q)
		if got := g.Nodes.Total[0]; got != tc.total {
			t.Errorf("%+v: total %d, want %d", tc.q, got, tc.total)
		}
	}
	if g := graphOf(t, srv, Query{Process: "app"}); len(g.Threads) != 2 {
		t.Errorf("threads of app: %v", g.Threads)
	}
}

// synthetic returns an interval of n distinct stacks of depth 8 to 40 in
// 20 processes, from a fixed seed.
func synthetic(n int) *localfile.Folded {
	r := rand.New(rand.NewPCG(1, 2))
	kinds := []string{"native", "go", "cpython", "jvm", "v8js"}
	seen := map[string]bool{}
	f := folded(0)
	for len(f.Stacks) < n {
		proc := fmt.Sprintf("proc%d", r.IntN(20))
		kind := kinds[r.IntN(len(kinds))]
		depth := 8 + r.IntN(33)
		st := &localfile.FoldedStack{Process: proc, PID: int64(1000 + r.IntN(40)), Thread: "t" + fmt.Sprint(r.IntN(4)), Type: cpuType, Value: 1 + r.Int64N(100)}
		var key strings.Builder
		for d := range depth {
			k := kind
			if d > depth-4 {
				k = "kernel"
			}
			name := fmt.Sprintf("%s_fn_%d_%d", k, d, r.IntN(6))
			st.Frames = append(st.Frames, localfile.Frame{Name: name, File: "src/" + k + ".c", Line: int64(d), Kind: k})
			key.WriteString(name)
		}
		if k := fmt.Sprint(proc, st.PID, st.Thread, key.String()); !seen[k] {
			seen[k] = true
			f.Stacks = append(f.Stacks, st)
		}
	}
	return f
}

// BenchmarkGraph50k measures the answer to the page for 50,000 distinct
// stacks: selecting, merging into a tree and writing it as JSON.
func BenchmarkGraph50k(b *testing.B) {
	srv, err := New(Options{History: time.Hour, MaxStacks: 100_000})
	if err != nil {
		b.Fatal(err)
	}
	srv.add(synthetic(50_000))
	var w countingWriter
	for b.Loop() {
		w = 0
		if err := writeGraph(&w, srv.view(Query{})); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(w), "json-bytes")
}

// countingWriter counts the bytes written to it.
type countingWriter int

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}

// BenchmarkAdd50k measures adding an interval of 50,000 distinct stacks
// to a store that holds them already (the steady state).
func BenchmarkAdd50k(b *testing.B) {
	s, err := NewStore(time.Hour, 100_000)
	if err != nil {
		b.Fatal(err)
	}
	f := synthetic(50_000)
	s.Add(f)
	for b.Loop() {
		s.Add(f)
	}
}

// TestStoreBytes checks the store's estimate of its heap against the heap
// it takes, with 50,000 distinct stacks.
func TestStoreBytes(t *testing.T) {
	f := synthetic(50_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := NewStore(time.Hour, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	s.Add(f)
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	st := s.Stats()
	t.Logf("%d stacks, %d frames, %d functions: %.1f MB of heap, estimated %.1f MB", st.Stacks, st.Frames, st.Functions, float64(heap)/(1<<20), float64(st.Bytes)/(1<<20))
	if r := float64(st.Bytes) / float64(heap); r < 0.7 || r > 1.3 {
		t.Errorf("estimate %d bytes, heap %d: off by more than 30%%", st.Bytes, heap)
	}
	runtime.KeepAlive(f)
	runtime.KeepAlive(s)
}
