package hotspot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
)

// Bounds on what is read from a process for one method or compiled method.
const (
	// maxSymbolBytes bounds a class, method or signature name read.
	maxSymbolBytes = 4096
	// maxLineTableBytes bounds a method's line number table read.
	maxLineTableBytes = 64 << 10
	// maxNmethodDataBytes bounds the PcDescs, scope data or metadata
	// read for one compiled method.
	maxNmethodDataBytes = 1 << 20
	// maxHeaderBytes bounds the header of a VM object read at once.
	maxHeaderBytes = 1024
)

// Errors of Frame.
var (
	// ErrStale: the method or compiled code at the frame's address is not
	// the one sampled (freed, and its memory reused), or is gone.
	ErrStale = errors.New("java code changed since the sample")
	// ErrMalformed: what the process holds is not a well-formed VM object.
	ErrMalformed = errors.New("malformed VM data")
)

// instance is a JVM in one process.
type instance struct {
	layout *Layout
	f      *fields
	mem    interpreter.Memory
	unwind interpreter.Unwind
	names  *processCache
	// enc is the encoding of the VM's compressed streams; pcDesc the
	// layout of its PcDescs.
	enc    Encoding
	pcDesc PcDescLayout
}

// Unwind implements interpreter.Instance.
func (p *instance) Unwind() interpreter.Unwind { return p.unwind }

// Close implements interpreter.Closer: it gives back the cached bytes.
func (p *instance) Close() { p.names.Purge() }

// Frame implements interpreter.Instance.
func (p *instance) Frame(f interpreter.Frame) (interpreter.Symbol, error) {
	var sym interpreter.Symbol
	var err error
	switch f.Type {
	case trace.FrameJVMInterpreted:
		sym, err = p.interpretedFrame(f)
	case trace.FrameJVMCompiled:
		sym, err = p.compiledFrame(f)
	case trace.FrameJVMStub:
		sym, err = p.stubFrame(f)
	default:
		err = fmt.Errorf("hotspot: frame type %d", f.Type)
	}
	if err != nil {
		p.names.c.unnamed.Add(1)
	}
	return sym, err
}

// method is what is kept of a method.
type method struct {
	// name is pkg.Class.method(ArgTypes); file the source file's base
	// name; fileID stands for the source file (its package directory and
	// name).
	name   string
	file   string
	fileID trace.FileID
	lines  LineTable
}

// line returns the source line of bytecode index bci, 0 when unknown.
func (m *method) line(bci uint32) int64 {
	if bci == bciUnknown {
		return 0
	}
	return int64(m.lines.Line(int(bci)))
}

// bciUnknown is HOTSPOT_BCI_UNKNOWN.
const bciUnknown = 0xffffffff

func (p *instance) interpretedFrame(f interpreter.Frame) (interpreter.Symbol, error) {
	m, err := p.method(f.Addr, f.Extra)
	if err != nil {
		return interpreter.Symbol{}, err
	}
	return m.symbol(m.line(f.Aux), trace.FrameJVMInterpreted), nil
}

func (m *method) symbol(line int64, typ trace.FrameType) interpreter.Symbol {
	return interpreter.Symbol{
		ID:       trace.FrameID{File: m.fileID, Addr: frameAddr(m.name, line), Type: typ},
		Function: m.name,
		File:     m.file,
		Line:     line,
	}
}

// method returns the method at addr, whose check value (see
// hotspot_interpreted) must be check, read from the process unless
// cached.
func (p *instance) method(addr uint64, check uint32) (*method, error) {
	k := cacheKey{kind: keyMethod, addr: addr, check: check}
	if v, ok := p.names.Get(k); ok {
		return v.(*method), nil
	}
	m, n, err := p.readMethod(addr, check)
	if err != nil {
		return nil, err
	}
	p.names.Add(k, m, n)
	return m, nil
}

// methodCheckNow returns the check value of the method at addr as the
// process holds it now.
func (p *instance) methodCheckNow(addr uint64) (uint32, error) {
	f := p.f
	r := reader{mem: p.mem}
	cm := r.ptr(addr + f.methodConstMethod)
	constants := r.ptr(cm + f.constMethodConstants)
	holder := r.ptr(constants + f.cpoolHolder)
	klassName := r.ptr(holder + f.klassName)
	if r.err != nil {
		return 0, fmt.Errorf("%w: method %#x: %w", ErrStale, addr, r.err)
	}
	class, err := p.symbol(klassName)
	if err != nil {
		return 0, fmt.Errorf("%w: method %#x: class name: %w", ErrStale, addr, err)
	}
	return methodCheck(cm, klassName, class), nil
}

