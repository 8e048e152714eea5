package corebtf

import (
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/stackline-dev/stackline/internal/testenv"
	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// requireKernelBTF skips (or fails, see testenv.Missing) without the
// running kernel's BTF.
func requireKernelBTF(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(VmlinuxPath); err != nil {
		testenv.Missing(t, "no kernel BTF: %v", err)
	}
}

// relocations returns the CO-RE relocations of every program of spec.
func relocations(spec *ebpf.CollectionSpec) map[string][]*btf.CORERelocation {
	out := map[string][]*btf.CORERelocation{}
	for name, p := range spec.Programs {
		iter := p.Instructions.Iterate()
		for iter.Next() {
			if r := btf.CORERelocationMetadata(iter.Ins); r != nil {
				out[name] = append(out[name], r)
			}
		}
	}
	return out
}

// TestTypesRelocateAsKernel resolves every CO-RE relocation of the
// tracer's programs (off-CPU ones included) against the reduced types and
// against the whole kernel BTF: the fixups must be the same.
func TestTypesRelocateAsKernel(t *testing.T) {
	requireKernelBTF(t)
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := progs.LoadStackline()
	if err != nil {
		t.Fatal(err)
	}
	names, err := LocalNames(spec.Types)
	if err != nil {
		t.Fatal(err)
	}
	reduced, err := Load(names)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for prog, relos := range relocations(spec) {
		want, err := btf.CORERelocate(relos, []*btf.Spec{kernel}, binary.LittleEndian, spec.Types.TypeID)
		if err != nil {
			t.Fatalf("%s: whole kernel BTF: %v", prog, err)
		}
		got, err := btf.CORERelocate(relos, []*btf.Spec{reduced}, binary.LittleEndian, spec.Types.TypeID)
		if err != nil {
			t.Fatalf("%s: reduced: %v", prog, err)
		}
		for i := range want {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("%s: %v: fixup %v, whole BTF's %v", prog, relos[i], got[i], want[i])
			}
			if strings.HasSuffix(want[i].String(), "=poison") {
				t.Errorf("%s: %v: poisoned against the whole BTF", prog, relos[i])
			}
		}
		n += len(relos)
	}
	if n == 0 {
		t.Fatal("no relocations checked")
	}
	t.Logf("%d relocations, %d names", n, len(names))

}

// FuzzTypes checks that Types fails cleanly on arbitrary bytes, seeded
// with a small BTF blob of nested, pointed-to and bit-field members.
func FuzzTypes(f *testing.F) {
	inner := &btf.Struct{Name: "inner", Size: 8, Members: []btf.Member{
		{Name: "a", Type: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}},
		{Name: "b", Type: &btf.Int{Name: "unsigned int", Size: 4}, Offset: 32, BitfieldSize: 3},
	}}
	outer := &btf.Struct{Name: "outer", Size: 32, Members: []btf.Member{
		{Name: "in", Type: inner},
		{Name: "p", Type: &btf.Pointer{Target: inner}, Offset: 64},
		{Name: "arr", Type: &btf.Array{Index: &btf.Int{Name: "int", Size: 4}, Type: &btf.Typedef{Name: "u8", Type: &btf.Int{Name: "char", Size: 1}}, Nelems: 8}, Offset: 128},
		{Name: "e", Type: &btf.Enum{Name: "kind", Size: 4, Values: []btf.EnumValue{{Name: "K", Value: 1}}}, Offset: 192},
	}}
	b, err := btf.NewBuilder([]btf.Type{outer}, nil)
	if err != nil {
		f.Fatal(err)
	}
	blob, err := b.Marshal(nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob, "outer")
	f.Add(blob[:len(blob)/2], "inner")
	f.Fuzz(func(t *testing.T, raw []byte, name string) {
		spec, err := Types(raw, []string{name, "outer"})
		if err != nil {
			return
		}
		for _, err := range spec.All() {
			if err != nil {
				t.Fatalf("spec Types returned does not read back: %v", err)
			}
		}
	})
}

// BenchmarkKernelTypes compares the CPU time of reading the tracer's
// kernel types with Types and of decoding the whole kernel BTF (what
// relocating against btf.Cache costs at every start).
func BenchmarkKernelTypes(b *testing.B) {
	requireKernelBTF(b)
	spec, err := progs.LoadStackline()
	if err != nil {
		b.Fatal(err)
	}
	names, err := LocalNames(spec.Types)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Load", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := testenv.ProcessCPU(b).Nanoseconds()
		for b.Loop() {
			if _, err := Load(names); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
	})
	b.Run("LoadKernelSpec", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := testenv.ProcessCPU(b).Nanoseconds()
		for b.Loop() {
			if _, err := btf.NewCache().Kernel(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
	})
}

// TestTypesReduces checks what Types keeps of a small BTF blob: the
// wanted structure whole, an embedded one whole, a bit-field where it
// is, a pointer to void; an unwanted structure left out; and a clear
// error for a blob cut short.
func TestTypesReduces(t *testing.T) {
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	inner := &btf.Struct{Name: "inner", Size: 8, Members: []btf.Member{
		{Name: "a", Type: u32},
		{Name: "b", Type: u32, Offset: 32, BitfieldSize: 3},
	}}
	other := &btf.Struct{Name: "other", Size: 4, Members: []btf.Member{{Name: "x", Type: u32}}}
	outer := &btf.Struct{Name: "outer", Size: 24, Members: []btf.Member{
		{Name: "in", Type: &btf.Typedef{Name: "inner_t", Type: inner}},
		{Name: "p", Type: &btf.Pointer{Target: other}, Offset: 64},
		{Name: "", Type: &btf.Union{Size: 8, Members: []btf.Member{{Name: "c", Type: u32}}}, Offset: 128},
	}}
	b, err := btf.NewBuilder([]btf.Type{outer, other}, nil)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := Types(blob, []string{"outer", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	var got *btf.Struct
	if err := spec.TypeByName("outer", &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Members) != 3 || got.Size != 24 {
		t.Fatalf("outer: %v", got)
	}
	in, ok := btf.UnderlyingType(got.Members[0].Type).(*btf.Struct)
	if !ok || in.Name != "inner" || len(in.Members) != 2 || in.Members[1].Offset != 32 || in.Members[1].BitfieldSize != 3 {
		t.Errorf("embedded member: %v", got.Members[0].Type)
	}
	if p, ok := got.Members[1].Type.(*btf.Pointer); !ok || got.Members[1].Offset != 64 {
		t.Errorf("pointer member: %v", got.Members[1])
	} else if _, void := p.Target.(*btf.Void); !void {
		t.Errorf("pointer member: %v", got.Members[1])
	}
	if u, ok := got.Members[2].Type.(*btf.Union); !ok || len(u.Members) != 1 || u.Members[0].Name != "c" {
		t.Errorf("anonymous member: %v", got.Members[2])
	}
	var o *btf.Struct
	if err := spec.TypeByName("other", &o); !errors.Is(err, btf.ErrNotFound) {
		t.Errorf("other: %v, %v: want not found (only reached through a pointer)", o, err)
	}
	if _, err := Types(blob[:len(blob)-20], []string{"outer"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("cut short: %v, want ErrMalformed", err)
	}
}
