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
		if s.fnList[s.frameList[st.frames[i]].fn].name != name {
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

// node is a tree node while the tree is built.
type node struct {
	fn       uint32
	line     int64
	total    int64
	self     int64
	children map[uint32]*node // by function
}

// buildTree merges the selected stacks into a tree: a root, the processes
// by name, then the frames by function. s.mu must be held.
func (s *Store) buildTree(sel *selection) *tree {
	t := &tree{}
	fnIndex := make(map[function]uint32)
	intern := func(f function) uint32 {
		i, ok := fnIndex[f]
		if !ok {
			i = uint32(len(t.funcs))
			t.funcs = append(t.funcs, f)
			fnIndex[f] = i
		}
		return i
	}
	root := &node{fn: intern(function{name: "all", kind: "root"}), children: map[uint32]*node{}}
	child := func(n *node, fn uint32, line int64) *node {
		c, ok := n.children[fn]
		if !ok {
			c = &node{fn: fn, line: line}
			if n.children == nil {
				n.children = make(map[uint32]*node)
			}
			n.children[fn] = c
		} else if c.line != line {
			c.line = -1
		}
		return c
	}
	// Store function IDs map to tree function indexes once each.
	local := make(map[uint32]uint32)
	for st, v := range sel.values {
		root.total += v
		n := child(root, intern(function{name: st.key.process, kind: "process"}), 0)
		n.total += v
		for _, id := range st.frames {
			fr := s.frameList[id]
			fi, ok := local[fr.fn]
			if !ok {
				fi = intern(s.fnList[fr.fn])
				local[fr.fn] = fi
			}
			n = child(n, fi, fr.line)
			n.total += v
		}
		n.self += v
	}
	var walk func(n *node, depth int32)
	walk = func(n *node, depth int32) {
		t.fn = append(t.fn, n.fn)
		t.line = append(t.line, n.line)
		t.depth = append(t.depth, depth)
		t.total = append(t.total, n.total)
		t.self = append(t.self, n.self)
		kids := make([]*node, 0, len(n.children))
		for _, c := range n.children {
			kids = append(kids, c)
		}
		slices.SortFunc(kids, func(a, b *node) int {
			fa, fb := t.funcs[a.fn], t.funcs[b.fn]
			return cmp.Or(strings.Compare(fa.name, fb.name), strings.Compare(fa.file, fb.file), strings.Compare(fa.kind, fb.kind))
		})
		for _, c := range kids {
			walk(c, depth+1)
		}
	}
	walk(root, 0)
	return t
}
