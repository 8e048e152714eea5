package v8

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/stackline-dev/stackline/interpreter/namecache"
)

// Anonymous is the name of a function without one.
const Anonymous = "<anonymous>"

// Bounds of one process's reads and cache.
const (
	// DefaultProcessCacheBytes is the default bound of one process's cache.
	DefaultProcessCacheBytes = 4 << 20
	// DefaultGlobalCacheBytes is the default bound of all processes'
	// caches together.
	DefaultGlobalCacheBytes = 64 << 20
	// maxCachedLineEnds bounds a script's line ends read whole (4 bytes
	// each in the cache); a longer table is binary-searched in the
	// process's memory instead.
	maxCachedLineEnds = 1 << 14
	// maxSourceScan bounds the characters of a script's source scanned
	// for line ends when V8 has not computed them: a position further
	// in gets no line.
	maxSourceScan = 256 << 10
	// sourceChunk is how much source one scan step reads.
	sourceChunk = 16 << 10
	// scopeInfoSlots is how many ScopeInfo slots are read to find the
	// function name.
	scopeInfoSlots = 24
	// entryOverhead is the bytes an entry costs beyond its contents.
	entryOverhead = 128
)

// Errors of naming.
var (
	// ErrBaselineCode: optimized-code naming was asked for Sparkplug
	// code, whose frames are named by their bytecode offset.
	ErrBaselineCode = errors.New("baseline (Sparkplug) code")
	// ErrNotOptimized: the Code is not Maglev or TurboFan code of a
	// JavaScript function (a builtin, the interpreter).
	ErrNotOptimized = errors.New("code is not optimized JavaScript")
	// ErrPCOutsideCode: the pc offset lies outside the code's instructions.
	ErrPCOutsideCode = errors.New("pc outside the code object")
	// ErrNoDispatchTable: the JSDispatchTable of a leaptiering V8 was not
	// found in the process.
	ErrNoDispatchTable = errors.New("JSDispatchTable not found")
)

// Position is one JavaScript source position, a function in a script.
type Position struct {
	// Function is the function's name, Anonymous when it has none.
	Function string
	// Script is the script's name: a path or URL, node:internal/... for
	// node's own modules; empty for code without one (eval, new Function).
	Script string
	// Line and Column are 1-based; 0 when unknown.
	Line, Column int
}

// Process is V8 in one process: it names the functions its frames hold
// by reading V8's objects from the process's memory, through a cache
// bounded in bytes. It is safe for concurrent use.
type Process struct {
	loader *Loader
	heap   heap
	bias   uint64

	mu    sync.Mutex
	cache *cache
	// dispatchBase is the JSDispatchTable's entries, 0 until found.
	dispatchBase uint64
}

// Stats returns the counters of the budget the process's cache shares,
// with Bytes what this process's cache holds.
func (p *Process) Stats() namecache.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.cache.budget.Stats()
	st.Bytes = p.cache.Bytes()
	return st
}

// Close gives the cache's bytes back to the shared budget.
func (p *Process) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cache.Purge()
}

// sfiInfo is what is cached of a SharedFunctionInfo.
type sfiInfo struct {
	name   string
	script uint64
	// bytecode holds the bytecode array's source positions; nil when
	// the function has no bytecode (not compiled, flushed) or V8 has not
	// collected its source positions.
	bytecode []PositionEntry
	// bytecodeErr says why bytecode is nil.
	bytecodeErr error
}

// scriptInfo is what is cached of a Script.
type scriptInfo struct {
	name string
	// ends are line ends: all of them when complete, else those in the
	// first scanned characters of the source. remote, when set, is the
	// script's line ends array too long to cache: it is searched in
	// the process.
	ends     []int32
	complete bool
	scanned  int
	remote   uint64
	nremote  int64
	source   uint64
	srcLen   int
	// pendingCR is the offset of a \r scanned last, whose line end
	// depends on the next character; -1 when none.
	pendingCR int
}

// codeInfo is what is cached of an optimized Code object.
type codeInfo struct {
	sfi       uint64
	positions []PositionEntry
	inlined   []uint64 // SharedFunctionInfos of the inlined functions, by literal index
	inlining  []InliningPosition
	start     uint64
	size      uint32
}

