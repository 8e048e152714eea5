package python

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// dwarfTypeNames are the typedefs looked up, each with the tag of the struct
// it names (empty for an anonymous struct), tried when the typedef is not
// found.
var dwarfTypeNames = map[string]string{
	"_PyRuntimeState":        "pyruntimestate",
	"PyInterpreterState":     "_is",
	"PyThreadState":          "_ts",
	"_PyCFrame":              "_PyCFrame",
	"PyFrameObject":          "_frame",
	"_PyInterpreterFrame":    "_PyInterpreterFrame",
	"PyCodeObject":           "PyCodeObject",
	"PyASCIIObject":          "",
	"PyCompactUnicodeObject": "",
	"PyBytesObject":          "",
}

// fieldLoc is where DWARF holds a field of Offsets: a member path in a
// type, or the type's size when path is empty. absent says the version
// must lack it (the type or the member), the field being NoField.
type fieldLoc struct {
	typ, path string
	absent    bool
}

// String names the location as offsetof or sizeof would.
func (l fieldLoc) String() string {
	if l.path == "" {
		return "sizeof(" + l.typ + ")"
	}
	return "offsetof(" + l.typ + ", " + l.path + ")"
}

// fieldString formats a field of Offsets.
func fieldString(v uint32) string {
	if v == NoField {
		return "NoField"
	}
	return fmt.Sprint(v)
}

// offsetsLoc returns where the Offsets field named field lies in 3.minor.
func offsetsLoc(field string, minor int) fieldLoc {
	at := func(typ, path string) fieldLoc { return fieldLoc{typ: typ, path: path} }
	none := func(typ, path string) fieldLoc { return fieldLoc{typ: typ, path: path, absent: true} }
	frame := "_PyInterpreterFrame"
	if minor <= 10 {
		frame = "PyFrameObject"
	}
	switch field {
	case "RuntimeInterpretersMain":
		return at("_PyRuntimeState", "interpreters.main")
	case "InterpThreadsHead":
		if minor <= 10 {
			return at("PyInterpreterState", "tstate_head")
		}
		return at("PyInterpreterState", "threads.head")
	case "TStateNext":
		return at("PyThreadState", "next")
	case "TStateThreadID":
		return at("PyThreadState", "thread_id")
	case "TStateFrame":
		switch {
		case minor <= 10:
			return at("PyThreadState", "frame")
		case minor <= 12:
			return at("PyThreadState", "cframe")
		}
		return at("PyThreadState", "current_frame")
	case "CFrameCurrentFrame":
		if minor == 11 || minor == 12 {
			return at("_PyCFrame", "current_frame")
		}
		return none("_PyCFrame", "current_frame")
	case "FrameBack":
		if minor <= 10 {
			return at(frame, "f_back")
		}
		return at(frame, "previous")
	case "FrameCode":
		if minor >= 13 {
			return at(frame, "f_executable")
		}
		return at(frame, "f_code")
	case "FrameInstr":
		switch {
		case minor <= 10:
			return at(frame, "f_lasti")
		case minor <= 12:
			return at(frame, "prev_instr")
		}
		return at(frame, "instr_ptr")
	case "FrameIsEntry":
		if minor == 11 {
			return at(frame, "is_entry")
		}
		return none("_PyInterpreterFrame", "is_entry")
	case "FrameOwner":
		if minor >= 11 {
			return at(frame, "owner")
		}
		return none("_PyInterpreterFrame", "owner")
	case "CodeFirstLineno":
		return at("PyCodeObject", "co_firstlineno")
	case "CodeFilename":
		return at("PyCodeObject", "co_filename")
	case "CodeName":
		return at("PyCodeObject", "co_name")
	case "CodeQualname":
		if minor >= 11 {
			return at("PyCodeObject", "co_qualname")
		}
		return none("PyCodeObject", "co_qualname")
	case "CodeLineTable":
		if minor <= 9 {
			return at("PyCodeObject", "co_lnotab")
		}
		return at("PyCodeObject", "co_linetable")
	case "CodeCodeAdaptive":
		if minor >= 11 {
			return at("PyCodeObject", "co_code_adaptive")
		}
		return none("PyCodeObject", "co_code_adaptive")
	case "UnicodeLength":
		return at("PyASCIIObject", "length")
	case "UnicodeState":
		return at("PyASCIIObject", "state")
	case "UnicodeASCIIData":
		return at("PyASCIIObject", "")
	case "UnicodeCompactData":
		return at("PyCompactUnicodeObject", "")
	case "BytesSize":
		return at("PyBytesObject", "ob_base.ob_size")
	case "BytesData":
		return at("PyBytesObject", "ob_sval")
	}
	panic("no DWARF location for Offsets." + field)
}

