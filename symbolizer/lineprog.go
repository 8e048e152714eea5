package symbolizer

import (
	"bytes"
	"debug/dwarf"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path"
)

// The line programs of DWARF 5 describe themselves: their header names
// the address size, the compilation directory (directory 0) and every
// file, so that the rows of a file's line table can be read from
// .debug_line (with .debug_line_str and .debug_str for the names) alone,
// one program after the other, without .debug_info and .debug_abbrev.
// Those two are most of the DWARF a line table needs otherwise, and
// debug/dwarf parses every unit's abbreviations to find each unit's line
// program, which costs more than the line programs themselves. For a
// libc debug file with compressed sections, it also saves decompressing
// them. The programs of DWARF 2 to 4 need their unit's DW_AT_comp_dir and
// address size: readUnitHeads (dwarfunits.go) reads them from the units'
// first entries, or debug/dwarf finds the units, and lineProgReader reads
// their programs.
//
// lineProgReader reads the programs the way debug/dwarf's LineReader
// does, row for row, and gives up (errUseDWARF) on anything it does not
// read exactly as LineReader does: 64-bit DWARF; DW_LNE_define_file;
// attribute forms other than those compilers emit for line headers;
// paths with a drive letter; malformed data. The caller then reads the
// file's line tables through debug/dwarf, as before.

// errUseDWARF says lineProgReader left the line programs to debug/dwarf.
var errUseDWARF = errors.New("line programs not read without debug/dwarf")

// useDWARF returns an errUseDWARF error saying why.
func useDWARF(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUseDWARF, fmt.Sprintf(format, args...))
}

// lineBuf reads a DWARF section from front to back. Reading past its end
// sets err (an errUseDWARF error), and the reads after that return zeros.
//
// It moves through its bytes by an index, not by reslicing: a line
// program is read a byte or two at a time, and each reslice would store
// a pointer, which costs a write barrier while the garbage collector
// runs (half of a large line table's read, at the agent's start).
type lineBuf struct {
	buf  []byte // the bytes, read from pos on
	pos  int
	base int // offset of buf[0] in its section
	bo   binary.ByteOrder
	err  error
}

// len returns the number of bytes left.
func (b *lineBuf) len() int { return len(b.buf) - b.pos }

// rest returns the bytes left.
func (b *lineBuf) rest() []byte { return b.buf[b.pos:] }

// offset returns the offset in the section of the next byte.
func (b *lineBuf) offset() int { return b.base + b.pos }

// limit leaves the next n bytes (at most len) to read, and drops those
// after them.
func (b *lineBuf) limit(n int) { b.buf = b.buf[:b.pos+n] }

func (b *lineBuf) fail(what string) {
	if b.err == nil {
		b.err = useDWARF("%s at offset %d", what, b.offset())
		b.buf = b.buf[:b.pos]
	}
}

// underflow fails a read past the end.
//
//go:noinline
func (b *lineBuf) underflow() { b.fail("underflow") }

func (b *lineBuf) bytes(n uint64) []byte {
	if n > uint64(b.len()) {
		b.underflow()
		return nil
	}
	d := b.buf[b.pos : b.pos+int(n)]
	b.pos += int(n)
	return d
}

func (b *lineBuf) u8() uint8 {
	if b.pos >= len(b.buf) {
		b.underflow()
		return 0
	}
	b.pos++
	return b.buf[b.pos-1]
}

func (b *lineBuf) u16() uint16 {
	if d := b.bytes(2); d != nil {
		return b.bo.Uint16(d)
	}
	return 0
}

func (b *lineBuf) u32() uint32 {
	if d := b.bytes(4); d != nil {
		return b.bo.Uint32(d)
	}
	return 0
}

func (b *lineBuf) u64() uint64 {
	if d := b.bytes(8); d != nil {
		return b.bo.Uint64(d)
	}
	return 0
}

// leb reads an LEB128 number, returning its bits and how many bits it
// was written in (7 per byte).
func (b *lineBuf) leb() (uint64, uint) {
	var x uint64
	var bits uint
	for i, c := range b.buf[b.pos:] {
		if bits < 64 {
			x |= uint64(c&0x7f) << bits
		}
		bits += 7
		if c&0x80 == 0 {
			b.pos += i + 1
			return x, bits
		}
	}
	b.fail("unterminated LEB128")
	return 0, 0
}

func (b *lineBuf) uleb() uint64 {
	if b.pos < len(b.buf) && b.buf[b.pos] < 0x80 {
		b.pos++
		return uint64(b.buf[b.pos-1])
	}
	x, _ := b.leb()
	return x
}

