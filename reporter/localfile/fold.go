package localfile

import (
	"cmp"
	"fmt"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
)

// ValueType is the type and unit of a profile's sample values, as its
// export names them: "samples"/"count" for CPU samples.
type ValueType struct {
	Type, Unit string
}

// Frame is one frame of a folded stack.
type Frame struct {
	// Name is the function's name, or "file+0xADDR" (or "[unknown]") for
	// a frame without one.
	Name string
	// File and Line are the source file and line, when known.
	File string
	Line int64
	// Kind is the frame's profile.frame.type: "kernel", "native", "go",
	// "cpython", ...; empty when the export gives none.
	Kind string
}

// FoldedStack is one distinct stack of one thread of a process in an
// export, with the sum of its samples' values.
type FoldedStack struct {
	// Process is the executable's name (process.executable.name, else
	// the base of its path, else "[unknown]"); PID its process ID.
	Process string
	PID     int64
	// Thread is the thread's name (thread.name), empty when unknown.
	Thread string
	// Type is the sample type of the profile the samples came from.
	Type ValueType
	// Frames are the stack's frames, root first, inlined functions
	// after the function they were inlined into. Stacks of one export
	// share the slices of their common locations: do not modify them.
	Frames []Frame
	// Value is the sum of the samples' values (their count for CPU
	// samples).
	Value int64
}

// Folded is an export folded into distinct stacks: what the folded
// stacks file holds, with the frames' files, lines and kinds, and the
// threads apart.
type Folded struct {
	// Start and End bound the profiled interval (zero when the export
	// holds no samples).
	Start, End time.Time
	// Stacks are the distinct stacks, in the order of their first sample.
	Stacks []*FoldedStack
}

// foldKey identifies a distinct stack of an export.
type foldKey struct {
	pid    int64
	thread string
	stack  int32
	typ    ValueType
}

// Fold folds req into distinct stacks, exactly as a [Writer] folds it for
// its folded stacks file, without building a pprof profile. It rejects a
// request that fails [otlpcheck.Validate].
func Fold(req *collectorpb.ExportProfilesServiceRequest) (*Folded, error) {
	if err := otlpcheck.Validate(req); err != nil {
		return nil, fmt.Errorf("localfile: invalid request: %w", err)
	}
	c := newConverter(req, false)
	c.foldOnly = true
	if err := c.convert(); err != nil {
		return nil, err
	}
	f := &Folded{Stacks: c.foldOrder}
	if c.p.TimeNanos != 0 {
		f.Start = time.Unix(0, c.p.TimeNanos)
		f.End = f.Start.Add(time.Duration(c.p.DurationNanos))
	}
	return f, nil
}

// fold adds value to the folded stack of key, made of the process and the
// frames of locs (leaf first).
func (c *converter) fold(key foldKey, proc string, locs []int32, value int64) {
	if st, ok := c.folds[key]; ok {
		st.Value += value
		return
	}
	n := 0
	for _, li := range locs {
		n += len(c.foldedFrames(li))
	}
	frames := make([]Frame, 0, n)
	for j := len(locs) - 1; j >= 0; j-- {
		frames = append(frames, c.foldedFrames(locs[j])...)
	}
	st := &FoldedStack{Process: proc, PID: key.pid, Thread: key.thread, Type: key.typ, Frames: frames, Value: value}
	c.folds[key] = st
	c.foldOrder = append(c.foldOrder, st)
}

// foldedFrames returns the frames a location contributes to a folded
// stack, root first: the caller before the functions inlined into it.
func (c *converter) foldedFrames(li int32) []Frame {
	if f, ok := c.frames[li]; ok {
		return f
	}
	ol := c.d.LocationTable[li]
	// The location's attributes were validated, so Attr cannot fail.
	kind, _ := otlpcheck.Attr(c.req, ol.GetAttributeIndices(), semconv.FrameType)
	var frames []Frame
	lines := ol.GetLines()
	for k := len(lines) - 1; k >= 0; k-- {
		of := c.d.FunctionTable[lines[k].GetFunctionIndex()]
		frames = append(frames, Frame{
			Name: cmp.Or(c.str(of.GetNameStrindex()), c.str(of.GetSystemNameStrindex()), unknownName),
			File: c.str(of.GetFilenameStrindex()),
			Line: lines[k].GetLine(),
			Kind: kind,
		})
	}
	if len(frames) == 0 {
		frames = []Frame{{Name: c.unnamed(ol), Kind: kind}}
	}
	c.frames[li] = frames
	return frames
}
