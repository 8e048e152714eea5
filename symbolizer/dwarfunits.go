package symbolizer

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
)

// The line programs of DWARF 2 to 4 need their unit's DW_AT_stmt_list
// (where the program is), DW_AT_comp_dir (directory 0) and address size.
// readUnitHeads reads them from .debug_info and .debug_abbrev itself:
// debug/dwarf.New parses every abbreviation of every unit into maps
// first (node's 111 units: 1.8 MB and a third of its line table's time),
// where only each unit's first entry is needed. It reads them as
// linePrograms gets them through debug/dwarf's Reader, and gives up
// (errUseDWARF) on anything it does not read exactly as debug/dwarf
// does, or that would make debug/dwarf fail: 64-bit DWARF or a unit of
// DWARF 5, a unit or abbreviation table that is truncated or malformed,
// an attribute form outside those of DWARF 2 to 4 (indexed strings and
// addresses, supplementary files, DW_FORM_indirect), a unit entry that is
// not a compilation or partial unit or has DW_AT_sibling, bytes after a
// unit entry without children. The caller then reads the units through
// debug/dwarf, as before.
//
// One difference remains, on malformed input only: debug/dwarf's Reader
// decodes the children of the last unit's entry (SkipChildren has no
// next unit to go to), and fails on a malformed one; readUnitHeads does
// not read children, and the line programs are read all the same.

// unitHead is what a unit gives its line program.
type unitHead struct {
	// stmtList is the offset of the line program, when hasStmtList.
	stmtList    int64
	hasStmtList bool
	lineUnit
}

// DWARF constants of unit entries.
const (
	tagCompileUnit = 0x11
	tagPartialUnit = 0x3c
	atSibling      = 0x01
	atStmtList     = 0x10
	atCompDir      = 0x1b
)

// DWARF attribute forms of DWARF 2 to 4 that readUnitHeads reads, besides
// those line program headers use (lineprog.go).
const (
	formAddr        = 0x01
	formBlock2      = 0x03
	formBlock4      = 0x04
	formBlock1      = 0x0a
	formFlag        = 0x0c
	formSdata       = 0x0d
	formRefAddr     = 0x10
	formRef1        = 0x11
	formRef2        = 0x12
	formRef4        = 0x13
	formRef8        = 0x14
	formRefUdata    = 0x15
	formSecOffset   = 0x17
	formExprloc     = 0x18
	formFlagPresent = 0x19
	formRefSig8     = 0x20
)

// unitAbbrev is the abbreviation of a unit's entry: its tag, whether the
// entry has children, and its attributes' names and forms, pairs of
// LEB128 numbers from attrs on in the abbreviations' section.
type unitAbbrev struct {
	tag      uint64
	children bool
	attrs    int
}

// readUnitHeads returns the heads of the units of info, whose entries'
// abbreviations are in abbrev and strings in str, in the order of the
// units.
func readUnitHeads(info, abbrev, str []byte, bo binary.ByteOrder) ([]unitHead, error) {
	// debug/dwarf takes the byte order from the first unit's version.
	if len(info) < 6 {
		return nil, useDWARF("no units")
	}
	switch x, y := info[4], info[5]; {
	case x == 0 && y != 0 && bo == binary.BigEndian:
	case y == 0 && x != 0 && bo == binary.LittleEndian:
	default:
		return nil, useDWARF("byte order of the units")
	}
	type unit struct {
		vers, addrSize int
		abbrevOff      uint64
		data           *lineBuf // the entries
	}
	var units []unit
	for b := (&lineBuf{buf: info, bo: bo}); b.len() > 0; {
		length := b.u32()
		if length == 0 || length >= 0xfffffff0 || uint64(length) > uint64(b.len()) {
			return nil, useDWARF("unit length %#x at %d", length, b.offset())
		}
		u := &lineBuf{buf: b.rest()[:length], base: b.offset(), bo: bo}
		b.bytes(uint64(length))
		vers := int(u.u16())
		if vers < 2 || vers > 4 {
			return nil, useDWARF("unit of version %d", vers)
		}
		off := uint64(u.u32())
		addrSize := int(u.u8())
		if u.err != nil {
			return nil, u.err
		}
		units = append(units, unit{vers: vers, addrSize: addrSize, abbrevOff: off, data: u})
	}
	heads := make([]unitHead, 0, len(units))
	for i, u := range units {
		b := u.data
		code := b.uleb()
		if b.err != nil || code == 0 {
			return nil, useDWARF("unit entry at %d", b.offset())
		}
		// The whole table is checked, as debug/dwarf.New checks every
		// unit's, but nothing of it is kept.
		a, err := findAbbrev(abbrev, u.abbrevOff, code)
		if err != nil {
			return nil, err
		}
		if a.tag != tagCompileUnit && a.tag != tagPartialUnit {
			return nil, useDWARF("unit entry of tag %#x", a.tag)
		}
		var h unitHead
		var stmtSeen, dirSeen bool
		for specs := (&lineBuf{buf: abbrev[a.attrs:]}); ; {
			attr, form := specs.uleb(), specs.uleb()
			if attr == 0 && form == 0 {
				break // findAbbrev read them: no error
			}
			v, s, isInt, isStr, err := readForm(b, form, u.vers, u.addrSize, str)
			if err != nil {
				return nil, err
			}
			// Entry.Val gives an attribute's first value.
			switch attr {
			case atSibling:
				return nil, useDWARF("unit entry with a sibling")
			case atStmtList:
				if !stmtSeen && isInt {
					h.stmtList, h.hasStmtList = v, true
				}
				stmtSeen = true
			case atCompDir:
				if !dirSeen && isStr {
					h.compDir = s
				}
				dirSeen = true
			}
		}
		if !a.children && slices.ContainsFunc(b.rest(), func(c byte) bool { return c != 0 }) {
			return nil, useDWARF("entries after a unit entry without children")
		}
		// debug/dwarf's Reader.AddressSize, as linePrograms asks it:
		// after SkipChildren, which moves to the next unit when the
		// unit's entry has children.
		h.addrSize = u.addrSize
		if a.children && i+1 < len(units) {
			h.addrSize = units[i+1].addrSize
		}
		heads = append(heads, h)
	}
	return heads, nil
}