// NameInterpreted names an interpreted frame, or a Sparkplug frame whose
// bytecode offset is known: the JSFunction in the frame's function slot
// (a tagged pointer) and the offset of the current bytecode from the
// first (FrameLayout says how the frame slot holds it).
func (p *Process) NameInterpreted(function uint64, bytecodeOffset int64) (Position, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sfi, err := p.functionSFI(function)
	if err != nil {
		return Position{}, err
	}
	return p.nameSFILocked(sfi, bytecodeOffset)
}

// nameSFI names the function of the SharedFunctionInfo sfi at the
// bytecode offset bytecodeOffset (from its first bytecode).
func (p *Process) nameSFI(sfi uint64, bytecodeOffset int64) (Position, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nameSFILocked(sfi, bytecodeOffset)
}

func (p *Process) nameSFILocked(sfi uint64, bytecodeOffset int64) (Position, error) {
	info, err := p.sfi(sfi)
	if err != nil {
		return Position{}, err
	}
	pos := Position{Function: info.name}
	if info.script == 0 {
		return pos, nil
	}
	sc, err := p.script(info.script)
	if err != nil {
		return pos, err
	}
	pos.Script = sc.name
	if info.bytecode == nil {
		return pos, info.bytecodeErr
	}
	sp, ok := PositionAt(info.bytecode, bytecodeOffset)
	if !ok {
		return pos, fmt.Errorf("bytecode offset %d precedes the function's source positions", bytecodeOffset)
	}
	pos.Line, pos.Column = p.lineColumn(sc, sp.ScriptOffset())
	return pos, nil
}

// NameOptimized names a Maglev or TurboFan frame: the Code object (a
// tagged pointer) and the frame's pc as an offset from the code's first
// instruction. returnAddress says the pc is a return address (every
// frame but the sampled one), which names the call before it. The
// positions are innermost first: the functions inlined at pc, then the
// optimized function.
func (p *Process) NameOptimized(code uint64, pcOffset int64, returnAddress bool) ([]Position, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ci, err := p.code(code)
	if err != nil {
		return nil, err
	}
	if pcOffset < 0 || pcOffset > int64(ci.size) {
		return nil, fmt.Errorf("%w: offset %d of %d bytes", ErrPCOutsideCode, pcOffset, ci.size)
	}
	if returnAddress && pcOffset > 0 {
		pcOffset--
	}
	sp, ok := PositionAt(ci.positions, pcOffset)
	if !ok {
		// Code before the first position (the prologue) is the
		// function itself.
		sp = 0
	}
	chain, err := InlineChain(sp, ci.inlining)
	if err != nil {
		return nil, err
	}
	out := make([]Position, 0, len(chain))
	for _, f := range chain {
		sfi := ci.sfi
		if f.Function >= 0 {
			if int(f.Function) >= len(ci.inlined) {
				return nil, fmt.Errorf("%w: inlined function %d of %d", ErrBadObject, f.Function, len(ci.inlined))
			}
			sfi = ci.inlined[f.Function]
		}
		info, err := p.sfi(sfi)
		if err != nil {
			return nil, err
		}
		pos := Position{Function: info.name}
		if info.script != 0 {
			sc, err := p.script(info.script)
			if err != nil {
				return nil, err
			}
			pos.Script = sc.name
			if ok || f.Function >= 0 {
				pos.Line, pos.Column = p.lineColumn(sc, f.ScriptOffset)
			}
		}
		out = append(out, pos)
	}
	return out, nil
}

// FunctionCode returns the Code a JSFunction runs now (a tagged
// pointer): its code field, or with leaptiering (node 24) the code of its
// entry in the JSDispatchTable.
func (p *Process) FunctionCode(function uint64) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.functionCode(function)
}

func (p *Process) functionCode(function uint64) (uint64, error) {
	h := &p.heap
	if err := p.checkFunction(function); err != nil {
		return 0, err
	}
	lay := h.lay
	if !lay.Leaptiering {
		code, err := h.word(function, lay.JSFunctionCode)
		if err != nil {
			return 0, err
		}
		return code, h.expect(code, lay.Types.Code, "JSFunction code")
	}
	handle, err := h.u32(function, lay.JSFunctionDispatch)
	if err != nil {
		return 0, err
	}
	if p.dispatchBase == 0 {
		base, err := p.findDispatchTable(handle)
		if err != nil {
			return 0, err
		}
		p.dispatchBase = base
	}
	code, _, err := p.dispatchEntry(p.dispatchBase, handle)
	if err != nil {
		return 0, err
	}
	return code, nil
}

