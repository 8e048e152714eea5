package v8

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
)

// ErrStale says a frame's function is no longer what the eBPF walker saw:
// the GC moved or freed it since the sample. The frame is left unnamed.
var ErrStale = errors.New("V8 function changed since the sample")

// symbolCacheEntries bounds the frames an instance remembers the names of
// (a name's strings are shared with the process's cache, bounded in
// bytes; an entry costs about 200 bytes).
const symbolCacheEntries = 4096

// runtimeID names the source files of V8 frames in FrameIDs.
const runtimeID = "v8js"

// frameKey is a frame as the eBPF walker emitted it.
type frameKey struct {
	typ           trace.FrameType
	addr          uint64
	aux, extra    uint32
	returnAddress bool
}

// Instance is V8 in one process, as the tracer sees it: what the eBPF
// frame walker needs, and the naming of its frames.
type Instance struct {
	p      *Process
	unwind interpreter.Unwind
	stats  *RuntimeStats
	types  map[uint32]string
	// names remembers frames named: a frame's check value makes its
	// key unique to the function it was emitted for. Only the tracer's
	// goroutine calls Frame.
	names *simplelru.LRU[frameKey, interpreter.Symbol]
	// streamMap is the map of V8's InstructionStreams, learnt from the
	// first code found; 0 until then.
	streamMap uint64
}

func newInstance(p *Process, stats *RuntimeStats) (*Instance, error) {
	lay := p.loader.layout
	enc, err := encodeConfig(config(lay, p.bias))
	if err != nil {
		return nil, fmt.Errorf("v8: encode config: %w", err)
	}
	names, err := simplelru.NewLRU[frameKey, interpreter.Symbol](symbolCacheEntries, nil)
	if err != nil {
		return nil, err
	}
	in := &Instance{p: p, stats: stats, names: names, types: make(map[uint32]string)}
	in.unwind.Kind = interpreter.KindV8
	in.unwind.Config = enc
	for name, t := range lay.Frame.Types {
		in.types[uint32(t)] = name
	}
	return in, nil
}

// Unwind implements interpreter.Instance.
func (in *Instance) Unwind() interpreter.Unwind { return in.unwind }

// Process returns the process's V8 naming.
func (in *Instance) Process() *Process { return in.p }

// Close implements interpreter.Closer: the process's cached bytes go back
// to the shared budget.
func (in *Instance) Close() { in.p.Close() }

// Frame implements interpreter.Instance.
func (in *Instance) Frame(f interpreter.Frame) (interpreter.Symbol, error) {
	k := frameKey{typ: f.Type, addr: f.Addr, aux: f.Aux, extra: f.Extra, returnAddress: f.ReturnAddress}
	if s, ok := in.names.Get(k); ok {
		in.stats.Named.Add(1)
		return s, nil
	}
	s, err := in.frame(f)
	if err != nil {
		in.stats.Unnamed.Add(1)
		if errors.Is(err, ErrStale) {
			in.stats.Stale.Add(1)
		}
		return interpreter.Symbol{}, err
	}
	in.stats.Named.Add(1)
	if s.Line == 0 {
		in.stats.NoLine.Add(1)
	}
	in.names.Add(k, s)
	return s, nil
}

func (in *Instance) frame(f interpreter.Frame) (interpreter.Symbol, error) {
	switch f.Type {
	case trace.FrameV8Stub:
		return in.typed(f.Aux), nil
	case trace.FrameV8Interpreted:
		if err := in.p.checkSFI(f.Addr, f.Extra); err != nil {
			return interpreter.Symbol{}, err
		}
		lay := in.p.loader.layout
		off := int64(f.Aux) - int64(lay.BytecodeArrayData) + int64(lay.HeapObjectTag)
		pos, err := in.p.nameSFI(f.Addr, off)
		if err != nil && pos.Function == "" {
			return interpreter.Symbol{}, err
		}
		return symbol(trace.FrameV8Interpreted, []Position{pos}), nil
	case trace.FrameV8Code:
		if err := in.p.checkSFI(f.Addr, f.Extra); err != nil {
			return interpreter.Symbol{}, err
		}
		pc := uint64(f.AuxHigh)<<32 | uint64(f.Aux)
		return symbol(trace.FrameV8Code, in.nameCode(f.Addr, pc, f.ReturnAddress)), nil
	}
	return interpreter.Symbol{}, fmt.Errorf("v8: frame type %d is not V8's", f.Type)
}

// typed names a typed frame by its type: V8::ExitFrame, V8::EntryFrame...
func (in *Instance) typed(t uint32) interpreter.Symbol {
	name, ok := in.types[t]
	if !ok {
		name = "Frame" + strconv.FormatUint(uint64(t), 10)
	}
	name = "V8::" + name
	return interpreter.Symbol{
		ID:       trace.FrameID{File: trace.SourceFileID(runtimeID, "[v8]"), Addr: frameAddr([]Position{{Function: name}}), Type: trace.FrameV8Stub},
		Function: name,
	}
}

// symbol makes the Symbol of positions, innermost first.
func symbol(typ trace.FrameType, pos []Position) interpreter.Symbol {
	s := interpreter.Symbol{
		ID:       trace.FrameID{File: trace.SourceFileID(runtimeID, pos[0].Script), Addr: frameAddr(pos), Type: typ},
		Function: pos[0].Function,
		File:     pos[0].Script,
		Line:     int64(pos[0].Line),
	}
	if len(pos) > 1 {
		s.Inlined = make([]trace.Line, len(pos))
		for i, p := range pos {
			s.Inlined[i] = trace.Line{Function: p.Function, File: p.Script, Line: int64(p.Line)}
		}
	}
	return s
}

