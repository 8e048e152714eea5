package ebpf

import (
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// goTypes are the Go declarations of the structs user space shares with the
// eBPF programs, by C name. A shared struct missing here fails
// TestStructLayout: add it (and its -type to gen.go when no map carries it).
var goTypes = map[string]reflect.Type{
	"trace":           reflect.TypeFor[StacklineTrace](),
	"record_header":   reflect.TypeFor[StacklineRecordHeader](),
	"frame":           reflect.TypeFor[StacklineFrame](),
	"process_event":   reflect.TypeFor[StacklineProcessEvent](),
	"exec_mapping":    reflect.TypeFor[StacklineExecMapping](),
	"process_info":    reflect.TypeFor[StacklineProcessInfo](),
	"mapping_key":     reflect.TypeFor[StacklineMappingKey](),
	"file_key":        reflect.TypeFor[StacklineFileKey](),
	"file_table":      reflect.TypeFor[StacklineFileTable](),
	"interp_proc":     reflect.TypeFor[StacklineInterpProc](),
	"py_offsets":      reflect.TypeFor[StacklinePyOffsets](),
	"py_code_key":     reflect.TypeFor[StacklinePyCodeKey](),
	"unwind_state":    reflect.TypeFor[StacklineUnwindState](),
	"reader_state":    reflect.TypeFor[StacklineReaderState](),
	"rows_wanted_key": reflect.TypeFor[StacklineRowsWantedKey](),

	"hotspot_config":   reflect.TypeFor[StacklineHotspotConfig](),
	"hotspot_seen_key": reflect.TypeFor[StacklineHotspotSeenKey](),
	"v8_config":        reflect.TypeFor[StacklineV8Config](),
	"v8_seen_key":      reflect.TypeFor[StacklineV8SeenKey](),
}

// sharedTypes returns the types of the committed object's BTF that user
// space shares: map keys and values, and the members of struct
// shared_types.
func sharedTypes(t *testing.T) (structs []*btf.Struct, enums []*btf.Enum) {
	t.Helper()
	spec, err := LoadStackline()
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[btf.Type]bool)
	add := func(typ btf.Type) {
		switch u := btf.UnderlyingType(typ).(type) {
		case *btf.Struct:
			if !seen[u] && u.Name != "" {
				seen[u] = true
				structs = append(structs, u)
			}
		case *btf.Enum:
			if !seen[u] && u.Name != "" {
				seen[u] = true
				enums = append(enums, u)
			}
		}
	}
	for name, m := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // .rodata: the variables, checked below
		}
		if m.Key != nil {
			add(m.Key)
		}
		if m.Value != nil {
			add(m.Value)
		}
	}
	var anchor *btf.Struct
	if err := spec.Types.TypeByName("shared_types", &anchor); err != nil {
		t.Fatalf("struct shared_types: %v", err)
	}
	for _, m := range anchor.Members {
		add(m.Type)
	}
	if len(structs) == 0 || len(enums) == 0 {
		t.Fatalf("found %d shared structs and %d enums in the object's BTF", len(structs), len(enums))
	}
	return structs, enums
}

// TestStructLayout compares the size and every field's offset and size of
// the generated Go types with the structs of the committed object's BTF, so
// a Go type edited by hand, or an object rebuilt without regenerating the
// Go (or the other way round), fails.
func TestStructLayout(t *testing.T) {
	structs, _ := sharedTypes(t)
	for _, s := range structs {
		gt, ok := goTypes[s.Name]
		if !ok {
			t.Errorf("struct %s is shared with user space but has no Go type in goTypes", s.Name)
			continue
		}
		compareLayout(t, s.Name, s, gt)
	}
}