func (b *lineBuf) sleb() int64 {
	ux, bits := b.leb()
	x := int64(ux)
	if bits < 64 && x&(1<<(bits-1)) != 0 {
		x |= -1 << bits
	}
	return x
}

// cstring reads a NUL-terminated string, without its NUL.
func (b *lineBuf) cstring() []byte {
	i := bytes.IndexByte(b.buf[b.pos:], 0)
	if i < 0 {
		b.fail("unterminated string")
		return nil
	}
	s := b.buf[b.pos : b.pos+i]
	b.pos += i + 1
	return s
}

// DWARF 5 constants of line program headers.
const (
	lnctPath           = 1
	lnctDirectoryIndex = 2

	formBlock    = 0x09
	formData1    = 0x0b
	formData2    = 0x05
	formData4    = 0x06
	formData8    = 0x07
	formData16   = 0x1e
	formString   = 0x08
	formStrp     = 0x0e
	formUdata    = 0x0f
	formLineStrp = 0x1f
)

// Line program opcodes.
const (
	lnsCopy             = 1
	lnsAdvancePC        = 2
	lnsAdvanceLine      = 3
	lnsSetFile          = 4
	lnsSetColumn        = 5
	lnsNegateStmt       = 6
	lnsSetBasicBlock    = 7
	lnsConstAddPC       = 8
	lnsFixedAdvancePC   = 9
	lnsSetPrologueEnd   = 10
	lnsSetEpilogueBegin = 11
	lnsSetISA           = 12

	lneEndSequence      = 1
	lneSetAddress       = 2
	lneDefineFile       = 3
	lneSetDiscriminator = 4
)

// standardOpcodeLengths are the operand counts the standard opcodes
// must be declared with, as debug/dwarf checks them (it does not check
// DW_LNS_set_column and DW_LNS_fixed_advance_pc).
var standardOpcodeLengths = [...]int8{
	lnsCopy: 0, lnsAdvancePC: 1, lnsAdvanceLine: 1, lnsSetFile: 1,
	lnsSetColumn: -1, lnsNegateStmt: 0, lnsSetBasicBlock: 0, lnsConstAddPC: 0,
	lnsFixedAdvancePC: -1, lnsSetPrologueEnd: 0, lnsSetEpilogueBegin: 0, lnsSetISA: 1,
}

// lineStr is a string of a line program header: where it is, so that
// the same name is recognized without being copied.
type lineStr struct {
	sec uint8 // 0: .debug_line, 1: .debug_str, 2: .debug_line_str
	off uint64
	s   []byte
}

// lineFileKey identifies a file of a line program by its directory and
// name strings.
type lineFileKey struct {
	dirSec, nameSec uint8
	dirOff, nameOff uint64
}

// lineFile is an entry of a line program's file table.
type lineFile struct {
	name lineStr
	dir  int // index in the directories, -1 for none
	k    uint32
	seen bool // k is set
	none bool // file 0 before DWARF 5: no file
}

// lineData are the sections lineProgReader reads.
type lineData struct {
	line, str, lineStr []byte
	bo                 binary.ByteOrder
}

// lineFormat is an entry of a directory or file entry format.
type lineFormat struct{ lnct, form uint64 }

// lineProgReader reads line programs into a lineCollector, reusing its
// buffers from one program to the next.
type lineProgReader struct {
	secs    lineData
	c       *lineCollector
	keys    map[lineFileKey]uint32 // of DWARF 5 programs' files
	shared  bool                   // the program's files are in keys
	dirs    []lineStr
	files   []lineFile
	formats []lineFormat
	opLens  []uint8
	// special is the effect of the special opcodes of the last program
	// run, made again only for a program whose header changes it.
	special specialOps
}

// specialOps is the effect of each special opcode of line programs with
// one header's opcode base, line base and line range: how many operations
// it advances and how much it adds to the line. A program is mostly
// special opcodes, and each would otherwise cost two divisions; the
// programs of a file share one header's values.
type specialOps struct {
	opcodeBase, lineBase, lineRange int
	ops, lines                      [256]int32
}

// set makes s the table of the header's values, when it is not already.
func (s *specialOps) set(opcodeBase, lineBase, lineRange int) {
	if s.lineRange != 0 && s.opcodeBase == opcodeBase && s.lineBase == lineBase && s.lineRange == lineRange {
		return
	}
	s.opcodeBase, s.lineBase, s.lineRange = opcodeBase, lineBase, lineRange
	for op := opcodeBase; op < len(s.ops); op++ {
		adj := op - opcodeBase
		s.ops[op] = int32(adj / lineRange)
		s.lines[op] = int32(lineBase + adj%lineRange)
	}
}