// The JSDispatchTable of V8 13.6 (src/sandbox/js-dispatch-table.h): a
// handle is an entry index shifted left by 8; an entry is 16 bytes, the
// entrypoint then the code object's tagged pointer shifted left by 16
// (its low bit, the heap object tag, doubling as the marking bit) over
// the parameter count.
const (
	dispatchHandleShift = 8
	dispatchEntrySize   = 16
	dispatchCodeShift   = 16
	// dispatchTableMax bounds the table's reservation (256 MiB).
	dispatchTableMax = 256 << 20
	// isolateGroupScan is how much of the IsolateGroup is searched for
	// the table's base pointer.
	isolateGroupScan = 4096
)

// dispatchEntry returns the code and entrypoint of handle's entry in the
// table at base.
func (p *Process) dispatchEntry(base uint64, handle uint32) (code, entrypoint uint64, err error) {
	off := uint64(handle>>dispatchHandleShift) * dispatchEntrySize
	if handle == 0 || off >= dispatchTableMax {
		return 0, 0, fmt.Errorf("%w: dispatch handle %#x", ErrBadObject, handle)
	}
	var b [16]byte
	if err := p.heap.mem.ReadAt(b[:], base+off); err != nil {
		return 0, 0, err
	}
	entrypoint = binary.LittleEndian.Uint64(b[:8])
	code = binary.LittleEndian.Uint64(b[8:])>>dispatchCodeShift | p.heap.lay.HeapObjectTag
	if err := p.heap.expect(code, p.heap.lay.Types.Code, "dispatch table code"); err != nil {
		return 0, 0, err
	}
	return code, entrypoint, nil
}

// findDispatchTable finds the JSDispatchTable's base: IsolateGroup's
// default group holds it (at +0x960 in V8 13.6, which is tried first);
// a candidate is accepted when handle's entry holds a Code object whose
// instructions start at the entry's entrypoint.
func (p *Process) findDispatchTable(handle uint32) (uint64, error) {
	h := &p.heap
	lay := h.lay
	if lay.IsolateGroup == 0 {
		return 0, fmt.Errorf("%w: no IsolateGroup::default_isolate_group_ symbol", ErrNoDispatchTable)
	}
	var gb [8]byte
	if err := h.mem.ReadAt(gb[:], lay.IsolateGroup+p.bias); err != nil {
		return 0, fmt.Errorf("%w: reading the isolate group pointer: %w", ErrNoDispatchTable, err)
	}
	group := binary.LittleEndian.Uint64(gb[:])
	if group == 0 {
		return 0, fmt.Errorf("%w: no isolate group yet", ErrNoDispatchTable)
	}
	buf := make([]byte, isolateGroupScan)
	if err := h.mem.ReadAt(buf, group); err != nil {
		return 0, fmt.Errorf("%w: reading the isolate group: %w", ErrNoDispatchTable, err)
	}
	try := func(off int) (uint64, bool) {
		base := binary.LittleEndian.Uint64(buf[off:])
		if base == 0 || base&0xfff != 0 {
			return 0, false
		}
		code, entry, err := p.dispatchEntry(base, handle)
		if err != nil {
			return 0, false
		}
		start, err := p.instructionStart(code)
		return base, err == nil && start == entry && start != 0
	}
	if off := p.loader.dispatchOffset.Load(); off != 0 {
		if base, ok := try(int(off)); ok {
			return base, nil
		}
	}
	const knownOffset = 0x960 // V8 13.6
	if base, ok := try(knownOffset); ok {
		p.loader.dispatchOffset.Store(knownOffset)
		return base, nil
	}
	for off := 0; off+8 <= len(buf); off += 8 {
		if base, ok := try(off); ok {
			p.loader.dispatchOffset.Store(int64(off))
			return base, nil
		}
	}
	return 0, fmt.Errorf("%w: no entry of handle %#x in the isolate group at %#x", ErrNoDispatchTable, handle, group)
}

// instructionStart returns where a Code object's instructions start.
func (p *Process) instructionStart(code uint64) (uint64, error) {
	lay := p.heap.lay
	if lay.CodeInlineBody != 0 {
		return p.heap.untag(code) + uint64(lay.CodeInlineBody), nil
	}
	return p.heap.word(code, lay.CodeInstructionStart)
}

