package symbolizer

import (
	"bytes"
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
// them.
//
// lineProgramsV5 reads the programs the way debug/dwarf's LineReader
// does, row for row. It gives up (errNotV5) on anything it does not read
// exactly as LineReader does: a program of DWARF 4 or older, whose file
// names depend on its unit's DW_AT_comp_dir; 64-bit DWARF;
// DW_LNE_define_file; attribute forms other than those compilers emit for
// line headers; a directory with a drive letter; malformed data. The
// caller then reads the file's line tables through debug/dwarf, as
// before.

// errNotV5 says lineProgramsV5 left the line programs to debug/dwarf.
var errNotV5 = errors.New("line programs not read without debug/dwarf")

// notV5 returns an errNotV5 error saying why.
func notV5(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errNotV5, fmt.Sprintf(format, args...))
}

// lineBuf reads a DWARF section from front to back.
type lineBuf struct {
	data []byte
	off  int // of data[0] in its section
	bo   binary.ByteOrder
	err  error
}

func (b *lineBuf) fail(what string) {
	if b.err == nil {
		b.err = notV5("%s at offset %d", what, b.off)
		b.data = nil
	}
}

func (b *lineBuf) bytes(n uint64) []byte {
	if n > uint64(len(b.data)) {
		b.fail("underflow")
		return nil
	}
	d := b.data[:n]
	b.data = b.data[n:]
	b.off += int(n)
	return d
}

func (b *lineBuf) u8() uint8 {
	if d := b.bytes(1); d != nil {
		return d[0]
	}
	return 0
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
	for i, c := range b.data {
		if bits < 64 {
			x |= uint64(c&0x7f) << bits
		}
		bits += 7
		if c&0x80 == 0 {
			b.data = b.data[i+1:]
			b.off += i + 1
			return x, bits
		}
	}
	b.fail("unterminated LEB128")
	return 0, 0
}

func (b *lineBuf) uleb() uint64 {
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
	i := bytes.IndexByte(b.data, 0)
	if i < 0 {
		b.fail("unterminated string")
		return nil
	}
	s := b.data[:i]
	b.data = b.data[i+1:]
	b.off += i + 1
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
}

// lineSectionsV5 are the sections lineProgramsV5 reads.
type lineSectionsV5 struct {
	line, str, lineStr []byte
	bo                 binary.ByteOrder
}

// lineFormat is an entry of a directory or file entry format.
type lineFormat struct{ lnct, form uint64 }

// v5Reader holds what lineProgramsV5 reuses from one program to the next.
type v5Reader struct {
	secs    lineSectionsV5
	c       *lineCollector
	keys    map[lineFileKey]uint32
	dirs    []lineStr
	files   []lineFile
	formats []lineFormat
	opLens  []uint8
}

// lineProgramsV5 adds the rows of every line program of secs.line to c.
// On errNotV5 the caller starts over with debug/dwarf.
func (c *lineCollector) lineProgramsV5(secs lineSectionsV5) error {
	if c.fileIdx == nil {
		c.fileIdx = map[string]uint32{}
	}
	r := v5Reader{secs: secs, c: c, keys: map[lineFileKey]uint32{}}
	for off := 0; off < len(secs.line); {
		end, err := r.program(off)
		if err != nil {
			return err
		}
		off = end
	}
	return nil
}

// program reads the line program at off and returns where it ends.
func (r *v5Reader) program(off int) (int, error) {
	b := &lineBuf{data: r.secs.line[off:], off: off, bo: r.secs.bo}
	length := b.u32()
	if length >= 0xfffffff0 {
		return 0, notV5("64-bit DWARF or reserved unit length")
	}
	end := b.off + int(length)
	if uint64(length) > uint64(len(b.data)) {
		return 0, notV5("line program at %d ends past its section", off)
	}
	b.data = b.data[:length]
	version := b.u16()
	if version != 5 {
		return 0, notV5("line program version %d", version)
	}
	addrSize := b.u8()
	b.u8() // segment selector size
	headerLen := uint64(b.u32())
	if headerLen > uint64(len(b.data)) {
		return 0, notV5("line program header too long")
	}
	program := b.data[headerLen:]
	programOff := b.off + int(headerLen)
	minInstLen := int(b.u8())
	maxOps := int(b.u8())
	b.u8() // default is_stmt
	lineBase := int(int8(b.u8()))
	lineRange := int(b.u8())
	opcodeBase := int(b.u8())
	if maxOps == 0 || lineRange == 0 {
		return 0, notV5("invalid line program header")
	}
	r.opLens = r.opLens[:0]
	r.opLens = append(r.opLens, 0)
	for i := 1; i < opcodeBase; i++ {
		n := b.u8()
		if i < len(standardOpcodeLengths) && standardOpcodeLengths[i] >= 0 && int(n) != int(standardOpcodeLengths[i]) {
			return 0, notV5("opcode %d has %d operands", i, n)
		}
		r.opLens = append(r.opLens, n)
	}
	r.dirs = r.dirs[:0]
	if err := r.entries(b, func(path lineStr, _ int) { r.dirs = append(r.dirs, path) }, false); err != nil {
		return 0, err
	}
	r.files = r.files[:0]
	if err := r.entries(b, func(path lineStr, dir int) { r.files = append(r.files, lineFile{name: path, dir: dir}) }, true); err != nil {
		return 0, err
	}
	if b.err != nil {
		return 0, b.err
	}
	p := &lineBuf{data: program, off: programOff, bo: r.secs.bo}
	return end, r.run(p, addrSize, minInstLen, maxOps, lineBase, lineRange, opcodeBase)
}

