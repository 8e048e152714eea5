package hotspot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/stackline-dev/stackline/interpreter"
)

// Bounds on what ReadLayout reads from a process. JDK 17 to 25 describe
// about 2,000 fields, 1,000 types and 1,000 constants, with names under
// 100 bytes; the bounds leave room for much larger VMs and stop a corrupt
// table (or one that is not terminated) early.
const (
	maxTableEntries = 1 << 15 // entries per table
	maxNameBytes    = 512     // one name, including its terminating NUL
	maxLayoutBytes  = 8 << 20 // all tables and names together
	maxEntryStride  = 256     // bytes per table entry
	tableChunk      = 64      // entries read at once
)

// ErrNotReady reports that the VM's tables are not filled in yet: libjvm
// is mapped but its static initialisers have not run. Retry later.
var ErrNotReady = errors.New("hotspot: VM tables not initialised yet")

// Layout is a HotSpot VM's description of itself, as libjvm exports it for
// the serviceability agent: the offsets of the fields of its C++ classes
// (gHotSpotVMStructs), the sizes of its types (gHotSpotVMTypes) and its
// integer constants (gHotSpotVMIntConstants, gHotSpotVMLongConstants).
//
// A Layout is immutable after ReadLayout and safe for concurrent use.
type Layout struct {
	fields  map[fieldKey]uint64 // non-static fields: offset in the object
	statics map[fieldKey]uint64 // static fields: address in the process
	types   map[string]typeEntry
	ints    map[string]int64
	longs   map[string]int64
	version int
}

type fieldKey struct{ typ, field string }

type typeEntry struct {
	super string
	size  uint64
}

// Field returns the offset of the non-static field typ::field in an
// object of type typ ("nmethod", "_compile_id"). Fields are listed under
// the class that declares them: nmethod's _method is "CompiledMethod"'s in
// JDK 17 and 21 and "nmethod"'s in 25; FieldOrSuper follows superclasses.
func (l *Layout) Field(typ, field string) (offset uint64, ok bool) {
	offset, ok = l.fields[fieldKey{typ, field}]
	return offset, ok
}

// FieldOrSuper is Field, looking in typ and then in its superclasses, so
// that a field a JDK moved up or down the class hierarchy is found either
// way.
func (l *Layout) FieldOrSuper(typ, field string) (offset uint64, ok bool) {
	for i := 0; i < 32 && typ != ""; i++ {
		if off, ok := l.fields[fieldKey{typ, field}]; ok {
			return off, true
		}
		typ = l.types[typ].super
	}
	return 0, false
}

// Static returns the address, in the process, of the static field
// typ::field ("CodeCache", "_heaps").
func (l *Layout) Static(typ, field string) (addr uint64, ok bool) {
	addr, ok = l.statics[fieldKey{typ, field}]
	return addr, ok
}

// Size returns sizeof(typ) ("ConstMethod", "PcDesc").
func (l *Layout) Size(typ string) (uint64, bool) {
	t, ok := l.types[typ]
	return t.size, ok
}

// Super returns the superclass of typ ("CodeBlob" for "nmethod" in JDK
// 25), "" for a type without one.
func (l *Layout) Super(typ string) (string, bool) {
	t, ok := l.types[typ]
	return t.super, ok
}

// Int returns the integer constant name ("Method::_dont_inline",
// "InvocationEntryBci").
func (l *Layout) Int(name string) (int64, bool) {
	v, ok := l.ints[name]
	return v, ok
}

// Long returns the long constant name ("markWord::hash_mask").
func (l *Layout) Long(name string) (int64, bool) {
	v, ok := l.longs[name]
	return v, ok
}

// Version returns the JDK feature version (17, 21, 25) as the VM states it:
// Abstract_VM_Version::_vm_major_version (a static in JDK 17 to 25), else
// JDK_Version::_current's _major (JDK 17 and 21; JDK 25 has no
// JDK_Version), or 0 when it states neither. Code that depends on the
// layout should test for the fields it needs rather than for versions:
// those are what changes (e.g. JDK 25 has no "CompiledMethod" type and an
// "nmethod::_immutable_data" field).
func (l *Layout) Version() int { return l.version }

// Counts returns how many fields (static and not), types and constants
// (int and long) l holds.
func (l *Layout) Counts() (fields, types, constants int) {
	return len(l.fields) + len(l.statics), len(l.types), len(l.ints) + len(l.longs)
}