// findAbbrev returns the abbreviation of code in the table at off in
// abbrev, the last declared, as debug/dwarf reads the table, and checks
// the whole table: a table debug/dwarf would refuse, or one with a form
// readForm does not read, is an errUseDWARF error.
func findAbbrev(abbrev []byte, off, code uint64) (unitAbbrev, error) {
	if off >= uint64(len(abbrev)) {
		return unitAbbrev{}, useDWARF("abbreviations at %d", off)
	}
	b := &lineBuf{buf: abbrev[off:], base: int(off)}
	var found unitAbbrev
	ok := false
	for {
		c := b.uleb()
		if b.err != nil {
			return unitAbbrev{}, b.err
		}
		if c == 0 {
			break
		}
		if c > math.MaxUint32 {
			return unitAbbrev{}, useDWARF("abbreviation code %d", c)
		}
		a := unitAbbrev{tag: b.uleb(), children: b.u8() != 0, attrs: b.offset()}
		for {
			attr, form := b.uleb(), b.uleb()
			if b.err != nil {
				return unitAbbrev{}, b.err
			}
			if attr == 0 && form == 0 {
				break
			}
			if !unitForm(form) {
				return unitAbbrev{}, useDWARF("attribute form %#x", form)
			}
		}
		if c == code {
			found, ok = a, true
		}
	}
	if !ok {
		return unitAbbrev{}, useDWARF("no abbreviation %d at %d", code, off)
	}
	return found, nil
}

// unitForm reports whether readForm reads the attribute form.
func unitForm(form uint64) bool {
	switch form {
	case formAddr, formBlock2, formBlock4, formData2, formData4, formData8, formString,
		formBlock, formBlock1, formData1, formFlag, formSdata, formStrp, formUdata,
		formRefAddr, formRef1, formRef2, formRef4, formRef8, formRefUdata,
		formSecOffset, formExprloc, formFlagPresent, formRefSig8:
		return true
	}
	return false
}

// readForm reads an attribute value of the form in a unit of version
// vers: an int64 (isInt) where debug/dwarf gives one, a string (isStr)
// where it gives one, else nothing but the bytes skipped.
func readForm(b *lineBuf, form uint64, vers, addrSize int, str []byte) (v int64, s string, isInt, isStr bool, err error) {
	size := uint64(0) // bytes skipped
	switch form {
	case formAddr:
		size = uint64(addrSize)
		if addrSize != 1 && addrSize != 2 && addrSize != 4 && addrSize != 8 {
			return 0, "", false, false, useDWARF("address size %d", addrSize)
		}
	case formRefAddr:
		size = 4
		if vers == 2 {
			size = uint64(addrSize)
			if addrSize != 1 && addrSize != 2 && addrSize != 4 && addrSize != 8 {
				return 0, "", false, false, useDWARF("address size %d", addrSize)
			}
		}
	case formBlock1:
		size = uint64(b.u8())
	case formBlock2:
		size = uint64(b.u16())
	case formBlock4:
		size = uint64(b.u32())
	case formBlock, formExprloc:
		size = b.uleb()
	case formData1:
		v, isInt = int64(b.u8()), true
	case formData2:
		v, isInt = int64(b.u16()), true
	case formData4, formSecOffset:
		v, isInt = int64(b.u32()), true
	case formData8:
		v, isInt = int64(b.u64()), true
	case formSdata:
		v, isInt = b.sleb(), true
	case formUdata:
		v, isInt = int64(b.uleb()), true
	case formFlag, formRef1:
		size = 1
	case formRef2:
		size = 2
	case formRef4:
		size = 4
	case formRef8, formRefSig8:
		size = 8
	case formRefUdata:
		b.uleb()
	case formFlagPresent:
	case formString:
		d := b.cstring()
		s, isStr = string(d), true
	case formStrp:
		off := uint64(b.u32())
		if off >= uint64(len(str)) {
			return 0, "", false, false, useDWARF("string offset %d out of range", off)
		}
		i := bytes.IndexByte(str[off:], 0)
		if i < 0 {
			return 0, "", false, false, useDWARF("unterminated string at %d", off)
		}
		s, isStr = string(str[off:off+uint64(i)]), true
	default:
		return 0, "", false, false, useDWARF("attribute form %#x", form)
	}
	b.bytes(size)
	if b.err != nil {
		return 0, "", false, false, b.err
	}
	return v, s, isInt, isStr, nil
}

// lineProgramsOfUnits adds the rows of the line programs of the units to
// c, as linePrograms does.
func (c *lineCollector) lineProgramsOfUnits(heads []unitHead, secs lineData) error {
	r := newLineProgReader(secs, c)
	for i := range heads {
		h := &heads[i]
		if !h.hasStmtList {
			continue
		}
		if h.stmtList < 0 || h.stmtList >= int64(len(secs.line)) {
			return useDWARF("line program offset %d out of range", h.stmtList)
		}
		if _, err := r.program(int(h.stmtList), &h.lineUnit); err != nil {
			return err
		}
	}
	return nil
}
