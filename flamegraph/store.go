// Package flamegraph serves a live flame graph of the host's recent
// profile: one page, its embedded script and style, and the data it asks
// for, made from the reporter's exports as the local files fold them
// ([localfile.Fold]), held for a bounded time and number of stacks.
package flamegraph

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/stackline-dev/stackline/reporter/localfile"
)

// function is what a flame graph merges frames by: a name, its source
// file and the frame's kind.
type function struct {
	name, file, kind string
}

// frame is one interned frame: a function and a line.
type frame struct {
	fn   uint32
	line int64
}

// stackKey identifies a distinct stack in the store.
type stackKey struct {
	process string
	pid     int64
	thread  string
	typ     localfile.ValueType
	frames  string // the frames' IDs, 4 bytes each, root first
}

// stack is a distinct stack held by at least one interval.
type stack struct {
	key    stackKey
	frames []uint32 // frame IDs, root first
	refs   int      // intervals that hold it
}

// entry is a stack's value in one interval.
type entry struct {
	stack *stack
	value int64
}

// interval is one export, folded.
type interval struct {
	start, end time.Time
	entries    []entry
	// dropped is the value of stacks left out to stay within the
	// store's bound, by sample type.
	dropped map[localfile.ValueType]int64
}

// Store holds the folded stacks of the most recent intervals, within a
// time and a count of distinct stacks. Its methods may be called from
// several goroutines.
type Store struct {
	history   time.Duration
	maxStacks int

	mu        sync.Mutex
	intervals []*interval // oldest first
	stacks    map[stackKey]*stack
	frames    interned[frame]    // references: the stacks that hold each
	fns       interned[function] // references: the frames that hold each
	version   uint64             // intervals added
}

// StoreStats counts what a [Store] holds and has left out.
type StoreStats struct {
	// Intervals, Stacks, Frames and Functions are held now.
	Intervals, Stacks, Frames, Functions int
	// Added is the number of intervals added since the store was made.
	Added uint64
	// Bytes estimates the heap the store holds: its stacks, frames,
	// functions, their names and the intervals' entries, with the
	// overhead of the maps that index them.
	Bytes int64
}

// Estimated heap bytes of the store's parts, beyond their strings and
// frame lists: a stack (its struct and its map entry), a frame (list,
// references and map entry), a function (list, references, map entry and
// string headers), an interval's entry.
const (
	stackBytes    = 260
	frameBytes    = 48
	functionBytes = 112
	entryBytes    = 16
)

// NewStore returns a store that keeps the intervals that ended within
// history of the newest one, and at most maxStacks distinct stacks: the
// oldest intervals go first, and an interval with more stacks than that
// on its own keeps its heaviest.
func NewStore(history time.Duration, maxStacks int) (*Store, error) {
	if history <= 0 {
		return nil, errors.New("flamegraph: history must be positive")
	}
	if maxStacks <= 0 {
		return nil, errors.New("flamegraph: the stack bound must be positive")
	}
	return &Store{
		history:   history,
		maxStacks: maxStacks,
		stacks:    make(map[stackKey]*stack),
		frames:    interned[frame]{ids: make(map[frame]uint32)},
		fns:       interned[function]{ids: make(map[function]uint32)},
	}, nil
}

// History is how long the store keeps an interval.
func (s *Store) History() time.Duration { return s.history }

// Stats returns what the store holds.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StoreStats{
		Intervals: len(s.intervals),
		Stacks:    len(s.stacks),
		Frames:    len(s.frames.ids),
		Functions: len(s.fns.ids),
		Added:     s.version,
	}
	b := int64(len(s.frames.ids))*frameBytes + int64(len(s.fns.ids))*functionBytes
	for _, k := range s.stacks {
		// The frame IDs twice: the list and the key.
		b += stackBytes + int64(len(k.frames))*8 + int64(len(k.key.process)+len(k.key.thread))
	}
	for fn := range s.fns.ids {
		b += int64(len(fn.name) + len(fn.file) + len(fn.kind))
	}
	for _, iv := range s.intervals {
		b += int64(cap(iv.entries)) * entryBytes
	}
	st.Bytes = b
	return st
}