// TestOffsetsDWARF checks every field of the table, the bits of
// PyASCIIObject.state that python.go decodes and FrameOwnedByCStack
// against the DWARF of each version's pyenv build.
func TestOffsetsDWARF(t *testing.T) {
	for _, minor := range slices.Sorted(maps.Keys(offsetsByMinor)) {
		t.Run(fmt.Sprintf("3.%d", minor), func(t *testing.T) {
			t.Parallel()
			off, _ := OffsetsFor(minor)
			// The pyenv build, with full DWARF, the table is
			// checked against.
			path := testenv.PyenvLibpython(minor)
			if path == "" {
				t.Skipf("pyenv libpython3.%d not installed", minor)
			}
			types, err := loadDWARFTypes(path)
			if err != nil {
				t.Fatal(err)
			}
			v := reflect.ValueOf(off)
			for i := 0; i < v.NumField(); i++ {
				name := v.Type().Field(i).Name
				got := uint32(v.Field(i).Uint())
				loc := offsetsLoc(name, minor)
				want, err := types.offset(loc.typ, loc.path)
				switch {
				case loc.absent && err == nil:
					t.Errorf("%s: DWARF has %s at %d, expected it absent", name, loc, want)
				case loc.absent && got != NoField:
					t.Errorf("%s = %d, want NoField (%v)", name, got, err)
				case !loc.absent && err != nil:
					t.Errorf("%s: %v", name, err)
				case !loc.absent && int64(got) != want:
					t.Errorf("%s = %s, DWARF has %s = %d", name, fieldString(got), loc, want)
				}
			}
			checkStateBits(t, types)
			checkFrameOwner(t, types, minor)
		})
	}
}

// checkStateBits checks that unicodeKind, unicodeCompact and unicodeASCII
// decode the bit-fields of PyASCIIObject.state where DWARF puts them.
func checkStateBits(t *testing.T, types dwarfTypes) {
	t.Helper()
	state, err := types.member("PyASCIIObject", "state")
	if err != nil {
		t.Fatal(err)
	}
	for _, bit := range []struct {
		name   string
		width  int64
		decode func(uint32) uint32
	}{
		{"kind", 3, unicodeKind},
		{"compact", 1, func(s uint32) uint32 { return b2u(unicodeCompact(s)) }},
		{"ascii", 1, func(s uint32) uint32 { return b2u(unicodeASCII(s)) }},
	} {
		name, decode := bit.name, bit.decode
		f, err := fieldOf(state.Type, name)
		if err != nil {
			t.Fatalf("PyASCIIObject.state: %v", err)
		}
		if f.BitSize != bit.width || f.BitOffset != 0 {
			t.Fatalf("PyASCIIObject.state.%s: %d bits, DW_AT_bit_offset %d; want %d bits at a DW_AT_data_bit_offset",
				name, f.BitSize, f.BitOffset, bit.width)
		}
		pos, mask := f.DataBitOffset, uint32(1)<<f.BitSize-1
		for val := uint32(0); val <= mask; val++ {
			// The field alone, then the field with every other bit set.
			for _, s := range []uint32{val << pos, val<<pos | ^(mask << pos)} {
				if got := decode(s); got != val {
					t.Errorf("state %#08x: %s decoded as %d, DWARF puts %d at bit %d", s, name, got, val, pos)
				}
			}
		}
	}
}

// checkFrameOwner checks FrameOwnedByCStack against enum _frameowner.
func checkFrameOwner(t *testing.T, types dwarfTypes, minor int) {
	t.Helper()
	if minor < 11 {
		return
	}
	enum, ok := types["enum _frameowner"].(*dwarf.EnumType)
	if !ok {
		t.Fatal("DWARF has no enum _frameowner")
	}
	for _, v := range enum.Val {
		if v.Name == "FRAME_OWNED_BY_CSTACK" {
			if minor == 11 {
				t.Errorf("3.11 has FRAME_OWNED_BY_CSTACK = %d, expected only from 3.12", v.Val)
			} else if v.Val != FrameOwnedByCStack {
				t.Errorf("3.%d: FRAME_OWNED_BY_CSTACK = %d, FrameOwnedByCStack = %d", minor, v.Val, FrameOwnedByCStack)
			}
			return
		}
	}
	if minor >= 12 {
		t.Errorf("3.%d: enum _frameowner lacks FRAME_OWNED_BY_CSTACK", minor)
	}
}