// compareLayout reports where Go type gt differs in layout from BTF type bt.
func compareLayout(t *testing.T, path string, bt btf.Type, gt reflect.Type) {
	t.Helper()
	size, err := btf.Sizeof(bt)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if uintptr(size) != gt.Size() {
		t.Errorf("%s: %d bytes in C, %d in Go (%s)", path, size, gt.Size(), gt)
		return
	}
	switch u := btf.UnderlyingType(bt).(type) {
	case *btf.Struct:
		if gt.Kind() != reflect.Struct {
			t.Errorf("%s: a struct in C, %s in Go", path, gt)
			return
		}
		var fields []reflect.StructField
		for i := range gt.NumField() {
			if f := gt.Field(i); f.Name != "_" {
				fields = append(fields, f)
			}
		}
		if len(fields) != len(u.Members) {
			t.Errorf("%s: %d fields in C, %d in Go", path, len(u.Members), len(fields))
			return
		}
		for i, m := range u.Members {
			f := fields[i]
			if !sameName(m.Name, f.Name) {
				t.Errorf("%s: field %d is %s in C, %s in Go", path, i, m.Name, f.Name)
				continue
			}
			if m.BitfieldSize != 0 {
				t.Errorf("%s.%s: bitfields are not shared with Go", path, m.Name)
				continue
			}
			if uintptr(m.Offset.Bytes()) != f.Offset {
				t.Errorf("%s.%s: offset %d in C, %d in Go", path, m.Name, m.Offset.Bytes(), f.Offset)
			}
			compareLayout(t, path+"."+m.Name, m.Type, f.Type)
		}
	case *btf.Array:
		if gt.Kind() != reflect.Array || uint32(gt.Len()) != u.Nelems {
			t.Errorf("%s: %d elements in C, Go type %s", path, u.Nelems, gt)
			return
		}
		compareLayout(t, path+"[]", u.Type, gt.Elem())
	case *btf.Int, *btf.Enum, *btf.Pointer:
		switch gt.Kind() {
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		default:
			t.Errorf("%s: an integer in C, %s in Go", path, gt)
		}
	default:
		t.Errorf("%s: C type %v is not expected in a shared struct", path, bt)
	}
}

// sameName reports whether C name c and bpf2go's Go name g are the same
// identifier (task_id and TaskId).
func sameName(c, g string) bool {
	return strings.EqualFold(strings.ReplaceAll(c, "_", ""), g)
}

// TestEnumValues compares the constants of the generated Go file with the
// enums of the committed object's BTF, both ways: every value of every
// shared enum has its Go constant with the same value, and no Go constant
// of those types is left over.
func TestEnumValues(t *testing.T) {
	_, enums := sharedTypes(t)
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "stackline_x86_bpfel.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Go constants by type name, then by name.
	consts := make(map[string]map[string]uint64)
	for _, decl := range file.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			typ, ok := vs.Type.(*ast.Ident)
			if !ok || len(vs.Names) != 1 || len(vs.Values) != 1 {
				continue
			}
			lit, ok := vs.Values[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.INT {
				t.Errorf("%s: value %v is not an integer literal", vs.Names[0].Name, vs.Values[0])
				continue
			}
			v, ok := constant.Uint64Val(constant.MakeFromLiteral(lit.Value, lit.Kind, 0))
			if !ok {
				t.Errorf("%s: value %s is not a uint64", vs.Names[0].Name, lit.Value)
				continue
			}
			if consts[typ.Name] == nil {
				consts[typ.Name] = make(map[string]uint64)
			}
			consts[typ.Name][strings.TrimPrefix(vs.Names[0].Name, typ.Name)] = v
		}
	}
	for _, e := range enums {
		var goName string
		for name := range consts {
			if sameName(e.Name, strings.TrimPrefix(name, "Stackline")) {
				goName = name
			}
		}
		if goName == "" {
			t.Errorf("enum %s is shared with user space but has no generated Go type: add -type %s to gen.go", e.Name, e.Name)
			continue
		}
		got := consts[goName]
		for _, v := range e.Values {
			if gv, ok := got[v.Name]; !ok {
				t.Errorf("%s: no Go constant %s%s", e.Name, goName, v.Name)
			} else if gv != v.Value {
				t.Errorf("%s: %s is %d in C, %d in Go", e.Name, v.Name, v.Value, gv)
			}
		}
		if len(got) != len(e.Values) {
			t.Errorf("%s: %d values in C, %d Go constants", e.Name, len(e.Values), len(got))
		}
	}
}
