package v8

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
)

// checkOf returns the check value the eBPF walker computes of the
// synthetic function's SharedFunctionInfo.
func (s *synthetic) checkOf() uint32 {
	lay := s.lay
	script := s.word(s.sfi, lay.SFIScript)
	return sfiCheck(s.sfi, s.word(s.sfi, lay.SFINameOrScopeInfo), script, s.process().scriptIDWord(script))
}

func (s *synthetic) word(obj uint64, off uint32) uint64 {
	v, err := s.heap().word(obj, off)
	if err != nil {
		panic(err)
	}
	return v
}

func (s *synthetic) instance(t testing.TB) *Instance {
	t.Helper()
	in, err := newInstance(s.process(), new(RuntimeStats))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestInstanceFrame names interpreted frames as the eBPF walker emits
// them (SharedFunctionInfo, offset from the BytecodeArray's tagged
// address, check), refuses a frame whose check no longer matches (the
// memory reused by another function), and names typed frames.
func TestInstanceFrame(t *testing.T) {
	for _, consts := range []string{"node20", "node22", "node24"} {
		t.Run(consts, func(t *testing.T) {
			s := newSynthetic(t, consts, "compute")
			in := s.instance(t)
			lay := s.lay
			aux := uint32(5 + lay.BytecodeArrayData - uint32(lay.HeapObjectTag))
			f := interpreter.Frame{Type: trace.FrameV8Interpreted, Addr: s.sfi, Aux: aux, Extra: s.checkOf()}
			sym, err := in.Frame(f)
			if err != nil || sym.Function != "compute" || sym.File != "/srv/app.js" || sym.Line != 3 {
				t.Fatalf("Frame: %+v, %v; want compute /srv/app.js:3", sym, err)
			}
			if sym.ID.Type != trace.FrameV8Interpreted || sym.ID.File != trace.SourceFileID(runtimeID, "/srv/app.js") {
				t.Errorf("ID %+v", sym.ID)
			}
			// Another function at the same address: a new name.
			s.put64(s.sfi, lay.SFINameOrScopeInfo, s.seqOne(t, "other"))
			f.Aux++ // not the cached frame
			if _, err := in.Frame(f); !errors.Is(err, ErrStale) {
				t.Errorf("Frame after the SharedFunctionInfo changed: %v, want ErrStale", err)
			}
			if in.stats.Stale.Load() != 1 || in.stats.Unnamed.Load() != 1 || in.stats.Named.Load() != 1 {
				t.Errorf("stats named %d unnamed %d stale %d", in.stats.Named.Load(), in.stats.Unnamed.Load(), in.stats.Stale.Load())
			}
			// A code frame whose SharedFunctionInfo is gone.
			if _, err := in.Frame(interpreter.Frame{Type: trace.FrameV8Code, Addr: s.script, Aux: 1, Extra: s.checkOf()}); err == nil {
				t.Error("a code frame whose SharedFunctionInfo is a Script was named")
			}
			exit := uint32(lay.Frame.Types["ExitFrame"])
			if sym, err := in.Frame(interpreter.Frame{Type: trace.FrameV8Stub, Addr: 0x1234, Aux: exit}); err != nil || sym.Function != "V8::ExitFrame" {
				t.Errorf("typed frame: %+v, %v; want V8::ExitFrame", sym, err)
			}
			u := in.Unwind()
			if u.Kind != interpreter.KindV8 {
				t.Errorf("kind %d", u.Kind)
			}
		})
	}
}

// TestCheckFrameLayout: a V8 whose frames or tagging differ from what
// the eBPF walker reads is refused.
func TestCheckFrameLayout(t *testing.T) {
	for _, consts := range []string{"node18", "node20", "node22", "node24"} {
		lay := fixtureLayout(t, consts)
		if err := checkFrameLayout(lay); err != nil {
			t.Errorf("%s: %v", consts, err)
		}
		bad := *lay
		bad.Frame.Function = -24
		if err := checkFrameLayout(&bad); !errors.Is(err, ErrFrameLayout) {
			t.Errorf("%s with the function at fp-24: %v", consts, err)
		}
		bad = *lay
		bad.SmiShift = 1
		if err := checkFrameLayout(&bad); !errors.Is(err, ErrFrameLayout) {
			t.Errorf("%s with 31-bit Smis: %v", consts, err)
		}
	}
}

// FuzzFrame names frames of every V8 type over arbitrary memory: no
// panic, names within their bounds.
func FuzzFrame(f *testing.F) {
	for _, consts := range []string{"node20", "node24"} {
		s := newSynthetic(f, consts, "compute")
		f.Add(consts == "node24", bytes.Clone(s.b), s.sfi-s.base, uint32(40), s.checkOf(), uint8(0))
		f.Add(consts == "node24", bytes.Clone(s.b), s.sfi-s.base, uint32(0x100), s.checkOf(), uint8(1))
	}
	layouts := map[bool]*Layout{false: fixtureLayout(f, "node20"), true: fixtureLayout(f, "node24")}
	types := []trace.FrameType{trace.FrameV8Interpreted, trace.FrameV8Code, trace.FrameV8Stub}
	f.Fuzz(func(t *testing.T, v24 bool, mem []byte, at uint64, aux, check uint32, typ uint8) {
		im := &image{base: 0x100000, b: mem, lay: layouts[v24]}
		in, err := newInstance((&synthetic{image: im}).process(), new(RuntimeStats))
		if err != nil {
			t.Fatal(err)
		}
		fr := interpreter.Frame{Type: types[int(typ)%len(types)], Addr: im.base + at, Aux: aux, Extra: check, ReturnAddress: typ&4 != 0}
		if sym, err := in.Frame(fr); err == nil && len(sym.Function) > maxNameBytes+16 {
			t.Fatalf("name over the bound: %q", sym.Function)
		}
		in.p.codeAt(0, im.base+at)
		in.p.codeAt(im.base+uint64(aux), im.base+at)
		in.p.streamMapOf(im.base + at)
	})
}
