package flamegraph

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/stackline-dev/stackline/reporter/localfile"
)

// Query selects the stacks a view shows.
type Query struct {
	// Window is how far back from the newest interval's end the view
	// reaches; intervals that ended earlier are left out. Zero means the
	// store's whole history.
	Window time.Duration
	// Type is the sample type ("samples" for CPU samples); empty means
	// the first the store holds, in the order of [defaultTypes].
	Type string
	// Process, PID and Thread filter by process.executable.name,
	// process.pid and thread.name; zero values match all.
	Process string
	PID     int64
	Thread  string
	// Focus, when set, keeps only the stacks that begin with these
	// names, process first: the view zoomed into one frame.
	Focus []string
}

// defaultTypes are the sample types a query without one prefers, in order.
var defaultTypes = []string{"samples"}

// matches reports whether st passes q's filters (all but the window and
// the focus).
func (q *Query) matches(st *stack) bool {
	return st.key.typ.Type == q.Type &&
		(q.Process == "" || st.key.process == q.Process) &&
		(q.PID == 0 || st.key.pid == q.PID) &&
		(q.Thread == "" || st.key.thread == q.Thread)
}

// focused reports whether st begins with q.Focus.
func (s *Store) focused(q *Query, st *stack) bool {
	if len(q.Focus) == 0 {
		return true
	}
	if q.Focus[0] != st.key.process || len(st.frames) < len(q.Focus)-1 {
		return false
	}
	for i, name := range q.Focus[1:] {
		if s.fns.list[s.frames.list[st.frames[i]].fn].name != name {
			return false
		}
	}
	return true
}

// selection is what a query selects, read under the store's lock.
type selection struct {
	q          Query
	types      []localfile.ValueType
	start, end time.Time
	intervals  int
	dropped    int64
	// values of the selected stacks, summed over the window.
	values map[*stack]int64
	// processes and threads in the window, before the process and
	// thread filters.
	processes map[procKey]int64
	threads   map[string]int64
}

type procKey struct {
	name string
	pid  int64
}

// selectStacks sums the values of the stacks q selects. s.mu must be held.
func (s *Store) selectStacks(q Query) *selection {
	sel := &selection{values: make(map[*stack]int64), processes: make(map[procKey]int64), threads: make(map[string]int64)}
	types := map[localfile.ValueType]bool{}
	for _, iv := range s.intervals {
		for _, e := range iv.entries {
			types[e.stack.key.typ] = true
		}
	}
	for t := range types {
		sel.types = append(sel.types, t)
	}
	slices.SortFunc(sel.types, func(a, b localfile.ValueType) int {
		ra, rb := slices.Index(defaultTypes, a.Type), slices.Index(defaultTypes, b.Type)
		if ra < 0 {
			ra = len(defaultTypes)
		}
		if rb < 0 {
			rb = len(defaultTypes)
		}
		return cmp.Or(cmp.Compare(ra, rb), strings.Compare(a.Type, b.Type), strings.Compare(a.Unit, b.Unit))
	})
	if q.Type == "" && len(sel.types) > 0 {
		q.Type = sel.types[0].Type
	}
	if q.Window <= 0 || q.Window > s.history {
		q.Window = s.history
	}
	sel.q = q
	if len(s.intervals) == 0 {
		return sel
	}
	newest := s.intervals[len(s.intervals)-1].end
	for _, iv := range s.intervals {
		if newest.Sub(iv.end) >= q.Window {
			continue
		}
		sel.intervals++
		if sel.start.IsZero() || iv.start.Before(sel.start) {
			sel.start = iv.start
		}
		sel.end = newest
		for t, v := range iv.dropped {
			if t.Type == q.Type {
				sel.dropped += v
			}
		}
		for _, e := range iv.entries {
			st := e.stack
			if st.key.typ.Type != q.Type {
				continue
			}
			sel.processes[procKey{st.key.process, st.key.pid}] += e.value
			if (q.Process == "" || st.key.process == q.Process) && (q.PID == 0 || st.key.pid == q.PID) {
				sel.threads[st.key.thread] += e.value
			}
			if q.matches(st) && s.focused(&q, st) {
				sel.values[st] += e.value
			}
		}
	}
	return sel
}

// tree is the flame graph of a selection: nodes in depth-first order,
// children sorted by name, each with its depth, so that a node's
// descendants follow it up to the next node no deeper than it.
type tree struct {
	fn    []uint32 // index into funcs
	line  []int64  // the line, or -1 when the merged frames differ
	depth []int32
	total []int64
	self  []int64
	funcs []function
}

