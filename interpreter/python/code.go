package python

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/namecache"
	"github.com/stackline-dev/stackline/trace"
)

// Bounds of the code objects cached, and of what is read from a process
// for one code object.
const (
	// DefaultProcessCacheBytes is the default bound of one process's
	// cache of code objects (--python-process-cache-bytes).
	DefaultProcessCacheBytes = 4 << 20
	// DefaultGlobalCacheBytes is the default bound of all processes'
	// caches together (--python-cache-bytes).
	DefaultGlobalCacheBytes = 32 << 20
	// maxNameChars bounds a function or file name read.
	maxNameChars = 4096
	// maxLineTableBytes bounds a line table read.
	maxLineTableBytes = 1 << 20
	// codeHeaderBytes is how much of a code object is read: every field
	// used lies within it in 3.8-3.13.
	codeHeaderBytes = 256
)

// Errors of Frame.
var (
	// ErrStaleCode: the code object at the frame's address is not the one
	// sampled (freed, and its memory reused).
	ErrStaleCode = errors.New("code object changed since the sample")
	// ErrBadObject: what the process holds at an address is not a
	// well-formed object of the expected type.
	ErrBadObject = errors.New("malformed Python object")
)

// codeKey identifies a code object in one process.
type codeKey struct {
	addr        uint64
	fingerprint uint32
}

// code is what is kept of a code object.
type code struct {
	qualname    string
	file        string
	fileID      trace.FileID
	firstLineno int32
	lines       *LineTable
}

// codeOverhead is what a cached code object holds besides its strings and
// line table: the code and LineTable structs and the cache's list element
// and map entry (measured by TestFrameMemory).
const codeOverhead = 224

// bytes estimates what c holds: its strings, its line table and the
// cache's bookkeeping.
func (c *code) bytes() int64 {
	n := int64(len(c.qualname) + len(c.file) + codeOverhead)
	if c.lines != nil {
		n += int64(len(c.lines.ranges)) * 8
	}
	return n
}

// instance is CPython in one process.
type instance struct {
	*loader
	mem    interpreter.Memory
	unwind interpreter.Unwind
	codes  *namecache.Cache[codeKey, *code]
	buf    [codeHeaderBytes]byte
}

// Unwind implements interpreter.Instance.
func (p *instance) Unwind() interpreter.Unwind { return p.unwind }

// Close implements interpreter.Closer: the cache's bytes go back to the
// budget all processes share.
func (p *instance) Close() { p.codes.Purge() }

// Frame implements interpreter.Instance.
func (p *instance) Frame(f interpreter.Frame) (interpreter.Symbol, error) {
	k := codeKey{addr: f.Addr, fingerprint: f.Extra}
	c, ok := p.codes.Get(k)
	if !ok {
		var err error
		if c, err = p.readCode(f.Addr, f.Extra); err != nil {
			return interpreter.Symbol{}, err
		}
		p.codes.Add(k, c, c.bytes())
	}
	var line int64
	if off, ok := p.byteOffset(f.Aux); ok && c.lines != nil {
		if l, ok := c.lines.Line(off); ok {
			line = int64(l)
		}
	}
	return interpreter.Symbol{
		ID:       trace.FrameID{File: c.fileID, Addr: frameAddr(c.qualname, c.firstLineno, line), Type: trace.FrameCPython},
		Function: c.qualname,
		File:     c.file,
		Line:     line,
	}, nil
}

// byteOffset turns the instruction the eBPF unwinder recorded into a byte
// offset in the code's bytecode.
func (p *instance) byteOffset(aux uint32) (uint32, bool) {
	switch {
	case p.minor >= 11:
		// The instruction pointer's offset from the code object; the
		// bytecode starts at co_code_adaptive.
		start := p.offsets.CodeCodeAdaptive
		if aux < start {
			return 0, false
		}
		return aux - start, true
	case p.minor == 10:
		// f_lasti counts 2-byte code units; -1 before the first.
		if int32(aux) < 0 {
			return 0, false
		}
		return aux * 2, true
	default:
		// f_lasti counts bytes.
		if int32(aux) < 0 {
			return 0, false
		}
		return aux, true
	}
}

