package hotspot

import (
	"encoding/binary"
	"fmt"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
)

// compiledFrame names a frame of compiled code: the methods inlined at
// its pc, innermost first, the compiled method last.
func (p *instance) compiledFrame(f interpreter.Frame) (interpreter.Symbol, error) {
	k := cacheKey{kind: keyCompiled, addr: f.Addr, check: f.Extra, off: f.Aux}
	if f.ReturnAddress {
		// A return address and the same pc sampled running are
		// looked up differently.
		k.kind |= 0x80
	}
	if v, ok := p.names.Get(k); ok {
		return v.(interpreter.Symbol), nil
	}
	sym, err := p.readCompiled(f)
	if err != nil {
		return interpreter.Symbol{}, err
	}
	n := int64(64)
	for _, l := range sym.Inlined {
		n += int64(len(l.Function)+len(l.File)) + 48
	}
	p.names.Add(k, sym, n)
	return sym, nil
}

// nmethodData are the byte ranges of a compiled method's debug data.
type nmethodData struct {
	codeBegin uint64
	method    uint64
	// methodCheck is the check value of method, as sampled.
	methodCheck uint32
	// stubBegin is where the code's stubs start (its exception and
	// deoptimization handlers).
	stubBegin             uint64
	pcs, scopes, metadata [2]uint64
}

