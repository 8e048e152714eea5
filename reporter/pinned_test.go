package reporter

import (
	"math/rand/v2"
	"testing"

	"github.com/stackline-dev/stackline/trace"
)

// TestPinnedFrames checks the interval's table of pinned frames against a
// map through random puts, replacements and lookups, over IDs that differ
// in one field only (file, address or type), the zero ID included, as the
// table grows from nothing and from a hint.
func TestPinnedFrames(t *testing.T) {
	for _, hint := range []int{0, 1, 300} {
		rng := rand.New(rand.NewPCG(1, uint64(hint)))
		p := newPinnedFrames(hint, rng.Uint64())
		want := map[trace.FrameID]trace.FrameInfo{}
		files := []trace.FileID{{}, {1}, {1, 2}, {15: 1}, fileID(7)}
		randomID := func() trace.FrameID {
			return trace.FrameID{
				File: files[rng.IntN(len(files))],
				Addr: uint64(rng.IntN(3000)),
				Type: []trace.FrameType{trace.FrameUnknown, trace.FrameNative, trace.FrameKernel, trace.FrameGo}[rng.IntN(4)],
			}
		}
		for i := range 20000 {
			id := randomID()
			if rng.IntN(2) == 0 {
				info := trace.FrameInfo{Lines: []trace.Line{{Function: "f", Line: int64(i)}}}
				p.put(id, info)
				want[id] = info
			}
			q := randomID()
			got, ok := p.get(q)
			w, wok := want[q]
			if ok != wok || ok && got.Lines[0].Line != w.Lines[0].Line {
				t.Fatalf("hint %d, step %d: get(%+v) = %+v, %v; want %+v, %v", hint, i, q, got, ok, w, wok)
			}
			if p.has(q) != wok {
				t.Fatalf("hint %d, step %d: has(%+v) = %v, want %v", hint, i, q, !wok, wok)
			}
		}
		if p.len() != len(want) {
			t.Errorf("hint %d: len() = %d, want %d", hint, p.len(), len(want))
		}
		if 2*p.len() >= len(p.slots) {
			t.Errorf("hint %d: %d entries in %d slots: more than half full", hint, p.len(), len(p.slots))
		}
		for id, w := range want {
			if got, ok := p.get(id); !ok || got.Lines[0].Line != w.Lines[0].Line {
				t.Fatalf("hint %d: get(%+v) = %+v, %v; want %+v", hint, id, got, ok, w)
			}
		}
	}
	var empty pinnedFrames
	if _, ok := empty.get(trace.FrameID{}); ok || empty.has(trace.FrameID{}) || empty.len() != 0 {
		t.Error("the zero pinnedFrames holds a frame")
	}
}