// Version is the number of intervals added so far: it changes whenever
// what the store shows does.
func (s *Store) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Add adds one folded export. An export without stacks adds nothing.
func (s *Store) Add(f *localfile.Folded) {
	if len(f.Stacks) == 0 {
		return
	}
	stacks := f.Stacks
	var dropped map[localfile.ValueType]int64
	if len(stacks) > s.maxStacks {
		// Keep the heaviest: an interval alone never holds more than
		// the bound.
		stacks = slices.Clone(stacks)
		slices.SortStableFunc(stacks, func(a, b *localfile.FoldedStack) int { return cmp.Compare(b.Value, a.Value) })
		dropped = make(map[localfile.ValueType]int64)
		for _, st := range stacks[s.maxStacks:] {
			dropped[st.Type] += st.Value
		}
		stacks = stacks[:s.maxStacks]
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	iv := &interval{start: f.Start, end: f.End, entries: make([]entry, 0, len(stacks)), dropped: dropped}
	if iv.end.IsZero() {
		iv.end = time.Now()
		iv.start = iv.end
	}
	var key []byte
	for _, fs := range stacks {
		key = key[:0]
		ids := make([]uint32, len(fs.Frames))
		for i, fr := range fs.Frames {
			ids[i] = s.internFrame(fr)
			key = append(key, byte(ids[i]), byte(ids[i]>>8), byte(ids[i]>>16), byte(ids[i]>>24))
		}
		k := stackKey{process: fs.Process, pid: fs.PID, thread: fs.Thread, typ: fs.Type, frames: string(key)}
		st, ok := s.stacks[k]
		if ok {
			// The frames were held already: give back the references
			// just taken.
			for _, id := range ids {
				s.releaseFrame(id)
			}
		} else {
			st = &stack{key: k, frames: ids}
			s.stacks[k] = st
		}
		st.refs++
		iv.entries = append(iv.entries, entry{stack: st, value: fs.Value})
	}
	// Intervals arrive in order; one that does not (a clock step) goes
	// where its end puts it.
	i := len(s.intervals)
	for i > 0 && s.intervals[i-1].end.After(iv.end) {
		i--
	}
	s.intervals = slices.Insert(s.intervals, i, iv)
	s.version++
	s.trim()
}

// trim drops the intervals that ended more than the history before the
// newest, then the oldest while the store holds more stacks than its bound.
func (s *Store) trim() {
	newest := s.intervals[len(s.intervals)-1].end
	n := 0
	for n < len(s.intervals)-1 && (newest.Sub(s.intervals[n].end) > s.history || len(s.stacks) > s.maxStacks) {
		s.release(s.intervals[n])
		n++
	}
	if n > 0 {
		clear(s.intervals[:n])
		s.intervals = slices.Delete(s.intervals, 0, n)
	}
}

// release gives back an interval's references to its stacks.
func (s *Store) release(iv *interval) {
	for _, e := range iv.entries {
		st := e.stack
		if st.refs--; st.refs > 0 {
			continue
		}
		delete(s.stacks, st.key)
		for _, id := range st.frames {
			s.releaseFrame(id)
		}
	}
}

// internFrame returns the ID of fr, taking a reference to it.
func (s *Store) internFrame(fr localfile.Frame) uint32 {
	k := frame{line: fr.Line}
	k.fn, _ = s.fns.ref(function{name: fr.Name, file: fr.File, kind: fr.Kind})
	id, added := s.frames.ref(k)
	if !added {
		// The frame already held its reference to the function.
		s.fns.unref(k.fn)
	}
	return id
}

// releaseFrame gives back one reference to frame id, forgetting the frame
// (and its function) with the last one.
func (s *Store) releaseFrame(id uint32) {
	if k, freed := s.frames.unref(id); freed {
		s.fns.unref(k.fn)
	}
}

// interned numbers distinct values of K, counting references to each and
// reusing the IDs of those no longer referenced.
type interned[K comparable] struct {
	ids  map[K]uint32
	list []K   // by ID
	refs []int // references to each ID; 0: free
	free []uint32
}

// ref returns the ID of k, taking a reference to it; added reports that k
// was not held before.
func (in *interned[K]) ref(k K) (id uint32, added bool) {
	id, ok := in.ids[k]
	if !ok {
		if n := len(in.free); n > 0 {
			id = in.free[n-1]
			in.free = in.free[:n-1]
			in.list[id] = k
		} else {
			id = uint32(len(in.list))
			in.list = append(in.list, k)
			in.refs = append(in.refs, 0)
		}
		in.ids[k] = id
	}
	in.refs[id]++
	return id, !ok
}

// unref gives back one reference to id; with the last one, the value is
// forgotten and returned with freed true.
func (in *interned[K]) unref(id uint32) (k K, freed bool) {
	if in.refs[id]--; in.refs[id] > 0 {
		return k, false
	}
	k = in.list[id]
	delete(in.ids, k)
	var zero K
	in.list[id] = zero
	in.free = append(in.free, id)
	return k, true
}