// lineProgramsV5 adds the rows of every line program of secs.line to c,
// when they are all of DWARF 5.
func (c *lineCollector) lineProgramsV5(secs lineData) error {
	r := newLineProgReader(secs, c)
	for off := 0; off < len(secs.line); {
		end, err := r.program(off, nil)
		if err != nil {
			return err
		}
		off = end
	}
	return nil
}

// linePrograms adds the rows of the line programs of d's units to c, as
// collect does, reading the programs itself.
func (c *lineCollector) linePrograms(d *dwarf.Data, secs lineData) error {
	r := newLineProgReader(secs, c)
	rd := d.Reader()
	for {
		e, err := rd.Next()
		if err != nil {
			return fmt.Errorf("read DWARF: %w", err)
		}
		if e == nil {
			return nil
		}
		rd.SkipChildren()
		if e.Tag != dwarf.TagCompileUnit && e.Tag != dwarf.TagPartialUnit {
			continue
		}
		off, ok := e.Val(dwarf.AttrStmtList).(int64)
		if !ok {
			continue
		}
		if off < 0 || off >= int64(len(secs.line)) {
			return useDWARF("line program offset %d out of range", off)
		}
		compDir, _ := e.Val(dwarf.AttrCompDir).(string)
		if _, err := r.program(int(off), &lineUnit{compDir: compDir, addrSize: rd.AddressSize()}); err != nil {
			return err
		}
	}
}

// lineUnit is what a line program of DWARF 4 or older takes from its
// unit.
type lineUnit struct {
	compDir  string
	addrSize int
}

// newLineProgReader returns a reader of the line programs of secs into c.
func newLineProgReader(secs lineData, c *lineCollector) *lineProgReader {
	if c.fileIdx == nil {
		c.fileIdx = map[string]uint32{}
	}
	return &lineProgReader{secs: secs, c: c, keys: map[lineFileKey]uint32{}}
}

// program reads the line program at off and returns where it ends. u is
// the program's unit; without one, the program must be of DWARF 5.
func (r *lineProgReader) program(off int, u *lineUnit) (int, error) {
	b := &lineBuf{buf: r.secs.line[off:], base: off, bo: r.secs.bo}
	length := b.u32()
	if length >= 0xfffffff0 {
		return 0, useDWARF("64-bit DWARF or reserved unit length")
	}
	end := b.offset() + int(length)
	if uint64(length) > uint64(b.len()) {
		return 0, useDWARF("line program at %d ends past its section", off)
	}
	b.limit(int(length))
	version := b.u16()
	if version < 2 || version > 5 || version < 5 && u == nil {
		return 0, useDWARF("line program version %d", version)
	}
	var addrSize int
	if version >= 5 {
		addrSize = int(b.u8())
		b.u8() // segment selector size
	} else {
		addrSize = u.addrSize
	}
	headerLen := uint64(b.u32())
	if headerLen > uint64(b.len()) {
		return 0, useDWARF("line program header too long")
	}
	program := b.rest()[headerLen:]
	programOff := b.offset() + int(headerLen)
	minInstLen := int(b.u8())
	maxOps := 1
	if version >= 4 {
		maxOps = int(b.u8())
	}
	b.u8() // default is_stmt
	lineBase := int(int8(b.u8()))
	lineRange := int(b.u8())
	opcodeBase := int(b.u8())
	if maxOps == 0 || lineRange == 0 {
		return 0, useDWARF("invalid line program header")
	}
	r.opLens = r.opLens[:0]
	r.opLens = append(r.opLens, 0)
	for i := 1; i < opcodeBase; i++ {
		n := b.u8()
		if i < len(standardOpcodeLengths) && standardOpcodeLengths[i] >= 0 && int(n) != int(standardOpcodeLengths[i]) {
			return 0, useDWARF("opcode %d has %d operands", i, n)
		}
		r.opLens = append(r.opLens, n)
	}
	r.dirs = r.dirs[:0]
	r.files = r.files[:0]
	r.shared = version >= 5
	if version >= 5 {
		if err := r.entries(b, func(path lineStr, _ int) { r.dirs = append(r.dirs, path) }, false); err != nil {
			return 0, err
		}
		if err := r.entries(b, func(path lineStr, dir int) { r.files = append(r.files, lineFile{name: path, dir: dir}) }, true); err != nil {
			return 0, err
		}
	} else if err := r.entriesV4(b, u.compDir); err != nil {
		return 0, err
	}
	if b.err != nil {
		return 0, b.err
	}
	p := &lineBuf{buf: program, base: programOff, bo: r.secs.bo}
	return end, r.run(p, addrSize, minInstLen, maxOps, lineBase, lineRange, opcodeBase)
}