// frameAddr derives a frame's address for the reporter from what names it
// (FNV-1a).
func frameAddr(pos []Position) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	add := func(s string) {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * prime
		}
		h = (h ^ 0xff) * prime
	}
	for _, p := range pos {
		add(p.Function)
		add(p.Script)
		add(strconv.Itoa(p.Line))
	}
	return h
}

// sfiCheck is the check value the eBPF walker computes of a
// SharedFunctionInfo: its address, name (or scope info) and script, and
// the script's id (a Smi).
func sfiCheck(sfi, name, script, id uint64) uint32 {
	return uint32(sfi) ^ uint32(sfi>>32) ^ uint32(name)*0x9e3779b1 ^ uint32(name>>32) ^
		uint32(script)*0x85ebca6b ^ uint32(script>>32) ^ uint32(id>>32)*0xc2b2ae35
}

// scriptIDWord reads the id field of script, 0 when script is not a heap
// object or unreadable, as the eBPF walker does.
func (p *Process) scriptIDWord(script uint64) uint64 {
	if !p.heap.isHeapObject(script) {
		return 0
	}
	v, err := p.heap.word(script, p.heap.lay.ScriptID)
	if err != nil {
		return 0
	}
	return v
}

// checkSFI checks that sfi is a SharedFunctionInfo whose check value is
// check: the one the eBPF walker saw.
func (p *Process) checkSFI(sfi uint64, check uint32) error {
	h := &p.heap
	lay := h.lay
	if err := h.expect(sfi, lay.Types.SharedFunctionInfo, "SharedFunctionInfo"); err != nil {
		return fmt.Errorf("%w: %w", ErrStale, err)
	}
	b, err := p.header(sfi, max(lay.SFINameOrScopeInfo, lay.SFIScript)+pointerSize)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStale, err)
	}
	script := field(b, lay.SFIScript)
	if got := sfiCheck(sfi, field(b, lay.SFINameOrScopeInfo), script, p.scriptIDWord(script)); got != check {
		return fmt.Errorf("%w: SharedFunctionInfo %#x checks %#x, the sample's %#x", ErrStale, sfi, got, check)
	}
	return nil
}

// describeSFI names a function without a position: its name and script.
func (p *Process) describeSFI(sfi uint64) Position {
	p.mu.Lock()
	defer p.mu.Unlock()
	info, err := p.sfi(sfi)
	if err != nil {
		return Position{Function: Anonymous}
	}
	pos := Position{Function: info.name}
	if info.script != 0 {
		if sc, err := p.script(info.script); err == nil {
			pos.Script = sc.name
		}
	}
	return pos
}

// nameCode names a frame of the function of the SharedFunctionInfo sfi
// running JIT code (Sparkplug or optimized) at pc: the code is the one
// whose instructions hold pc. A pc in no code found (a builtin with
// JavaScript linkage) names the function without a line.
func (in *Instance) nameCode(sfi, pc uint64, returnAddress bool) []Position {
	p := in.p
	if !in.inBuiltins(pc) {
		code, start, err := p.codeAt(in.streamMap, pc)
		if err == nil {
			if in.streamMap == 0 {
				in.streamMap, _ = p.streamMapOf(code)
			}
			pos, err := p.nameCodeAt(sfi, code, int64(pc-start), returnAddress)
			if err == nil && len(pos) > 0 && !p.sameFunction(sfi, pos[len(pos)-1]) {
				// The code's cached description is of a collected
				// function whose objects were at the same
				// addresses: read it again.
				p.forgetCode(code)
				pos, err = p.nameCodeAt(sfi, code, int64(pc-start), returnAddress)
				if err == nil && len(pos) > 0 && !p.sameFunction(sfi, pos[len(pos)-1]) {
					err = ErrStale
				}
			}
			if err == nil && len(pos) > 0 {
				return pos
			}
		}
	}
	return []Position{p.describeSFI(sfi)}
}

// sameFunction reports whether pos, the outermost position of code, is
// in the function of sfi (its name and script).
func (p *Process) sameFunction(sfi uint64, pos Position) bool {
	want := p.describeSFI(sfi)
	return want.Function == pos.Function && want.Script == pos.Script
}

// forgetCode drops what the cache holds of code.
func (p *Process) forgetCode(code uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cache.Remove(cacheKey{kindCode, code})
}

// inBuiltins reports whether pc is in the V8 file's embedded builtins.
func (in *Instance) inBuiltins(pc uint64) bool {
	b := in.p.loader.layout.Builtins
	return b[1] > b[0] && pc >= b[0]+in.p.bias && pc < b[1]+in.p.bias
}

// nameCodeAt names the frame of the function of sfi running code
// (Sparkplug or optimized) at pc offset off.
func (p *Process) nameCodeAt(sfi, code uint64, off int64, returnAddress bool) ([]Position, error) {
	pos, err := p.NameOptimized(code, off, returnAddress)
	if errors.Is(err, ErrBaselineCode) {
		bo, err := p.baselineOffset(code, off, returnAddress)
		if err != nil {
			return nil, err
		}
		bp, err := p.nameSFI(sfi, bo)
		if err != nil && bp.Function == "" {
			return nil, err
		}
		return []Position{bp}, nil
	}
	return pos, err
}