// The symbols libjvm exports to describe its tables: the address of each
// table, then the offsets of an entry's members and the entries' stride,
// each a uint64 variable.
var (
	structSymbols = tableSymbols{
		table:  "gHotSpotVMStructs",
		stride: "gHotSpotVMStructEntryArrayStride",
		members: []string{
			"gHotSpotVMStructEntryTypeNameOffset",
			"gHotSpotVMStructEntryFieldNameOffset",
			"gHotSpotVMStructEntryIsStaticOffset",
			"gHotSpotVMStructEntryOffsetOffset",
			"gHotSpotVMStructEntryAddressOffset",
		},
	}
	typeSymbols = tableSymbols{
		table:  "gHotSpotVMTypes",
		stride: "gHotSpotVMTypeEntryArrayStride",
		members: []string{
			"gHotSpotVMTypeEntryTypeNameOffset",
			"gHotSpotVMTypeEntrySuperclassNameOffset",
			"gHotSpotVMTypeEntrySizeOffset",
		},
	}
	intSymbols = tableSymbols{
		table:   "gHotSpotVMIntConstants",
		stride:  "gHotSpotVMIntConstantEntryArrayStride",
		members: []string{"gHotSpotVMIntConstantEntryNameOffset", "gHotSpotVMIntConstantEntryValueOffset"},
	}
	longSymbols = tableSymbols{
		table:   "gHotSpotVMLongConstants",
		stride:  "gHotSpotVMLongConstantEntryArrayStride",
		members: []string{"gHotSpotVMLongConstantEntryNameOffset", "gHotSpotVMLongConstantEntryValueOffset"},
	}
)

// Member indices into tableSymbols.members.
const (
	structTypeName, structFieldName, structIsStatic, structOffset, structAddress = 0, 1, 2, 3, 4
	typeTypeName, typeSuperName, typeSize                                        = 0, 1, 2
	constName, constValue                                                        = 0, 1
)

type tableSymbols struct {
	table, stride string
	members       []string
}

// Symbols returns the names of the libjvm symbols ReadLayout looks up.
func Symbols() []string {
	var out []string
	for _, s := range []tableSymbols{structSymbols, typeSymbols, intSymbols, longSymbols} {
		out = append(out, s.table, s.stride)
		out = append(out, s.members...)
	}
	return out
}

// ReadLayout reads the VM's tables from a process's memory. sym returns
// the address, in that process, of one of libjvm's exported symbols (see
// Symbols): the loaded libjvm's base plus the symbol's value.
//
// It returns ErrNotReady (wrapped) while the tables are not initialised,
// and an error naming the table for a table that is missing, unreadable,
// unterminated or malformed; it reads at most maxLayoutBytes.
func ReadLayout(mem interpreter.Memory, sym func(name string) (addr uint64, ok bool)) (*Layout, error) {
	r := &layoutReader{mem: mem, sym: sym, names: map[uint64]string{}}
	l := &Layout{
		fields:  map[fieldKey]uint64{},
		statics: map[fieldKey]uint64{},
		types:   map[string]typeEntry{},
		ints:    map[string]int64{},
		longs:   map[string]int64{},
	}
	err := r.table(structSymbols, func(e []byte, m []uint64) error {
		typ, err := r.name(e, m[structTypeName])
		if err != nil || typ == "" {
			return err
		}
		field, err := r.name(e, m[structFieldName])
		if err != nil {
			return err
		}
		k := fieldKey{typ, field}
		if binary.LittleEndian.Uint32(e[m[structIsStatic]:]) != 0 {
			l.statics[k] = binary.LittleEndian.Uint64(e[m[structAddress]:])
		} else {
			l.fields[k] = binary.LittleEndian.Uint64(e[m[structOffset]:])
		}
		return nil
	}, 8, 8, 4, 8, 8)
	if err != nil {
		return nil, err
	}
	err = r.table(typeSymbols, func(e []byte, m []uint64) error {
		typ, err := r.name(e, m[typeTypeName])
		if err != nil || typ == "" {
			return err
		}
		super, err := r.name(e, m[typeSuperName])
		if err != nil {
			return err
		}
		l.types[typ] = typeEntry{super: super, size: binary.LittleEndian.Uint64(e[m[typeSize]:])}
		return nil
	}, 8, 8, 8)
	if err != nil {
		return nil, err
	}
	for _, c := range []struct {
		syms  tableSymbols
		into  map[string]int64
		width uint64
	}{{intSymbols, l.ints, 4}, {longSymbols, l.longs, 8}} {
		err = r.table(c.syms, func(e []byte, m []uint64) error {
			name, err := r.name(e, m[constName])
			if err != nil || name == "" {
				return err
			}
			if c.width == 4 {
				c.into[name] = int64(int32(binary.LittleEndian.Uint32(e[m[constValue]:])))
			} else {
				c.into[name] = int64(binary.LittleEndian.Uint64(e[m[constValue]:]))
			}
			return nil
		}, 8, c.width)
		if err != nil {
			return nil, err
		}
	}
	if len(l.fields) == 0 || len(l.types) == 0 {
		// The tables are filled by libjvm's static initialisers.
		return nil, fmt.Errorf("%w: the tables hold %d fields and %d types", ErrNotReady, len(l.fields), len(l.types))
	}
	l.version = r.version(l)
	return l, nil
}

// layoutReader reads the tables, within maxLayoutBytes.
type layoutReader struct {
	mem   interpreter.Memory
	sym   func(string) (uint64, bool)
	read  int
	names map[uint64]string // strings by address: most names recur
}