// hasDrive reports whether p starts with a drive letter or two slashes,
// which debug/dwarf joins as Windows paths.
func hasDrive(p []byte) bool {
	slash := func(c byte) bool { return c == '/' || c == '\\' }
	return len(p) >= 2 && p[1] == ':' || len(p) > 3 && slash(p[0]) && slash(p[1])
}

// absPath reports whether p, without a drive, is absolute as debug/dwarf
// has it.
func absPath(p []byte) bool { return len(p) > 0 && (p[0] == '/' || p[0] == '\\') }

// entriesV4 reads the directory and file tables of a line program header
// before DWARF 5: directory 0 is the unit's compilation directory, and
// relative directories are in it.
func (r *lineProgReader) entriesV4(b *lineBuf, compDir string) error {
	if hasDrive([]byte(compDir)) {
		return useDWARF("compilation directory %q with a drive", compDir)
	}
	r.dirs = append(r.dirs, lineStr{s: []byte(compDir)})
	for {
		d := b.cstring()
		if b.err != nil {
			return b.err
		}
		if len(d) == 0 {
			break
		}
		if hasDrive(d) {
			return useDWARF("directory %q with a drive", d)
		}
		if !absPath(d) && compDir != "" {
			d = []byte(path.Join(compDir, string(d)))
		}
		r.dirs = append(r.dirs, lineStr{s: d})
	}
	r.files = append(r.files, lineFile{none: true})
	for {
		nameOff := b.offset()
		name := b.cstring()
		if b.err != nil {
			return b.err
		}
		if len(name) == 0 {
			return nil
		}
		if hasDrive(name) {
			return useDWARF("file name %q with a drive", name)
		}
		dir := int(min(b.uleb(), math.MaxInt32))
		if absPath(name) {
			dir = -1
		} else if dir >= len(r.dirs) {
			return useDWARF("directory index %d out of range", dir)
		}
		b.uleb() // modification time
		b.uleb() // length
		r.files = append(r.files, lineFile{name: lineStr{off: uint64(nameOff), s: name}, dir: dir})
	}
}

// entries reads a directory (files false) or file table of a line program
// header, calling add with each entry's path and directory index (-1 for
// none).
func (r *lineProgReader) entries(b *lineBuf, add func(path lineStr, dir int), files bool) error {
	n := int(b.u8())
	r.formats = r.formats[:0]
	for range n {
		r.formats = append(r.formats, lineFormat{lnct: b.uleb(), form: b.uleb()})
	}
	count := b.uleb()
	if count > uint64(b.len()) {
		// Entries take a byte at least, but for an empty format.
		return useDWARF("%d entries in a line program header", count)
	}
	for range count {
		var path lineStr
		dir := -1
		for _, f := range r.formats {
			var s lineStr
			var v uint64
			switch f.form {
			case formString:
				s = lineStr{sec: 0, off: uint64(b.offset())}
				s.s = b.cstring()
			case formStrp, formLineStrp:
				off := uint64(b.u32())
				sec, data := uint8(1), r.secs.str
				if f.form == formLineStrp {
					sec, data = 2, r.secs.lineStr
				}
				if off > uint64(len(data)) {
					return useDWARF("string offset %d out of range", off)
				}
				i := bytes.IndexByte(data[off:], 0)
				if i < 0 {
					return useDWARF("unterminated string at %d", off)
				}
				s = lineStr{sec: sec, off: off, s: data[off : off+uint64(i)]}
			case formData1:
				v = uint64(b.u8())
			case formData2:
				v = uint64(b.u16())
			case formData4:
				v = uint64(b.u32())
			case formData8:
				v = b.u64()
			case formData16:
				b.bytes(16)
			case formBlock:
				b.bytes(b.uleb())
			case formUdata:
				v = b.uleb()
			default:
				return useDWARF("form %#x in a line program header", f.form)
			}
			switch f.lnct {
			case lnctPath:
				path = s
			case lnctDirectoryIndex:
				if !files {
					return useDWARF("directory entry with a directory index")
				}
				if v >= uint64(len(r.dirs)) {
					return useDWARF("directory index %d out of range", v)
				}
				dir = int(v)
			}
		}
		if b.err != nil {
			return b.err
		}
		add(path, dir)
	}
	return b.err
}