// checkFunction checks function is a JSFunction.
func (p *Process) checkFunction(function uint64) error {
	t, err := p.heap.typeOf(function)
	if err != nil {
		return fmt.Errorf("JSFunction: %w", err)
	}
	if !p.heap.lay.isJSFunction(t) {
		return fmt.Errorf("%w: %#x has instance type %d, not a JSFunction", ErrBadObject, function, t)
	}
	return nil
}

// functionSFI returns a JSFunction's SharedFunctionInfo.
func (p *Process) functionSFI(function uint64) (uint64, error) {
	if err := p.checkFunction(function); err != nil {
		return 0, err
	}
	return p.heap.word(function, p.heap.lay.JSFunctionShared)
}

// header reads n bytes of the object v.
func (p *Process) header(v uint64, n uint32) ([]byte, error) {
	b := make([]byte, n)
	if err := p.heap.mem.ReadAt(b, p.heap.untag(v)); err != nil {
		return nil, err
	}
	return b, nil
}

func field(b []byte, off uint32) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

// sfi returns what is known of the SharedFunctionInfo sfi. Its check
// value is its name (or scope info), function data, script and the
// script's id: V8 allocates alike code alike, so a function replacing a
// collected one may sit at the same address with its objects at the
// same addresses too, but its script's id is new; new bytecode (once
// compiled, after flushing) changes the function data.
func (p *Process) sfi(sfi uint64) (*sfiInfo, error) {
	h := &p.heap
	lay := h.lay
	if err := h.expect(sfi, lay.Types.SharedFunctionInfo, "SharedFunctionInfo"); err != nil {
		return nil, err
	}
	b, err := p.header(sfi, max(lay.SFINameOrScopeInfo, lay.SFIFunctionData, lay.SFIScript)+pointerSize)
	if err != nil {
		return nil, err
	}
	nameOrScope, data, script := field(b, lay.SFINameOrScopeInfo), field(b, lay.SFIFunctionData), field(b, lay.SFIScript)
	var scriptID uint64
	if t, err := h.typeOf(script); err == nil && t == lay.Types.Script {
		if scriptID, err = h.word(script, lay.ScriptID); err != nil {
			return nil, err
		}
	}
	key := cacheKey{kindSFI, sfi}
	check := [4]uint64{nameOrScope, data, script, scriptID}
	if v, ok := p.cache.get(key, check); ok {
		return v.(*sfiInfo), nil
	}
	info := &sfiInfo{}
	info.name, err = p.functionName(nameOrScope)
	if err != nil {
		return nil, err
	}
	if info.name == "" {
		info.name = Anonymous
	}
	if t, err := h.typeOf(script); err == nil && t == lay.Types.Script {
		info.script = script
	}
	info.bytecode, info.bytecodeErr = p.bytecodePositions(data)
	size := int64(entryOverhead + len(info.name) + 24*len(info.bytecode))
	p.cache.put(key, check, size, info)
	return info, nil
}

// functionName reads the name from a SharedFunctionInfo's
// name_or_scope_info: the name itself, or a ScopeInfo holding it after
// its context locals (names and infos).
func (p *Process) functionName(v uint64) (string, error) {
	h := &p.heap
	t, err := h.typeOf(v)
	if err != nil {
		// A Smi: no name (kNoSharedNameSentinel).
		return "", nil
	}
	if h.isString(t) {
		return h.str(v, maxNameBytes)
	}
	if t != h.lay.Types.ScopeInfo {
		return "", nil
	}
	si := &h.lay.ScopeInfo
	// The slots read may run past the ScopeInfo's end: past a page
	// boundary the rest may be unmapped, and then only the slots up
	// to it are used (the others read as zero).
	b := make([]byte, scopeInfoSlots*pointerSize)
	at := h.untag(v) + uint64(si.Data)
	if err := h.mem.ReadAt(b, at); err != nil {
		inPage := min(uint64(len(b)), 0x1000-at&0xfff)
		clear(b)
		if err := h.mem.ReadAt(b[:inPage], at); err != nil {
			return "", err
		}
	}
	slot := func(i uint32) uint64 { return binary.LittleEndian.Uint64(b[i*pointerSize:]) }
	first := si.FirstVars
	if n := slot(si.NContextLocals); h.isSmi(n) {
		locals := h.smi(n)
		switch {
		case locals < 0 || locals > scopeInfoSlots:
			return "", nil
		case locals < 75:
			// Names inline, then one info a local.
			first += uint32(2 * locals)
		default:
			// A hash table of names, then the infos.
			first += uint32(1 + locals)
		}
	}
	// The function variable's name comes first, then (when V8 inferred
	// one from an assignment) the inferred name; an anonymous function
	// has an empty name before it. The first name not empty is the one
	// V8 shows (SharedFunctionInfo::DebugName).
	for i := first; i < min(first+4, scopeInfoSlots); i++ {
		w := slot(i)
		if !h.isHeapObject(w) {
			continue
		}
		if t, err := h.typeOf(w); err == nil && h.isString(t) {
			name, err := h.str(w, maxNameBytes)
			if err != nil || name != "" {
				return name, err
			}
		}
	}
	return "", nil
}