func (r *layoutReader) readAt(p []byte, addr uint64) error {
	if r.read += len(p); r.read > maxLayoutBytes {
		return fmt.Errorf("hotspot: VM tables larger than %d bytes", maxLayoutBytes)
	}
	return r.mem.ReadAt(p, addr)
}

// u64 reads the uint64 variable named sym.
func (r *layoutReader) u64(sym string) (uint64, error) {
	addr, ok := r.sym(sym)
	if !ok {
		return 0, fmt.Errorf("hotspot: libjvm has no symbol %s", sym)
	}
	var b [8]byte
	if err := r.readAt(b[:], addr); err != nil {
		return 0, fmt.Errorf("hotspot: reading %s: %w", sym, err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// table reads the table s describes and calls entry for each entry before
// the terminating one (whose first member, a name, is null); entry
// returns "" names for that. widths are the members' sizes, checked to
// lie inside the stride.
func (r *layoutReader) table(s tableSymbols, entry func(e []byte, members []uint64) error, widths ...uint64) error {
	base, err := r.u64(s.table)
	if err != nil {
		return err
	}
	stride, err := r.u64(s.stride)
	if err != nil {
		return err
	}
	if base == 0 || stride == 0 {
		return fmt.Errorf("%w: %s at %#x, stride %d", ErrNotReady, s.table, base, stride)
	}
	if stride > maxEntryStride {
		return fmt.Errorf("hotspot: %s: entry stride %d over %d", s.table, stride, maxEntryStride)
	}
	members := make([]uint64, len(s.members))
	for i, name := range s.members {
		if members[i], err = r.u64(name); err != nil {
			return err
		}
		if members[i] > stride || widths[i] > stride-members[i] {
			return fmt.Errorf("hotspot: %s: member %s at %d, %d bytes, outside the %d-byte entry", s.table, name, members[i], widths[i], stride)
		}
	}
	nameAt := members[0]
	buf := make([]byte, stride*tableChunk)
	for i := uint64(0); i < maxTableEntries; i += tableChunk {
		addr := base + i*stride
		if addr < base {
			return fmt.Errorf("hotspot: %s at %#x: wraps around", s.table, base)
		}
		// Read a chunk, or less where the table's mapping may end.
		if err := r.readAt(buf, addr); err != nil {
			if err := r.readAt(buf[:stride], addr); err != nil {
				return fmt.Errorf("hotspot: %s entry %d: %w", s.table, i, err)
			}
			for j := uint64(1); j < tableChunk; j++ {
				if binary.LittleEndian.Uint64(buf[(j-1)*stride+nameAt:]) == 0 {
					break
				}
				if err := r.readAt(buf[j*stride:(j+1)*stride], addr+j*stride); err != nil {
					return fmt.Errorf("hotspot: %s entry %d: %w", s.table, i+j, err)
				}
			}
		}
		for j := uint64(0); j < tableChunk; j++ {
			e := buf[j*stride : (j+1)*stride]
			if binary.LittleEndian.Uint64(e[nameAt:]) == 0 {
				return nil
			}
			if err := entry(e, members); err != nil {
				return fmt.Errorf("hotspot: %s entry %d: %w", s.table, i+j, err)
			}
		}
	}
	return fmt.Errorf("hotspot: %s: no terminating entry in %d entries", s.table, maxTableEntries)
}

// name reads the NUL-terminated string the pointer at e[off:] points to;
// "" for a null pointer.
func (r *layoutReader) name(e []byte, off uint64) (string, error) {
	addr := binary.LittleEndian.Uint64(e[off:])
	if addr == 0 {
		return "", nil
	}
	if s, ok := r.names[addr]; ok {
		return s, nil
	}
	var buf [maxNameBytes]byte
	n := 0
	for n < maxNameBytes {
		// Read up to the end of the page first: the next one may not
		// be mapped.
		chunk := min(64, int(4096-(addr+uint64(n))%4096), maxNameBytes-n)
		if err := r.readAt(buf[n:n+chunk], addr+uint64(n)); err != nil {
			return "", fmt.Errorf("name at %#x: %w", addr, err)
		}
		if i := bytes.IndexByte(buf[n:n+chunk], 0); i >= 0 {
			s := string(buf[:n+i])
			r.names[addr] = s
			return s, nil
		}
		n += chunk
	}
	return "", fmt.Errorf("name at %#x: longer than %d bytes", addr, maxNameBytes-1)
}

// version reads the JDK feature version from the VM's statics; 0 when it
// states none that can be read.
func (r *layoutReader) version(l *Layout) int {
	if addr, ok := l.Static("Abstract_VM_Version", "_vm_major_version"); ok {
		var b [4]byte
		if r.readAt(b[:], addr) == nil {
			if v := int32(binary.LittleEndian.Uint32(b[:])); v > 0 && v < 1000 {
				return int(v)
			}
		}
	}
	if addr, ok := l.Static("JDK_Version", "_current"); ok {
		if off, ok := l.Field("JDK_Version", "_major"); ok && off < 64 {
			var b [1]byte
			if r.readAt(b[:], addr+off) == nil && b[0] > 0 {
				return int(b[0])
			}
		}
	}
	return 0
}
