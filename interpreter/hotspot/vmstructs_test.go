package hotspot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/interpreter"
)

// layoutFixture reads the Layout dumped from a live JVM of jdk.
func layoutFixture(t testing.TB, jdk string) *Layout {
	t.Helper()
	snap, err := readSnapshot(filepath.Join("testdata", "vmstructs-"+jdk+".json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ReadLayout(snap, snap.sym)
	if err != nil {
		t.Fatalf("%s: %v", jdk, err)
	}
	return l
}

// TestReadLayoutFixtures reads the tables dumped from JDK 17, 21 and 25 and
// checks values that the JDKs' sources fix (field order of PcDesc and
// Symbol, ConstMethod's flags) and the differences between the versions.
func TestReadLayoutFixtures(t *testing.T) {
	type field struct {
		typ, name string
		off       uint64
	}
	for _, tc := range []struct {
		jdk       string
		version   int
		fields    []field
		absent    []field
		sizes     map[string]uint64
		supers    map[string]string
		ints      map[string]int64
		statics   []field
		noStatics []field
	}{
		{
			jdk: "jdk17", version: 17,
			fields: []field{
				// class PcDesc { int _pc_offset; int _scope_decode_offset; int _obj_decode_offset; int _flags; }
				{"PcDesc", "_pc_offset", 0}, {"PcDesc", "_scope_decode_offset", 4},
				{"PcDesc", "_obj_decode_offset", 8}, {"PcDesc", "_flags", 12},
				// Metadata has a vtable pointer, then Method's first field.
				{"Method", "_constMethod", 8},
				// Symbol: u4 _hash_and_refcount; u2 _length; u1 _body[].
				{"Symbol", "_length", 4}, {"Symbol", "_body", 6},
				{"ConstMethod", "_flags", 28}, {"ConstMethod", "_code_size", 32},
				{"CompiledMethod", "_method", 112}, {"CompiledMethod", "_scopes_data_begin", 120},
				{"nmethod", "_scopes_pcs_offset", 268}, {"nmethod", "_dependencies_offset", 272},
				{"nmethod", "_metadata_offset", 260}, {"nmethod", "_compile_id", 304},
				{"CodeBlob", "_code_begin", 32}, {"CodeBlob", "_frame_size", 28},
				{"ConstantPool", "_source_file_name_index", 54}, {"GrowableArrayBase", "_max", 4},
				{"HeapBlock::Header", "_length", 0}, {"HeapBlock::Header", "_used", 8},
			},
			absent: []field{{"ConstMethod", "_flags._flags", 0}, {"nmethod", "_immutable_data", 0}},
			sizes:  map[string]uint64{"PcDesc": 16, "ConstMethod": 48, "nmethod": 352, "CompiledMethod": 192, "CodeBlob": 104, "HeapBlock": 16},
			supers: map[string]string{"nmethod": "CompiledMethod", "CompiledMethod": "CodeBlob"},
			ints: map[string]int64{
				"ConstMethod::_has_linenumber_table": 1, "PcDesc::PCDESC_reexecute": 1,
				"PcDesc::PCDESC_is_method_handle_invoke": 2, "PcDesc::PCDESC_return_oop": 4,
			},
			statics: []field{{"CodeCache", "_heaps", 0}, {"JDK_Version", "_current", 0}},
		},
		{
			jdk: "jdk21", version: 21,
			fields: []field{
				{"PcDesc", "_pc_offset", 0}, {"PcDesc", "_scope_decode_offset", 4},
				{"Method", "_constMethod", 8}, {"Symbol", "_body", 6},
				{"ConstMethod", "_flags._flags", 28}, {"ConstMethod", "_code_size", 34},
				{"CompiledMethod", "_method", 112}, {"CompiledMethod", "_scopes_data_begin", 120},
				{"nmethod", "_scopes_pcs_offset", 276}, {"nmethod", "_metadata_offset", 268},
				{"CodeBlob", "_code_begin", 8}, {"CodeBlob", "_frame_size", 88},
			},
			absent:  []field{{"ConstMethod", "_flags", 0}, {"nmethod", "_immutable_data", 0}},
			sizes:   map[string]uint64{"PcDesc": 16, "ConstMethod": 56, "nmethod": 344, "CodeBlob": 96},
			supers:  map[string]string{"nmethod": "CompiledMethod", "CompiledMethod": "CodeBlob"},
			ints:    map[string]int64{"PcDesc::PCDESC_reexecute": 1},
			statics: []field{{"CodeCache", "_heaps", 0}, {"JDK_Version", "_current", 0}},
		},
		{
			jdk: "jdk25", version: 25,
			fields: []field{
				{"PcDesc", "_pc_offset", 0}, {"PcDesc", "_scope_decode_offset", 4},
				{"Method", "_constMethod", 8}, {"Symbol", "_body", 6},
				{"ConstMethod", "_flags._flags", 28}, {"ConstMethod", "_code_size", 34},
				{"nmethod", "_method", 80}, {"nmethod", "_immutable_data", 96},
				{"nmethod", "_scopes_pcs_offset", 196}, {"nmethod", "_scopes_data_offset", 200},
				{"CodeBlob", "_code_offset", 36}, {"CodeBlob", "_mutable_data", 16},
				{"CodeBlob", "_frame_size", 44}, {"CodeBlob", "_kind", 56},
				{"ConstantPool", "_source_file_name_index", 54}, {"GrowableArrayBase", "_capacity", 4},
				{"HeapBlock::Header", "_length", 0}, {"HeapBlock::Header", "_used", 4},
			},
			absent: []field{
				{"CompiledMethod", "_method", 0}, {"CodeBlob", "_code_begin", 0},
				{"nmethod", "_metadata_offset", 0}, {"ConstMethod", "_flags", 0},
			},
			sizes:     map[string]uint64{"PcDesc": 16, "ConstMethod": 56, "nmethod": 224, "CodeBlob": 64, "HeapBlock": 8},
			supers:    map[string]string{"nmethod": "CodeBlob"},
			ints:      map[string]int64{"PcDesc::PCDESC_reexecute": 1, "ConstMethodFlags::_misc_has_linenumber_table": 1, "CodeBlobKind::Nmethod": 1},
			statics:   []field{{"CodeCache", "_heaps", 0}, {"Abstract_VM_Version", "_vm_major_version", 0}},
			noStatics: []field{{"JDK_Version", "_current", 0}},
		},
	} {
		t.Run(tc.jdk, func(t *testing.T) {
			l := layoutFixture(t, tc.jdk)
			if v := l.Version(); v != tc.version {
				t.Errorf("Version() = %d, want %d", v, tc.version)
			}
			for _, f := range tc.fields {
				if off, ok := l.Field(f.typ, f.name); !ok || off != f.off {
					t.Errorf("Field(%s, %s) = %d, %v; want %d", f.typ, f.name, off, ok, f.off)
				}
			}
			for _, f := range tc.absent {
				if off, ok := l.Field(f.typ, f.name); ok {
					t.Errorf("Field(%s, %s) = %d, want absent", f.typ, f.name, off)
				}
			}
			for typ, want := range tc.sizes {
				if got, ok := l.Size(typ); !ok || got != want {
					t.Errorf("Size(%s) = %d, %v; want %d", typ, got, ok, want)
				}
			}
			for typ, want := range tc.supers {
				if got, ok := l.Super(typ); !ok || got != want {
					t.Errorf("Super(%s) = %q, %v; want %q", typ, got, ok, want)
				}
			}
			for name, want := range tc.ints {
				if got, ok := l.Int(name); !ok || got != want {
					t.Errorf("Int(%s) = %d, %v; want %d", name, got, ok, want)
				}
			}
			if v, ok := l.Int("InvocationEntryBci"); !ok || v != -1 {
				t.Errorf("Int(InvocationEntryBci) = %d, %v; want -1", v, ok)
			}
			for _, f := range tc.statics {
				if addr, ok := l.Static(f.typ, f.name); !ok || addr == 0 {
					t.Errorf("Static(%s, %s) = %#x, %v; want an address", f.typ, f.name, addr, ok)
				}
			}
			for _, f := range tc.noStatics {
				if addr, ok := l.Static(f.typ, f.name); ok {
					t.Errorf("Static(%s, %s) = %#x, want absent", f.typ, f.name, addr)
				}
			}
			// nmethod's _method is found from nmethod in every version.
			if _, ok := l.FieldOrSuper("nmethod", "_method"); !ok {
				t.Error("FieldOrSuper(nmethod, _method) not found")
			}
			fields, types, consts := l.Counts()
			if fields < 500 || types < 300 || consts < 400 {
				t.Errorf("Counts() = %d fields, %d types, %d constants: too few", fields, types, consts)
			}
		})
	}
}

// The layout of the tables in a synthetic image, as a 64-bit HotSpot
// lays them out.
const (
	imgBase      = 0x100000
	imgStructLen = 48
	imgTypeLen   = 40
	imgConstLen  = 16
)

// tableImage builds a process image holding VM tables, and its symbols.
type tableImage struct {
	b    []byte
	syms map[string]uint64
}

// ReadAt reads the image, whose last page is mapped to its end, as a
// process's would be.
func (m *tableImage) ReadAt(p []byte, addr uint64) error {
	size := (uint64(len(m.b)) + 4095) &^ 4095
	if addr < imgBase || addr-imgBase > size || uint64(len(p)) > size-(addr-imgBase) {
		return fmt.Errorf("%w: %#x", interpreter.ErrUnreadable, addr)
	}
	clear(p)
	if off := addr - imgBase; off < uint64(len(m.b)) {
		copy(p, m.b[off:])
	}
	return nil
}

func (m *tableImage) sym(name string) (uint64, bool) {
	a, ok := m.syms[name]
	return a, ok
}

// alloc appends n zero bytes (8-aligned) and returns their address.
func (m *tableImage) alloc(n int) uint64 {
	for len(m.b)%8 != 0 {
		m.b = append(m.b, 0)
	}
	addr := imgBase + uint64(len(m.b))
	m.b = append(m.b, make([]byte, n)...)
	return addr
}

func (m *tableImage) put64(addr, v uint64) { binary.LittleEndian.PutUint64(m.b[addr-imgBase:], v) }
func (m *tableImage) put32(addr uint64, v uint32) {
	binary.LittleEndian.PutUint32(m.b[addr-imgBase:], v)
}

func (m *tableImage) str(s string) uint64 {
	if s == "" {
		return 0
	}
	a := m.alloc(len(s) + 1)
	copy(m.b[a-imgBase:], s)
	return a
}

// variable defines the uint64 variable sym holding v.
func (m *tableImage) variable(sym string, v uint64) {
	a := m.alloc(8)
	m.put64(a, v)
	m.syms[sym] = a
}

type imgField struct {
	typ, field string
	static     bool
	value      uint64
}

type imgType struct {
	name, super string
	size        uint64
}

type imgConst struct {
	name  string
	value int64
}

// newTableImage lays out the four tables with the given entries.
func newTableImage(fields []imgField, types []imgType, ints, longs []imgConst) *tableImage {
	m := &tableImage{syms: map[string]uint64{}}
	structs := m.alloc(imgStructLen * (len(fields) + 1))
	for i, f := range fields {
		e := structs + uint64(i*imgStructLen)
		m.put64(e, m.str(f.typ))
		m.put64(e+8, m.str(f.field))
		if f.static {
			m.put32(e+24, 1)
			m.put64(e+40, f.value)
		} else {
			m.put64(e+32, f.value)
		}
	}
	typs := m.alloc(imgTypeLen * (len(types) + 1))
	for i, ty := range types {
		e := typs + uint64(i*imgTypeLen)
		m.put64(e, m.str(ty.name))
		m.put64(e+8, m.str(ty.super))
		m.put64(e+32, ty.size)
	}
	consts := func(cs []imgConst, width int) uint64 {
		t := m.alloc(imgConstLen * (len(cs) + 1))
		for i, c := range cs {
			e := t + uint64(i*imgConstLen)
			m.put64(e, m.str(c.name))
			if width == 4 {
				m.put32(e+8, uint32(c.value))
			} else {
				m.put64(e+8, uint64(c.value))
			}
		}
		return t
	}
	intTable, longTable := consts(ints, 4), consts(longs, 8)
	for _, v := range []struct {
		name string
		val  uint64
	}{
		{"gHotSpotVMStructs", structs}, {"gHotSpotVMStructEntryArrayStride", imgStructLen},
		{"gHotSpotVMStructEntryTypeNameOffset", 0}, {"gHotSpotVMStructEntryFieldNameOffset", 8},
		{"gHotSpotVMStructEntryTypeStringOffset", 16}, {"gHotSpotVMStructEntryIsStaticOffset", 24},
		{"gHotSpotVMStructEntryOffsetOffset", 32}, {"gHotSpotVMStructEntryAddressOffset", 40},
		{"gHotSpotVMTypes", typs}, {"gHotSpotVMTypeEntryArrayStride", imgTypeLen},
		{"gHotSpotVMTypeEntryTypeNameOffset", 0}, {"gHotSpotVMTypeEntrySuperclassNameOffset", 8},
		{"gHotSpotVMTypeEntryIsOopTypeOffset", 16}, {"gHotSpotVMTypeEntryIsIntegerTypeOffset", 20},
		{"gHotSpotVMTypeEntryIsUnsignedOffset", 24}, {"gHotSpotVMTypeEntrySizeOffset", 32},
		{"gHotSpotVMIntConstants", intTable}, {"gHotSpotVMIntConstantEntryArrayStride", imgConstLen},
		{"gHotSpotVMIntConstantEntryNameOffset", 0}, {"gHotSpotVMIntConstantEntryValueOffset", 8},
		{"gHotSpotVMLongConstants", longTable}, {"gHotSpotVMLongConstantEntryArrayStride", imgConstLen},
		{"gHotSpotVMLongConstantEntryNameOffset", 0}, {"gHotSpotVMLongConstantEntryValueOffset", 8},
	} {
		m.variable(v.name, v.val)
	}
	return m
}

// smallImage is a valid image with a few entries of each table.
func smallImage() *tableImage {
	m := newTableImage(
		[]imgField{
			{"CodeBlob", "_frame_size", false, 28},
			{"nmethod", "_compile_id", false, 304},
			{"CompiledMethod", "_method", false, 112},
			{"CodeCache", "_heaps", true, 0x7000},
		},
		[]imgType{{"CodeBlob", "", 104}, {"CompiledMethod", "CodeBlob", 192}, {"nmethod", "CompiledMethod", 352}, {"int", "", 4}},
		[]imgConst{{"InvocationEntryBci", -1}, {"ConstMethod::_has_linenumber_table", 1}},
		[]imgConst{{"markWord::hash_mask", 0x7fffffff}},
	)
	return m
}

func TestReadLayoutSynthetic(t *testing.T) {
	m := smallImage()
	l, err := ReadLayout(m, m.sym)
	if err != nil {
		t.Fatal(err)
	}
	if off, ok := l.Field("nmethod", "_compile_id"); !ok || off != 304 {
		t.Errorf("Field(nmethod, _compile_id) = %d, %v", off, ok)
	}
	if off, ok := l.FieldOrSuper("nmethod", "_method"); !ok || off != 112 {
		t.Errorf("FieldOrSuper(nmethod, _method) = %d, %v", off, ok)
	}
	if off, ok := l.FieldOrSuper("nmethod", "_frame_size"); !ok || off != 28 {
		t.Errorf("FieldOrSuper(nmethod, _frame_size) = %d, %v", off, ok)
	}
	if _, ok := l.Field("nmethod", "_method"); ok {
		t.Error("Field(nmethod, _method) found: it is CompiledMethod's")
	}
	if a, ok := l.Static("CodeCache", "_heaps"); !ok || a != 0x7000 {
		t.Errorf("Static(CodeCache, _heaps) = %#x, %v", a, ok)
	}
	if _, ok := l.Field("CodeCache", "_heaps"); ok {
		t.Error("a static field is listed as a field")
	}
	if v, ok := l.Int("InvocationEntryBci"); !ok || v != -1 {
		t.Errorf("Int(InvocationEntryBci) = %d, %v", v, ok)
	}
	if v, ok := l.Long("markWord::hash_mask"); !ok || v != 0x7fffffff {
		t.Errorf("Long(markWord::hash_mask) = %#x, %v", v, ok)
	}
	if s, ok := l.Size("nmethod"); !ok || s != 352 {
		t.Errorf("Size(nmethod) = %d, %v", s, ok)
	}
	if l.Version() != 0 {
		t.Errorf("Version() = %d for tables without a version", l.Version())
	}
}

func TestReadLayoutErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(m *tableImage)
		want   string
		is     error
	}{
		{"no symbol", func(m *tableImage) { delete(m.syms, "gHotSpotVMTypes") }, "no symbol gHotSpotVMTypes", nil},
		{"not initialised", func(m *tableImage) { m.put64(m.syms["gHotSpotVMStructEntryArrayStride"], 0) }, "not initialised", ErrNotReady},
		{"null table", func(m *tableImage) { m.put64(m.syms["gHotSpotVMIntConstants"], 0) }, "not initialised", ErrNotReady},
		{"stride too large", func(m *tableImage) { m.put64(m.syms["gHotSpotVMTypeEntryArrayStride"], 1<<20) }, "stride", nil},
		{"member outside entry", func(m *tableImage) { m.put64(m.syms["gHotSpotVMStructEntryAddressOffset"], 44) }, "outside the 48-byte entry", nil},
		{"unreadable table", func(m *tableImage) { m.put64(m.syms["gHotSpotVMStructs"], 0xdead0000) }, "entry 0", interpreter.ErrUnreadable},
		{"unreadable name", func(m *tableImage) { m.put64(m.b2a(m.syms["gHotSpotVMTypes"]), 0xdead0000) }, "name at 0xdead0000", interpreter.ErrUnreadable},
		{"unterminated name", func(m *tableImage) {
			a := m.alloc(maxNameBytes + 16)
			for i := range maxNameBytes + 16 {
				m.b[a-imgBase+uint64(i)] = 'x'
			}
			m.put64(m.b2a(m.syms["gHotSpotVMStructs"]), a)
		}, "longer than", nil},
		{"unterminated table", func(m *tableImage) {
			// Point the struct table at a run of entries that never ends.
			a := m.alloc(imgStructLen * (maxTableEntries + tableChunk))
			name := m.str("T")
			for i := range maxTableEntries + tableChunk {
				m.put64(a+uint64(i*imgStructLen), name)
			}
			m.put64(m.syms["gHotSpotVMStructs"], a)
		}, "no terminating entry", nil},
		{"empty tables", func(m *tableImage) {
			e := m.b2a(m.syms["gHotSpotVMStructs"])
			m.put64(e, 0)
		}, "0 fields", ErrNotReady},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := smallImage()
			tc.change(m)
			l, err := ReadLayout(m, m.sym)
			if err == nil {
				t.Fatalf("ReadLayout = %v, want an error", l)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
}

// b2a returns the pointer stored at the variable addr (a table's base).
func (m *tableImage) b2a(addr uint64) uint64 {
	return binary.LittleEndian.Uint64(m.b[addr-imgBase:])
}

// TestReadLayoutReadsOnce: tables are read in chunks and each name once.
func TestReadLayoutReadsOnce(t *testing.T) {
	m := smallImage()
	counting := &countingMemory{mem: m}
	if _, err := ReadLayout(counting, m.sym); err != nil {
		t.Fatal(err)
	}
	// 24 variables, 4 tables in one chunk each, a handful of names,
	// the version probes: far fewer reads than entries times names.
	if counting.reads > 60 {
		t.Errorf("%d reads for a small image", counting.reads)
	}
}

type countingMemory struct {
	mem   interpreter.Memory
	reads int
}

func (c *countingMemory) ReadAt(p []byte, addr uint64) error {
	c.reads++
	return c.mem.ReadAt(p, addr)
}