// fileIndex returns the collector's index of file i of the program, and
// false when the program has no file i.
func (r *lineProgReader) fileIndex(i uint64) (uint32, bool, error) {
	if i >= uint64(len(r.files)) || r.files[i].none {
		return 0, false, nil
	}
	f := &r.files[i]
	if f.seen {
		return f.k, true, nil
	}
	var dir []byte
	if f.dir >= 0 && len(f.name.s) > 0 && len(r.dirs[f.dir].s) > 0 {
		dir = r.dirs[f.dir].s
	}
	// The names of DWARF 5 programs are strings of .debug_line_str or
	// .debug_str that many programs share: the collector's index is
	// found by where they are, not by the name made of them. The names
	// of older programs are the program's own.
	key := lineFileKey{nameSec: f.name.sec, nameOff: f.name.off, dirSec: math.MaxUint8}
	if dir != nil {
		key.dirSec, key.dirOff = r.dirs[f.dir].sec, r.dirs[f.dir].off
	}
	k, ok := r.keys[key]
	if !ok || !r.shared {
		// The name as debug/dwarf's LineReader gives it: the path
		// joined to its directory, when both are set.
		name := string(f.name.s)
		if dir != nil {
			if hasDrive(dir) {
				return 0, false, useDWARF("directory %q with a drive", dir)
			}
			name = path.Join(string(dir), name)
		}
		var err error
		if k, err = r.c.file(name); err != nil {
			return 0, false, err
		}
		if r.shared {
			r.keys[key] = k
		}
	}
	f.k, f.seen = k, true
	return k, true, nil
}

// run runs a line program, adding its rows to the collector as
// lineCollector.addUnit adds those of debug/dwarf's LineReader.
func (r *lineProgReader) run(b *lineBuf, addrSize int, minInstLen, maxOps, lineBase, lineRange, opcodeBase int) error {
	var (
		addr      uint64
		opIndex   int
		line      int
		fileIndex uint64
	)
	reset := func() {
		addr, opIndex, line, fileIndex = 0, 0, 1, 1
	}
	reset()
	advance := func(ops int) {
		if maxOps == 1 {
			// Every architecture but VLIW ones: no division.
			addr += uint64(minInstLen * ops)
			return
		}
		i := opIndex + ops
		addr += uint64(minInstLen * (i / maxOps))
		opIndex = i % maxOps
	}
	sp := &r.special
	sp.set(opcodeBase, lineBase, lineRange)
	prev := lineRow{file: noFile}
	emit := func(end bool) error {
		row := lineRow{addr: addr, file: noFile}
		if !end {
			k, ok, err := r.fileIndex(fileIndex)
			if err != nil {
				return err
			}
			if ok {
				row.file = k
				row.line = uint32(min(max(line, 0), math.MaxUint32))
				if prev.file == row.file && prev.line == row.line && row.addr >= prev.addr {
					return nil
				}
			}
		}
		r.c.add(row)
		prev = row
		return nil
	}
	for b.len() > 0 {
		opcode := int(b.u8())
		if opcode >= opcodeBase {
			advance(int(sp.ops[opcode]))
			line += int(sp.lines[opcode])
			if err := emit(false); err != nil {
				return err
			}
			continue
		}
		switch opcode {
		case 0:
			length := b.uleb()
			start := b.offset()
			sub := b.u8()
			switch sub {
			case lneEndSequence:
				if err := emit(true); err != nil {
					return err
				}
				reset()
			case lneSetAddress:
				switch addrSize {
				case 1:
					addr = uint64(b.u8())
				case 2:
					addr = uint64(b.u16())
				case 4:
					addr = uint64(b.u32())
				case 8:
					addr = b.u64()
				default:
					return useDWARF("address size %d", addrSize)
				}
			case lneDefineFile:
				return useDWARF("DW_LNE_define_file")
			case lneSetDiscriminator:
				b.uleb()
			}
			if length > math.MaxUint32 || start+int(length) < b.offset() {
				return useDWARF("extended opcode %d overruns its length", sub)
			}
			b.bytes(uint64(start + int(length) - b.offset()))
		case lnsCopy:
			if err := emit(false); err != nil {
				return err
			}
		case lnsAdvancePC:
			advance(int(b.uleb()))
		case lnsAdvanceLine:
			line += int(b.sleb())
		case lnsSetFile:
			fileIndex = b.uleb()
		case lnsSetColumn, lnsSetISA:
			b.uleb()
		case lnsNegateStmt, lnsSetBasicBlock, lnsSetPrologueEnd, lnsSetEpilogueBegin:
		case lnsConstAddPC:
			advance((255 - opcodeBase) / lineRange)
		case lnsFixedAdvancePC:
			addr += uint64(b.u16())
		default:
			for range r.opLens[opcode] {
				b.uleb()
			}
		}
		if b.err != nil {
			return b.err
		}
	}
	return nil
}