// readMethod reads the method at addr and returns it with the bytes it
// holds.
func (p *instance) readMethod(addr uint64, check uint32) (*method, int64, error) {
	f := p.f
	r := reader{mem: p.mem}
	cm := r.ptr(addr + f.methodConstMethod)
	if r.err != nil {
		return nil, 0, fmt.Errorf("%w: method %#x: %w", ErrStale, addr, r.err)
	}
	hdr := make([]byte, min(f.constMethodSize, maxHeaderBytes))
	if err := p.mem.ReadAt(hdr, cm); err != nil {
		return nil, 0, fmt.Errorf("%w: method %#x: %w", ErrStale, addr, err)
	}
	le := binary.LittleEndian
	at := func(off, size uint64) []byte {
		if off+size > uint64(len(hdr)) {
			return make([]byte, 8)
		}
		return hdr[off:]
	}
	constants := le.Uint64(at(f.constMethodConstants, 8))
	codeSize := uint64(le.Uint16(at(f.constMethodCodeSize, 2)))
	nameIdx := le.Uint16(at(f.constMethodNameIndex, 2))
	sigIdx := le.Uint16(at(f.constMethodSignatureIndex, 2))
	total := uint64(le.Uint32(at(f.constMethodTotalSize, 4))) * 8
	holder := r.ptr(constants + f.cpoolHolder)
	klassName := r.ptr(holder + f.klassName)
	if r.err != nil {
		return nil, 0, fmt.Errorf("%w: method %#x: %w", ErrStale, addr, r.err)
	}
	class, err := p.symbol(klassName)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: method %#x: class name: %w", ErrStale, addr, err)
	}
	if methodCheck(cm, klassName, class) != check {
		return nil, 0, fmt.Errorf("%w: method %#x", ErrStale, addr)
	}
	name, err := p.cpSymbol(constants, nameIdx)
	if err != nil {
		return nil, 0, fmt.Errorf("method %#x: name: %w", addr, err)
	}
	sig, err := p.cpSymbol(constants, sigIdx)
	if err != nil {
		return nil, 0, fmt.Errorf("method %#x: signature: %w", addr, err)
	}
	m := &method{name: strings.ToValidUTF8(JavaName(class, name, sig), "\uFFFD")}
	if f.cpoolSourceFile != noField {
		if idx := r.u16(constants + f.cpoolSourceFile); r.err == nil && idx != 0 {
			if file, err := p.cpSymbol(constants, idx); err == nil {
				m.file = strings.ToValidUTF8(path.Base(file), "\uFFFD")
			}
		}
	}
	pkg := ""
	if i := strings.LastIndexByte(class, '/'); i >= 0 {
		pkg = class[:i+1]
	}
	m.fileID = trace.SourceFileID("java", pkg+cmpOr(m.file, class))
	if at, ok := f.constMethod.LineTableAt(cm, hdr); ok {
		if end := cm + total; end > at && at >= cm+f.constMethodSize+codeSize {
			b := make([]byte, min(end-at, maxLineTableBytes))
			if err := p.mem.ReadAt(b, at); err == nil {
				// A table cut short or malformed names the
				// method without lines.
				m.lines, _, _ = DecodeLineTable(b, p.enc)
			}
		}
	}
	n := int64(len(m.name)+len(m.file)+8*len(m.lines)) + 96
	return m, n, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// methodCheck is the eBPF unwinder's check value of an interpreted frame
// (hotspot_interpreted): its ConstMethod's address, its class name's
// address, and that name's length and last eight bytes (className, the
// name as the VM holds it).
func methodCheck(constMethod, klassName uint64, className string) uint32 {
	n := len(className)
	var b [8]byte
	copy(b[:], className[max(n-8, 0):])
	tail := binary.LittleEndian.Uint64(b[:])
	h := mix(constMethod)
	h = mix(h ^ klassName)
	h = mix(h ^ tail)
	h = mix(h ^ uint64(uint16(n)))
	return uint32(h ^ h>>32)
}

// compiledCheck is the eBPF unwinder's check value of a compiled frame
// (hotspot_step): the nmethod's compile id and its method's check value.
func compiledCheck(compileID, methodCheck uint32) uint32 {
	h := mix(uint64(compileID)<<32 | uint64(methodCheck))
	return uint32(h ^ h>>32)
}

// mix is hotspot_mix: MurmurHash3's 64-bit finalizer.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// cpSymbol reads the Symbol at index idx of the constant pool at cp.
func (p *instance) cpSymbol(cp uint64, idx uint16) (string, error) {
	r := reader{mem: p.mem}
	s := r.ptr(cp + p.f.cpoolSize + 8*uint64(idx))
	if r.err != nil {
		return "", r.err
	}
	return p.symbol(s)
}

// symbol reads the Symbol (a VM string, modified UTF-8) at addr, as it is.
func (p *instance) symbol(addr uint64) (string, error) {
	if addr == 0 {
		return "", fmt.Errorf("%w: null symbol", ErrMalformed)
	}
	r := reader{mem: p.mem}
	n := uint64(r.u16(addr + p.f.symbolLength))
	if r.err != nil {
		return "", r.err
	}
	if n > maxSymbolBytes {
		return "", fmt.Errorf("%w: symbol of %d bytes", ErrMalformed, n)
	}
	b := make([]byte, n)
	if err := p.mem.ReadAt(b, addr+p.f.symbolBody); err != nil {
		return "", err
	}
	return string(b), nil
}

func (p *instance) stubFrame(f interpreter.Frame) (interpreter.Symbol, error) {
	k := cacheKey{kind: keyStub, addr: f.Addr}
	if v, ok := p.names.Get(k); ok {
		return v.(interpreter.Symbol), nil
	}
	r := reader{mem: p.mem}
	namep := r.ptr(f.Addr + p.f.blobName)
	if r.err != nil {
		return interpreter.Symbol{}, fmt.Errorf("%w: code blob %#x: %w", ErrStale, f.Addr, r.err)
	}
	b := make([]byte, 128)
	if err := p.mem.ReadAt(b, namep); err != nil {
		return interpreter.Symbol{}, fmt.Errorf("code blob %#x: name: %w", f.Addr, err)
	}
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	name := "[jvm: " + strings.ToValidUTF8(string(b), "\uFFFD") + "]"
	sym := interpreter.Symbol{
		ID:       trace.FrameID{File: trace.SourceFileID("java", "[jvm code]"), Addr: frameAddr(name, 0), Type: trace.FrameJVMStub},
		Function: name,
	}
	p.names.Add(k, sym, int64(len(name))+64)
	return sym, nil
}

// frameAddr derives a frame's address in its source file's pseudo-mapping:
// one per function and line (FNV-1a).
func frameAddr(name string, line int64) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * prime
	}
	v := uint64(line)
	for i := 0; i < 8; i++ {
		h = (h ^ (v & 0xff)) * prime
		v >>= 8
	}
	return h
}