// TestOffsetsForUnsupported checks that versions outside 3.8-3.13 have
// no offsets.
func TestOffsetsForUnsupported(t *testing.T) {
	for _, minor := range []int{-1, 0, 6, 7, 14, 15} {
		if _, ok := OffsetsFor(minor); ok {
			t.Errorf("OffsetsFor(%d) = true", minor)
		}
	}
}

// dwarfTypes are the complete definitions of the types of dwarfTypeNames,
// under their typedef names and as "struct tag", and of enum _frameowner.
type dwarfTypes map[string]dwarf.Type

// loadDWARFTypes reads the types of dwarfTypeNames from the DWARF of an
// ELF file, skipping declarations of incomplete structs.
func loadDWARFTypes(path string) (dwarfTypes, error) {
	ef, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer ef.Close()
	d, err := ef.DWARF()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	wanted := map[string]bool{"enum _frameowner": true}
	for name, tag := range dwarfTypeNames {
		wanted[name] = true
		if tag != "" {
			wanted["struct "+tag] = true
		}
	}
	types := dwarfTypes{}
	r := d.Reader()
	for len(types) < len(wanted) {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if e == nil {
			break
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		switch e.Tag {
		case dwarf.TagSubprogram:
			r.SkipChildren()
			continue
		case dwarf.TagStructType:
			name = "struct " + name
		case dwarf.TagEnumerationType:
			name = "enum " + name
		case dwarf.TagTypedef:
		default:
			continue
		}
		if !wanted[name] || types[name] != nil {
			continue
		}
		typ, err := d.Type(e.Offset)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		if s, ok := unqualified(typ).(*dwarf.StructType); ok && s.Incomplete {
			continue
		}
		types[name] = typ
	}
	return types, nil
}

// typeOf returns the type named name, found under its typedef name or
// else its struct tag.
func (types dwarfTypes) typeOf(name string) (dwarf.Type, error) {
	t := types[name]
	if t == nil && dwarfTypeNames[name] != "" {
		t = types["struct "+dwarfTypeNames[name]]
	}
	if t == nil {
		return nil, fmt.Errorf("DWARF has no type %s", name)
	}
	return t, nil
}

// member resolves a dotted member path ("threads.head") in the type named
// typ.
func (types dwarfTypes) member(typ, path string) (dwarf.StructField, error) {
	t, err := types.typeOf(typ)
	if err != nil {
		return dwarf.StructField{}, err
	}
	at := dwarf.StructField{Type: t}
	for _, name := range strings.Split(path, ".") {
		f, err := fieldOf(at.Type, name)
		if err != nil {
			return dwarf.StructField{}, fmt.Errorf("%s.%s: %w", typ, path, err)
		}
		f.ByteOffset += at.ByteOffset
		at = f
	}
	return at, nil
}

// offset returns the byte offset of a member path in the type named typ,
// or the type's size for an empty path.
func (types dwarfTypes) offset(typ, path string) (int64, error) {
	if path == "" {
		t, err := types.typeOf(typ)
		if err != nil {
			return 0, err
		}
		return t.Size(), nil
	}
	f, err := types.member(typ, path)
	return f.ByteOffset, err
}

// fieldOf returns the member of a struct type named name.
func fieldOf(t dwarf.Type, name string) (dwarf.StructField, error) {
	s, ok := unqualified(t).(*dwarf.StructType)
	if !ok {
		return dwarf.StructField{}, fmt.Errorf("%s: %s is not a struct", name, t)
	}
	for _, f := range s.Field {
		if f.Name == name {
			return *f, nil
		}
	}
	return dwarf.StructField{}, fmt.Errorf("no member %q", name)
}

// unqualified strips typedefs and const/volatile qualifiers.
func unqualified(t dwarf.Type) dwarf.Type {
	for {
		switch u := t.(type) {
		case *dwarf.TypedefType:
			t = u.Type
		case *dwarf.QualType:
			t = u.Type
		default:
			return t
		}
	}
}
