package flamegraph

import (
	"fmt"
	"io"

	"github.com/google/pprof/profile"

	"github.com/stackline-dev/stackline/reporter/localfile"
)

// writePprof writes the selected stacks as a gzipped pprof profile: one
// sample per stack and thread, labelled as the local pprof files are, and
// one location per frame. s.mu must be held.
func (s *Store) writePprof(w io.Writer, sel *selection) error {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: sel.q.Type, Unit: "count"}},
	}
	for _, t := range sel.types {
		if t.Type == sel.q.Type {
			p.SampleType[0].Unit = t.Unit
			break
		}
	}
	if !sel.start.IsZero() {
		p.TimeNanos = sel.start.UnixNano()
		p.DurationNanos = sel.end.Sub(sel.start).Nanoseconds()
	}
	fns := make(map[uint32]*profile.Function)
	locs := make(map[uint32]*profile.Location)
	location := func(id uint32) *profile.Location {
		if l, ok := locs[id]; ok {
			return l
		}
		fr := s.frames.list[id]
		fn, ok := fns[fr.fn]
		if !ok {
			f := s.fns.list[fr.fn]
			fn = &profile.Function{ID: uint64(len(p.Function) + 1), Name: f.name, SystemName: f.name, Filename: f.file}
			p.Function = append(p.Function, fn)
			fns[fr.fn] = fn
		}
		l := &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: fn, Line: fr.line}}}
		p.Location = append(p.Location, l)
		locs[id] = l
		return l
	}
	for st, v := range sel.values {
		ps := &profile.Sample{
			Value:    []int64{v},
			Label:    map[string][]string{localfile.LabelProcessName: {st.key.process}},
			NumLabel: map[string][]int64{localfile.LabelPID: {st.key.pid}},
		}
		if st.key.thread != "" {
			ps.Label[localfile.LabelThreadName] = []string{st.key.thread}
		}
		for i := len(st.frames) - 1; i >= 0; i-- {
			ps.Location = append(ps.Location, location(st.frames[i]))
		}
		p.Sample = append(p.Sample, ps)
	}
	if err := p.CheckValid(); err != nil {
		return fmt.Errorf("flamegraph: built an invalid pprof profile: %w", err)
	}
	return p.Write(w)
}