// entries reads a directory (files false) or file table of a line program
// header, calling add with each entry's path and directory index (-1 for
// none).
func (r *v5Reader) entries(b *lineBuf, add func(path lineStr, dir int), files bool) error {
	n := int(b.u8())
	r.formats = r.formats[:0]
	for range n {
		r.formats = append(r.formats, lineFormat{lnct: b.uleb(), form: b.uleb()})
	}
	count := b.uleb()
	if count > uint64(len(b.data)) {
		// Entries take a byte at least, but for an empty format.
		return notV5("%d entries in a line program header", count)
	}
	for range count {
		var path lineStr
		dir := -1
		for _, f := range r.formats {
			var s lineStr
			var v uint64
			switch f.form {
			case formString:
				s = lineStr{sec: 0, off: uint64(b.off)}
				s.s = b.cstring()
			case formStrp, formLineStrp:
				off := uint64(b.u32())
				sec, data := uint8(1), r.secs.str
				if f.form == formLineStrp {
					sec, data = 2, r.secs.lineStr
				}
				if off > uint64(len(data)) {
					return notV5("string offset %d out of range", off)
				}
				i := bytes.IndexByte(data[off:], 0)
				if i < 0 {
					return notV5("unterminated string at %d", off)
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
				return notV5("form %#x in a line program header", f.form)
			}
			switch f.lnct {
			case lnctPath:
				path = s
			case lnctDirectoryIndex:
				if !files {
					return notV5("directory entry with a directory index")
				}
				if v >= uint64(len(r.dirs)) {
					return notV5("directory index %d out of range", v)
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
func (r *v5Reader) fileIndex(i uint64) (uint32, bool, error) {
	if i >= uint64(len(r.files)) {
		return 0, false, nil
	}
	f := &r.files[i]
	if f.seen {
		return f.k, true, nil
	}
	key := lineFileKey{nameSec: f.name.sec, nameOff: f.name.off, dirSec: math.MaxUint8}
	var dir []byte
	if f.dir >= 0 && len(f.name.s) > 0 {
		d := r.dirs[f.dir]
		if len(d.s) > 0 {
			dir = d.s
			key.dirSec, key.dirOff = d.sec, d.off
		}
	}
	k, ok := r.keys[key]
	if !ok {
		// The name as debug/dwarf's LineReader gives it: the path
		// joined to its directory, when both are set.
		name := string(f.name.s)
		if dir != nil {
			if len(dir) >= 2 && dir[1] == ':' || len(dir) > 3 && (dir[0] == '/' || dir[0] == '\\') && (dir[1] == '/' || dir[1] == '\\') {
				return 0, false, notV5("directory %q with a drive", dir)
			}
			name = path.Join(string(dir), name)
		}
		var err error
		if k, err = r.c.file(name); err != nil {
			return 0, false, err
		}
		r.keys[key] = k
	}
	f.k, f.seen = k, true
	return k, true, nil
}

// run runs a line program, adding its rows to the collector as
// lineCollector.addUnit adds those of debug/dwarf's LineReader.
func (r *v5Reader) run(b *lineBuf, addrSize uint8, minInstLen, maxOps, lineBase, lineRange, opcodeBase int) error {
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
		i := opIndex + ops
		addr += uint64(minInstLen * (i / maxOps))
		opIndex = i % maxOps
	}
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
	for len(b.data) > 0 {
		opcode := int(b.u8())
		if opcode >= opcodeBase {
			adj := opcode - opcodeBase
			advance(adj / lineRange)
			line += lineBase + adj%lineRange
			if err := emit(false); err != nil {
				return err
			}
			continue
		}
		switch opcode {
		case 0:
			length := b.uleb()
			start := b.off
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
					return notV5("address size %d", addrSize)
				}
			case lneDefineFile:
				return notV5("DW_LNE_define_file")
			case lneSetDiscriminator:
				b.uleb()
			}
			if length > math.MaxUint32 || start+int(length) < b.off {
				return notV5("extended opcode %d overruns its length", sub)
			}
			b.bytes(uint64(start + int(length) - b.off))
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