// bytecodePositions reads the source positions of a function's bytecode
// from its function data: a BytecodeArray, or baseline Code holding it.
func (p *Process) bytecodePositions(data uint64) ([]PositionEntry, error) {
	h := &p.heap
	lay := h.lay
	t, err := h.typeOf(data)
	if err != nil {
		return nil, fmt.Errorf("function data: %w", err)
	}
	if t == lay.Types.Code {
		if data, err = h.word(data, lay.CodeDeoptData); err != nil {
			return nil, err
		}
		if t, err = h.typeOf(data); err != nil {
			return nil, fmt.Errorf("baseline code's bytecode: %w", err)
		}
	}
	if t != lay.Types.BytecodeArray {
		return nil, fmt.Errorf("%w: function data of instance type %d has no bytecode", ErrBadObject, t)
	}
	table, err := h.word(data, lay.BytecodeArrayPositions)
	if err != nil {
		return nil, err
	}
	b, err := h.byteArray(table, "bytecode source positions")
	if err != nil {
		return nil, err
	}
	return DecodePositions(b)
}

// script returns what is known of the Script script. Its check value is
// its source, name and id.
func (p *Process) script(script uint64) (*scriptInfo, error) {
	h := &p.heap
	lay := h.lay
	b, err := p.header(script, max(lay.ScriptSource, lay.ScriptName, lay.ScriptLineEnds, lay.ScriptID)+pointerSize)
	if err != nil {
		return nil, err
	}
	source, name, lineEnds := field(b, lay.ScriptSource), field(b, lay.ScriptName), field(b, lay.ScriptLineEnds)
	id, err := h.word(script, lay.ScriptID)
	if err != nil {
		return nil, err
	}
	key := cacheKey{kindScript, script}
	check := [4]uint64{source, name, id}
	if v, ok := p.cache.get(key, check); ok {
		sc := v.(*scriptInfo)
		if !sc.complete && sc.remote == 0 {
			// V8 may have computed the line ends since.
			p.readLineEnds(sc, lineEnds)
		}
		return sc, nil
	}
	sc := &scriptInfo{source: source, pendingCR: -1}
	if t, err := h.typeOf(name); err == nil && h.isString(t) {
		if sc.name, err = h.str(name, maxNameBytes); err != nil {
			return nil, fmt.Errorf("script name: %w", err)
		}
	}
	if t, err := h.typeOf(source); err == nil && h.isString(t) {
		if n, err := h.u32(source, lay.Strings.Length); err == nil {
			sc.srcLen = int(int32(n))
		}
	}
	p.readLineEnds(sc, lineEnds)
	p.putScript(key, check, sc)
	return sc, nil
}

func (p *Process) putScript(key cacheKey, check [4]uint64, sc *scriptInfo) {
	p.cache.put(key, check, int64(entryOverhead+len(sc.name)+4*len(sc.ends)), sc)
}

// readLineEnds takes V8's line ends of sc when it has computed them.
func (p *Process) readLineEnds(sc *scriptInfo, lineEnds uint64) {
	h := &p.heap
	n, err := h.fixedArrayLen(lineEnds, "line ends")
	if err != nil || n == 0 {
		return
	}
	if n > maxCachedLineEnds {
		sc.remote, sc.nremote = lineEnds, n
		sc.ends, sc.complete = nil, false
		return
	}
	words, err := h.fixedArray(lineEnds, n, "line ends")
	if err != nil {
		return
	}
	ends := make([]int32, len(words))
	for i, w := range words {
		if !h.isSmi(w) {
			return
		}
		ends[i] = int32(h.smi(w))
	}
	sc.ends, sc.complete, sc.scanned = ends, true, sc.srcLen
}