// readCode reads the code object at addr, checking it is the one whose
// fingerprint the sample carries.
func (p *instance) readCode(addr uint64, want uint32) (*code, error) {
	o := &p.offsets
	b := p.buf[:]
	if err := p.mem.ReadAt(b, addr); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	ptr := func(off uint32) uint64 {
		if off == NoField || off+8 > uint32(len(b)) {
			return 0
		}
		return le.Uint64(b[off:])
	}
	firstLineno := int32(le.Uint32(b[o.CodeFirstLineno:]))
	name := ptr(o.CodeName)
	if fingerprint(name, firstLineno) != want {
		return nil, ErrStaleCode
	}
	c := &code{firstLineno: firstLineno}
	var err error
	qual := ptr(o.CodeQualname)
	if qual == 0 {
		qual = name // before 3.11 only co_name exists
	}
	if c.qualname, err = p.readString(qual); err != nil {
		return nil, fmt.Errorf("co_qualname: %w", err)
	}
	if c.file, err = p.readString(ptr(o.CodeFilename)); err != nil {
		return nil, fmt.Errorf("co_filename: %w", err)
	}
	c.fileID = trace.SourceFileID("cpython", c.file)
	table, err := p.readBytes(ptr(o.CodeLineTable))
	if err != nil {
		return nil, fmt.Errorf("line table: %w", err)
	}
	// A malformed table leaves the frame named without a line.
	c.lines, _ = ParseLineTable(p.minor, table, int(firstLineno))
	return c, nil
}

// readString reads a str object: compact ASCII or compact UCS-1/2/4, the
// forms names and file names of code objects take.
func (p *instance) readString(addr uint64) (string, error) {
	if addr == 0 {
		return "", fmt.Errorf("%w: NULL str", ErrBadObject)
	}
	o := &p.offsets
	var hdr [96]byte
	n := o.UnicodeCompactData
	if n > uint32(len(hdr)) {
		return "", fmt.Errorf("%w: str header of %d bytes", ErrBadObject, n)
	}
	if err := p.mem.ReadAt(hdr[:n], addr); err != nil {
		return "", err
	}
	le := binary.LittleEndian
	length := int64(le.Uint64(hdr[o.UnicodeLength:]))
	state := le.Uint32(hdr[o.UnicodeState:])
	kind, compact, ascii := unicodeKind(state), unicodeCompact(state), unicodeASCII(state)
	if length < 0 || length > maxNameChars || !compact {
		return "", fmt.Errorf("%w: str of length %d, state %#x", ErrBadObject, length, state)
	}
	if ascii {
		b := make([]byte, length)
		if err := p.mem.ReadAt(b, addr+uint64(o.UnicodeASCIIData)); err != nil {
			return "", err
		}
		return string(b), nil
	}
	if kind != 1 && kind != 2 && kind != 4 {
		return "", fmt.Errorf("%w: str kind %d", ErrBadObject, kind)
	}
	b := make([]byte, length*int64(kind))
	if err := p.mem.ReadAt(b, addr+uint64(o.UnicodeCompactData)); err != nil {
		return "", err
	}
	return decodeUCS(b, int(kind)), nil
}

// decodeUCS converts UCS-1, UCS-2 or UCS-4 code units to UTF-8.
func decodeUCS(b []byte, kind int) string {
	out := make([]byte, 0, len(b)/kind+8)
	for i := 0; i+kind <= len(b); i += kind {
		var r rune
		switch kind {
		case 1:
			r = rune(b[i])
		case 2:
			r = rune(binary.LittleEndian.Uint16(b[i:]))
		default:
			r = rune(binary.LittleEndian.Uint32(b[i:]))
		}
		if !utf8.ValidRune(r) {
			r = utf8.RuneError
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

// readBytes reads the contents of a bytes object.
func (p *instance) readBytes(addr uint64) ([]byte, error) {
	if addr == 0 {
		return nil, fmt.Errorf("%w: NULL bytes", ErrBadObject)
	}
	o := &p.offsets
	var size [8]byte
	if err := p.mem.ReadAt(size[:], addr+uint64(o.BytesSize)); err != nil {
		return nil, err
	}
	n := int64(binary.LittleEndian.Uint64(size[:]))
	if n < 0 || n > maxLineTableBytes {
		return nil, fmt.Errorf("%w: bytes of size %d", ErrBadObject, n)
	}
	b := make([]byte, n)
	if err := p.mem.ReadAt(b, addr+uint64(o.BytesData)); err != nil {
		return nil, err
	}
	return b, nil
}