// buildTree merges the selected stacks into a tree: a root, the processes
// by name, then the frames by function. It sorts the stacks by their
// functions' names, so that each stack shares with the one before it the
// path the tree already holds: the nodes come out depth first, with no
// lookup. s.mu must be held.
func (s *Store) buildTree(sel *selection) *tree {
	t := &tree{funcs: []function{{name: "all", kind: "root"}}}
	procFn := make(map[string]int32)
	// The tree's function of each of the store's, made on first use.
	local := make([]int32, len(s.fns.list))
	for i := range local {
		local[i] = -1
	}
	type item struct {
		st    *stack
		value int64
		fns   []int32 // tree functions, process first; then ranks
	}
	items := make([]item, 0, len(sel.values))
	n := 0
	for st := range sel.values {
		n += 1 + len(st.frames)
	}
	all := make([]int32, n) // the items' fns, one allocation
	for st, v := range sel.values {
		fns := all[: 1+len(st.frames) : 1+len(st.frames)]
		all = all[len(fns):]
		pf, ok := procFn[st.key.process]
		if !ok {
			pf = int32(len(t.funcs))
			t.funcs = append(t.funcs, function{name: st.key.process, kind: "process"})
			procFn[st.key.process] = pf
		}
		fns[0] = pf
		for i, id := range st.frames {
			fn := s.frames.list[id].fn
			fi := local[fn]
			if fi < 0 {
				fi = int32(len(t.funcs))
				t.funcs = append(t.funcs, s.fns.list[fn])
				local[fn] = fi
			}
			fns[i+1] = fi
		}
		items = append(items, item{st, v, fns})
	}
	// Rank the functions in name order; sort the stacks by their ranks.
	order := make([]int32, len(t.funcs))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		fa, fb := t.funcs[a], t.funcs[b]
		return cmp.Or(strings.Compare(fa.name, fb.name), strings.Compare(fa.file, fb.file), strings.Compare(fa.kind, fb.kind))
	})
	rank := make([]int32, len(t.funcs))
	for r, fi := range order {
		rank[fi] = int32(r)
	}
	for _, it := range items {
		for i, fi := range it.fns {
			it.fns[i] = rank[fi]
		}
	}
	slices.SortFunc(items, func(a, b item) int { return slices.Compare(a.fns, b.fns) })

	// Count the nodes first, so that the columns are made once.
	nodes := 1
	var prev []int32
	for _, it := range items {
		lcp := 0
		for lcp < len(prev) && lcp < len(it.fns) && it.fns[lcp] == prev[lcp] {
			lcp++
		}
		nodes += len(it.fns) - lcp
		prev = it.fns
	}
	t.fn, t.line, t.depth = make([]uint32, 0, nodes), make([]int64, 0, nodes), make([]int32, 0, nodes)
	t.total, t.self = make([]int64, 0, nodes), make([]int64, 0, nodes)

	t.add(0, 0, 0)
	var open []int32 // the nodes of the previous stack, depth 1 first
	prev = nil
	for _, it := range items {
		lcp := 0
		for lcp < len(open) && lcp < len(it.fns) && it.fns[lcp] == prev[lcp] {
			lcp++
		}
		open = open[:lcp]
		for d := lcp; d < len(it.fns); d++ {
			var line int64
			if d > 0 {
				line = s.frames.list[it.st.frames[d-1]].line
			}
			open = append(open, t.add(uint32(order[it.fns[d]]), line, int32(d+1)))
		}
		for d := 1; d < lcp; d++ {
			if n := open[d]; t.line[n] != s.frames.list[it.st.frames[d-1]].line {
				t.line[n] = -1
			}
		}
		t.total[0] += it.value
		for _, n := range open {
			t.total[n] += it.value
		}
		if len(open) > 0 {
			t.self[open[len(open)-1]] += it.value
		}
		prev = it.fns
	}
	return t
}

// add appends a node and returns its index.
func (t *tree) add(fn uint32, line int64, depth int32) int32 {
	t.fn = append(t.fn, fn)
	t.line = append(t.line, line)
	t.depth = append(t.depth, depth)
	t.total = append(t.total, 0)
	t.self = append(t.self, 0)
	return int32(len(t.fn) - 1)
}