// lineColumn returns the line and column of offset in the script, 0, 0
// when they cannot be told within the bounds.
func (p *Process) lineColumn(sc *scriptInfo, offset int) (int, int) {
	if offset < 0 {
		return 0, 0
	}
	if sc.complete {
		line, col, _ := LineColumn(sc.ends, offset)
		return line, col
	}
	if sc.remote != 0 {
		return p.remoteLineColumn(sc, offset)
	}
	if offset >= sc.scanned {
		p.scanSource(sc, offset)
	}
	if offset >= sc.scanned {
		return 0, 0
	}
	return prefixLineColumn(sc.ends, offset)
}

// prefixLineColumn is LineColumn for line ends known up to past offset,
// whose line may have no end among them yet.
func prefixLineColumn(ends []int32, offset int) (int, int) {
	i := 0
	for lo, hi := 0, len(ends); lo < hi; {
		m := (lo + hi) / 2
		if int(ends[m]) >= offset {
			hi = m
		} else {
			lo = m + 1
		}
		i = lo
	}
	start := 0
	if i > 0 {
		start = int(ends[i-1]) + 1
	}
	return i + 1, offset - start + 1
}

// scanSource extends the line ends found in sc's source to past offset,
// within maxSourceScan characters.
func (p *Process) scanSource(sc *scriptInfo, offset int) {
	limit := min(sc.srcLen, maxSourceScan)
	target := min(offset+1, limit)
	for sc.scanned < target {
		n := min(sourceChunk, limit-sc.scanned)
		pos := sc.scanned
		// V8's line terminators: \n, \r not before \n, U+2028, U+2029.
		end := func(u uint16) {
			if sc.pendingCR >= 0 {
				if u != '\n' {
					sc.ends = append(sc.ends, int32(sc.pendingCR))
				}
				sc.pendingCR = -1
			}
			switch u {
			case '\r':
				sc.pendingCR = pos
			case '\n', 0x2028, 0x2029:
				sc.ends = append(sc.ends, int32(pos))
			}
			pos++
		}
		err := p.heap.walkString(sc.source, sc.scanned, n, func(c chunk) error {
			for _, b := range c.one {
				end(uint16(b))
			}
			for _, u := range c.two {
				end(u)
			}
			return nil
		})
		if err != nil || pos == sc.scanned {
			return
		}
		sc.scanned = pos
	}
	if sc.scanned == sc.srcLen {
		if sc.pendingCR >= 0 {
			sc.ends = append(sc.ends, int32(sc.pendingCR))
			sc.pendingCR = -1
		}
		sc.complete = true
		sc.ends = append(sc.ends, int32(sc.srcLen))
	}
}