// readNmethod reads the header of the nmethod at addr, checking its
// compile id and its method against check (see hotspot_step).
func (p *instance) readNmethod(addr uint64, check uint32) (*nmethodData, error) {
	f := p.f
	hdr := make([]byte, f.nmethod.Size)
	if err := p.mem.ReadAt(hdr, addr); err != nil {
		return nil, fmt.Errorf("%w: nmethod %#x: %w", ErrStale, addr, err)
	}
	le := binary.LittleEndian
	u64 := func(off uint64) uint64 {
		if off+8 > uint64(len(hdr)) {
			return 0
		}
		return le.Uint64(hdr[off:])
	}
	i32 := func(off uint64) uint64 {
		if off+4 > uint64(len(hdr)) {
			return 0
		}
		return uint64(int64(int32(le.Uint32(hdr[off:]))))
	}
	// Code of classes unloaded is made a zombie or unloaded (JDK 17)
	// and its block freed: it may hold a compile id and methods that look
	// alive while their metadata is reused.
	if s := int8(hdr[min(f.nmethodState, uint64(len(hdr)-1))]); s >= 3 {
		return nil, fmt.Errorf("%w: nmethod %#x: state %d", ErrStale, addr, s)
	}
	var used [1]byte
	if err := p.mem.ReadAt(used[:], addr-f.heapBlockSize+f.heapBlockUsed); err != nil || used[0] == 0 {
		return nil, fmt.Errorf("%w: nmethod %#x: its code heap block is free", ErrStale, addr)
	}
	d := &nmethodData{method: u64(f.nmethodMethod)}
	mcheck, err := p.methodCheckNow(d.method)
	if err != nil {
		return nil, fmt.Errorf("nmethod %#x: %w", addr, err)
	}
	if compiledCheck(uint32(i32(f.nmethodCompileID)), mcheck) != check {
		return nil, fmt.Errorf("%w: nmethod %#x: compile id %d, or its method, changed since the sample", ErrStale, addr, uint32(i32(f.nmethodCompileID)))
	}
	d.methodCheck = mcheck
	d.stubBegin = addr + i32(f.nmethodStubOffset)
	sec, err := f.nmethod.Sections(addr, hdr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	d.codeBegin = sec.CodeBegin
	d.pcs = [2]uint64{sec.PcDescs.Start, sec.PcDescs.End}
	d.scopes = [2]uint64{sec.Scopes.Start, sec.Scopes.End}
	d.metadata = [2]uint64{sec.Metadata.Start, sec.Metadata.End}
	return d, nil
}

// readRange reads [r[0], r[1]) of the process, bounded.
func (p *instance) readRange(r [2]uint64, what string) ([]byte, error) {
	if r[1] < r[0] || r[1]-r[0] > maxNmethodDataBytes {
		return nil, fmt.Errorf("%w: %s of %d bytes", ErrMalformed, what, int64(r[1]-r[0]))
	}
	b := make([]byte, r[1]-r[0])
	if err := p.mem.ReadAt(b, r[0]); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// scopesAt returns the methods inlined at pcOffset from the start of c's
// code, innermost first; none for code without debug information there.
func (p *instance) scopesAt(c *compiledCode, pcOffset uint64) ([]Scope, error) {
	if c.d.codeBegin+pcOffset >= c.d.stubBegin {
		// A handler: a frame being deoptimized returns to its
		// nmethod's deoptimization handler. No line is known.
		return nil, nil
	}
	pcs := c.pcs
	// FindPcDesc takes the first PcDesc at or after the offset: a return
	// address has its own, a running pc gets the next one's. When that
	// one has no debug information (the end of the method's code, after
	// its last safepoint: a loop's exit test), the code belongs to the
	// last safepoint before it, whose scope is taken instead.
	pd, ok := FindPcDesc(pcs, p.pcDesc, uint32(pcOffset))
	if !ok || pd.ScopeDecodeOffset == 0 {
		pd, ok = p.lastPcDescBefore(pcs, pcOffset)
	}
	if !ok {
		return nil, nil
	}
	return DecodeScopes(c.scopes, int(pd.ScopeDecodeOffset), p.enc)
}

// lastPcDescBefore returns the last PcDesc with debug information whose
// pc offset is below pcOffset.
func (p *instance) lastPcDescBefore(pcs []byte, pcOffset uint64) (PcDesc, bool) {
	d := p.pcDesc
	le := binary.LittleEndian
	var best PcDesc
	found := false
	for i := uint64(0); i+d.Size <= uint64(len(pcs)); i += d.Size {
		e := pcs[i : i+d.Size]
		off := int32(le.Uint32(e[d.PCOffset:]))
		if off < 0 || uint64(off) >= pcOffset {
			continue
		}
		scope := int32(le.Uint32(e[d.ScopeDecodeOffset:]))
		if scope == 0 || (found && off < best.PCOffset) {
			continue
		}
		best = PcDesc{PCOffset: off, ScopeDecodeOffset: scope, ObjDecodeOffset: int32(le.Uint32(e[d.ObjDecodeOffset:])), Flags: int32(le.Uint32(e[d.Flags:]))}
		found = true
	}
	return best, found
}

// compiledCode is what naming the pcs of one compiled method takes, read
// from the process once: its header, its method, its PcDescs, scope data
// and metadata, and the check values of the methods inlined in it as they
// are named. It is cached under the nmethod's address and check value
// (its compile id and method), which no other nmethod has: its debug data
// never changes while it lives, and the methods it inlines live as long
// as it does. A JIT-compiled loop is sampled at many pcs; each new one is
// then named from memory once the nmethod at its address is checked to be
// the one sampled (its header, its block in use, its method's check),
// where reading everything took twice those reads and five more for each
// method inlined (TestCompiledCodeCache).
type compiledCode struct {
	d                     *nmethodData
	top                   *method
	pcs, scopes, metadata []byte
	// checks holds, by metadata index - 1, the check value of the method
	// there once a scope named it (0: not yet).
	checks []uint32
	// readErr is why the debug data could not be read (then it is not
	// cached): without PcDescs or scope data a pc is named by its
	// method alone, without metadata a pc with scopes is not named.
	readErr, metadataErr error
}

// maxCachedCodeBytes bounds the debug data of a compiled method kept in
// the cache: a larger one (rare) is read again for each new pc.
const maxCachedCodeBytes = 64 << 10

// cacheable reports whether c is kept for the nmethod's next pcs.
func (c *compiledCode) cacheable() bool {
	return c.readErr == nil && c.bytes() <= maxCachedCodeBytes
}

// bytes estimates what c holds, for the cache's bounds.
func (c *compiledCode) bytes() int64 {
	return int64(len(c.pcs)+len(c.scopes)+len(c.metadata)+4*len(c.checks)) + 256
}

// code returns what names the pcs of the nmethod at addr, whose check
// value is check, from the cache or read from the process; read says it
// was read now (its reads to be confirmed by a read of the nmethod).
func (p *instance) code(addr uint64, check uint32) (c *compiledCode, read bool, err error) {
	k := cacheKey{kind: keyCode, addr: addr, check: check}
	if v, ok := p.names.Get(k); ok {
		// The nmethod at addr must be the one sampled, now: a sample's
		// check value does not prove it (TestJavaChurn named frames of
		// reused code with a class unloaded before when it did).
		if _, err := p.readNmethod(addr, check); err != nil {
			return nil, false, err
		}
		return v.(*compiledCode), false, nil
	}
	d, err := p.readNmethod(addr, check)
	if err != nil {
		return nil, false, err
	}
	top, err := p.method(d.method, d.methodCheck)
	if err != nil {
		return nil, false, fmt.Errorf("nmethod %#x: %w", addr, err)
	}
	c = &compiledCode{d: d, top: top}
	if d.pcs[1] != d.pcs[0] {
		// Without PcDescs (a native method wrapper) the scopes are not
		// needed: scopesAt finds none.
		c.pcs, c.readErr = p.readRange(d.pcs, "PcDescs")
		if c.readErr == nil {
			c.scopes, c.readErr = p.readRange(d.scopes, "scope data")
		}
		if c.readErr != nil {
			c.pcs, c.scopes = nil, nil
		}
	}
	if d.metadata[1] > d.metadata[0] {
		if c.metadata, err = p.readRange(d.metadata, "metadata"); err != nil {
			c.metadata, c.metadataErr = nil, fmt.Errorf("nmethod %#x: %w", addr, err)
			c.readErr = c.metadataErr
		}
		c.checks = make([]uint32, len(c.metadata)/8)
	}
	return c, true, nil
}

// inlined returns the method at index i (MethodIndex - 1) of c's
// metadata, at addr; read says it was read from the process now.
func (p *instance) inlined(c *compiledCode, i int, addr uint64) (m *method, read bool, err error) {
	if check := c.checks[i]; check != 0 {
		k := cacheKey{kind: keyMethod, addr: addr, check: check}
		if v, ok := p.names.Get(k); ok {
			return v.(*method), false, nil
		}
		// Evicted since: read again, checked against the same value.
		m, err := p.method(addr, check)
		return m, true, err
	}
	check, err := p.methodCheckNow(addr)
	if err != nil {
		return nil, true, err
	}
	if m, err = p.method(addr, check); err != nil {
		return nil, true, err
	}
	c.checks[i] = check
	return m, true, nil
}

func (p *instance) readCompiled(f interpreter.Frame) (interpreter.Symbol, error) {
	c, read, err := p.code(f.Addr, f.Extra)
	if err != nil {
		return interpreter.Symbol{}, err
	}
	d, top := c.d, c.top
	pc := f.Addr + uint64(f.Aux)
	scopes, err := p.scopesAt(c, pc-d.codeBegin)
	if err != nil || len(scopes) == 0 {
		// A native method wrapper, or code without debug data at pc
		// (the stubs section): the compiled method, without a line.
		if read && err == nil && c.cacheable() {
			p.names.Add(cacheKey{kind: keyCode, addr: f.Addr, check: f.Extra}, c, c.bytes())
		}
		sym := top.symbol(0, trace.FrameJVMCompiled)
		sym.Inlined = []trace.Line{{Function: top.name, File: top.file}}
		return sym, nil
	}
	if c.metadataErr != nil {
		return interpreter.Symbol{}, c.metadataErr
	}
	lines := make([]trace.Line, 0, len(scopes))
	// The frame's mapping is the innermost method's source file, whose
	// name the tracer gives it.
	var inner *method
	for _, s := range scopes {
		m := top
		if s.MethodIndex > 0 {
			i := s.MethodIndex - 1
			if i >= len(c.checks) {
				return interpreter.Symbol{}, fmt.Errorf("%w: nmethod %#x: method index %d of %d", ErrMalformed, f.Addr, s.MethodIndex, len(c.checks))
			}
			addr := binary.LittleEndian.Uint64(c.metadata[8*i:])
			if addr != d.method {
				var mread bool
				m, mread, err = p.inlined(c, i, addr)
				read = read || mread
				if err != nil {
					return interpreter.Symbol{}, fmt.Errorf("nmethod %#x: %w", f.Addr, err)
				}
			}
		}
		bci := uint32(bciUnknown)
		if s.BCI >= 0 {
			bci = uint32(s.BCI)
		}
		lines = append(lines, trace.Line{Function: m.name, File: m.file, Line: m.line(bci)})
		if inner == nil {
			inner = m
		}
	}
	if read {
		// The VM may have freed the code and its methods while they
		// were read (class unloading runs concurrently): the nmethod
		// must still be the one sampled once everything is read.
		if _, err := p.readNmethod(f.Addr, f.Extra); err != nil {
			return interpreter.Symbol{}, err
		}
		if c.cacheable() {
			p.names.Add(cacheKey{kind: keyCode, addr: f.Addr, check: f.Extra}, c, c.bytes())
		}
	}
	in := lines[0]
	h := uint64(0)
	for _, l := range lines {
		h = h*31 + frameAddr(l.Function, l.Line)
	}
	return interpreter.Symbol{
		ID:       trace.FrameID{File: inner.fileID, Addr: h, Type: trace.FrameJVMCompiled},
		Function: in.Function,
		File:     in.File,
		Line:     in.Line,
		Inlined:  lines,
	}, nil
}