// remoteLineColumn binary-searches a long line ends array in the
// process.
func (p *Process) remoteLineColumn(sc *scriptInfo, offset int) (int, int) {
	h := &p.heap
	at := func(i int64) (int, bool) {
		w, err := h.word(sc.remote, h.lay.FixedArrayData+uint32(i)*pointerSize)
		if err != nil || !h.isSmi(w) {
			return 0, false
		}
		return int(h.smi(w)), true
	}
	lo, hi := int64(0), sc.nremote
	for lo < hi {
		m := (lo + hi) / 2
		v, ok := at(m)
		if !ok {
			return 0, 0
		}
		if v >= offset {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo == sc.nremote {
		return 0, 0
	}
	start := 0
	if lo > 0 {
		prev, ok := at(lo - 1)
		if !ok {
			return 0, 0
		}
		start = prev + 1
	}
	return int(lo) + 1, offset - start + 1
}

// code returns what is known of an optimized Code object. Its check
// value is its instruction start, flags, tables and optimization id.
func (p *Process) code(code uint64) (*codeInfo, error) {
	h := &p.heap
	lay := h.lay
	if err := h.expect(code, lay.Types.Code, "Code"); err != nil {
		return nil, err
	}
	b, err := p.header(code, max(lay.CodeDeoptData, lay.CodePositions, lay.CodeInstructionStart, lay.CodeFlags, lay.CodeInstructionSize)+pointerSize)
	if err != nil {
		return nil, err
	}
	deopt, positions := field(b, lay.CodeDeoptData), field(b, lay.CodePositions)
	flags := binary.LittleEndian.Uint32(b[lay.CodeFlags:])
	size := binary.LittleEndian.Uint32(b[lay.CodeInstructionSize:])
	start := h.untag(code) + uint64(lay.CodeInlineBody)
	if lay.CodeInlineBody == 0 {
		start = field(b, lay.CodeInstructionStart)
	}
	switch kind := lay.CodeKindOf(flags); {
	case kind == lay.CodeKindBaseline:
		return nil, ErrBaselineCode
	case kind <= lay.CodeKindInterpreted:
		return nil, fmt.Errorf("%w: code kind %d", ErrNotOptimized, kind)
	}
	d := &lay.Deopt
	if _, err := h.fixedArrayLen(deopt, "deoptimization data"); err != nil {
		return nil, err
	}
	optID, err := h.word(deopt, lay.FixedArrayData+d.OptimizationID*pointerSize)
	if err != nil {
		return nil, err
	}
	// The optimization id is unique among the isolate's compilations:
	// new code at the address of collected code differs in it even
	// when its tables sit where the old ones were.
	key := cacheKey{kindCode, code}
	check := [4]uint64{deopt, positions, start ^ optID, uint64(flags)<<32 | uint64(size)}
	if v, ok := p.cache.get(key, check); ok {
		return v.(*codeInfo), nil
	}
	ci := &codeInfo{start: start, size: size}
	table, err := h.byteArray(positions, "code source positions")
	if err != nil {
		return nil, err
	}
	if ci.positions, err = DecodePositions(table); err != nil {
		return nil, err
	}
	need := int64(max(d.InlinedFunctionCount, d.LiteralArray, d.InliningPositions, d.SharedFunctionInfo)) + 1
	dd, err := h.fixedArray(deopt, need, "deoptimization data")
	if err != nil {
		return nil, err
	}
	if int64(len(dd)) < need {
		return nil, fmt.Errorf("%w: deoptimization data of %d elements", ErrBadObject, len(dd))
	}
	if ci.sfi, err = p.unwrapSFI(dd[d.SharedFunctionInfo]); err != nil {
		return nil, fmt.Errorf("optimized function: %w", err)
	}
	count := dd[d.InlinedFunctionCount]
	if !h.isSmi(count) || h.smi(count) < 0 || h.smi(count) > 1<<12 {
		return nil, fmt.Errorf("%w: inlined function count %#x", ErrBadObject, count)
	}
	if n := h.smi(count); n > 0 {
		lits, err := h.fixedArray(dd[d.LiteralArray], n, "deoptimization literals")
		if err != nil {
			return nil, err
		}
		for _, lit := range lits {
			// A weak reference has tag 0b11: clear its weak bit.
			sfi, err := p.unwrapSFI(lit &^ 2)
			if err != nil {
				// A literal collected since (cleared weak
				// reference): names through it fail below.
				sfi = 0
			}
			ci.inlined = append(ci.inlined, sfi)
		}
		ib, err := h.byteArray(dd[d.InliningPositions], "inlining positions")
		if err != nil {
			return nil, err
		}
		if ci.inlining, err = DecodeInliningPositions(ib); err != nil {
			return nil, err
		}
	}
	size64 := int64(entryOverhead + 24*len(ci.positions) + 8*len(ci.inlined) + 16*len(ci.inlining))
	p.cache.put(key, check, size64, ci)
	return ci, nil
}

// unwrapSFI returns the SharedFunctionInfo v is or wraps.
func (p *Process) unwrapSFI(v uint64) (uint64, error) {
	h := &p.heap
	lay := h.lay
	t, err := h.typeOf(v)
	if err != nil {
		return 0, err
	}
	if lay.Types.SharedFunctionInfoWrapper != 0 && t == lay.Types.SharedFunctionInfoWrapper {
		if v, err = h.word(v, lay.SFIWrapperShared); err != nil {
			return 0, err
		}
		if t, err = h.typeOf(v); err != nil {
			return 0, err
		}
	}
	if t != lay.Types.SharedFunctionInfo {
		return 0, fmt.Errorf("%w: %#x has instance type %d, not a SharedFunctionInfo", ErrBadObject, v, t)
	}
	return v, nil
}
