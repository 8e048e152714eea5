// Package corebtf reads from the kernel's BTF only the types that the
// CO-RE relocations of stackline's eBPF programs are resolved against.
//
// cilium/ebpf resolves relocations against the whole kernel BTF, which it
// decodes and indexes first (126,610 types on a 6.18 kernel: 13-25 ms of
// CPU at every start) for the dozen kernel structures the programs read,
// about 400 types with what they embed. Types finds those structures in
// one pass over the raw BTF, without indexing the rest, and returns them
// as a small spec (ebpf.ProgramOptions' KernelTypes) that resolves every
// field-offset and field-existence relocation as the whole BTF does:
//
//   - a structure or union named in the wanted set keeps all its members
//     at their offsets (bit-fields included);
//   - a member's type is followed through typedefs, qualifiers, arrays and
//     embedded (not pointed-to) structures and unions, which are kept
//     whole, so that a path through nested members resolves;
//   - a pointer points to void: relocations compare pointers by kind
//     alone, and a structure reached through a pointer is relocated as a
//     root of its own (wanted by its name).
//
// It does not serve relocations of type IDs, type existence or enum
// values, which need the pointed-to types; the programs make none (the
// test checks every relocation of the programs against the whole BTF).
package corebtf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// VmlinuxPath is where the running kernel exposes its BTF.
const VmlinuxPath = "/sys/kernel/btf/vmlinux"

// Load returns the types of the running kernel's BTF that Types returns
// for names. It reads the BTF where the kernel exposes it, mapped rather
// than copied when the kernel allows it.
func Load(names []string) (*btf.Spec, error) {
	f, err := os.Open(VmlinuxPath)
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	// The file is read-only: nothing changes under the mapping.
	if fi.Size() > 0 && fi.Size() < 1<<31 {
		if raw, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_PRIVATE); err == nil {
			defer unix.Munmap(raw)
			return Types(raw, names)
		}
	}
	raw, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	return Types(raw, names)
}

// Bounds on what Types accepts: well above any kernel's.
const (
	// maxTypes bounds the types of the raw BTF.
	maxTypes = 1 << 22
	// maxKept bounds the types a reduced spec holds.
	maxKept = 1 << 16
	// maxDepth bounds how deep types nest (typedefs, arrays, embedded
	// structures).
	maxDepth = 64
)

// BTF kinds (include/uapi/linux/btf.h).
const (
	kindInt       = 1
	kindPtr       = 2
	kindArray     = 3
	kindStruct    = 4
	kindUnion     = 5
	kindEnum      = 6
	kindFwd       = 7
	kindTypedef   = 8
	kindVolatile  = 9
	kindConst     = 10
	kindRestrict  = 11
	kindFunc      = 12
	kindFuncProto = 13
	kindVar       = 14
	kindDatasec   = 15
	kindFloat     = 16
	kindDeclTag   = 17
	kindTypeTag   = 18
	kindEnum64    = 19
)

// typeHeaderSize is the size of struct btf_type, which starts every type.
const typeHeaderSize = 12

// ErrMalformed is wrapped by the errors of BTF that Types cannot read.
var ErrMalformed = errors.New("malformed BTF")

// Types returns the structures and unions named names among the types of
// raw (a raw BTF blob, as /sys/kernel/btf/vmlinux holds), reduced as the
// package documentation describes, as a spec of their own. Names that
// raw does not have are left out; a name of several types (a structure
// and a union) keeps them all.
func Types(raw []byte, names []string) (*btf.Spec, error) {
	r, err := newReader(raw)
	if err != nil {
		return nil, err
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	var roots []uint32
	err = r.scan(func(id uint32, kind int, nameOff uint32) {
		if (kind == kindStruct || kind == kindUnion) && nameOff != 0 {
			if name, ok := r.nameBytes(nameOff); ok && want[string(name)] {
				roots = append(roots, id)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	in := inflater{r: r, types: make(map[uint32]btf.Type)}
	var types []btf.Type
	for _, id := range roots {
		t, err := in.inflate(id, 0)
		if err != nil {
			return nil, err
		}
		types = append(types, t)
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		return nil, fmt.Errorf("kernel types: %w", err)
	}
	blob, err := b.Marshal(nil, nil)
	if err != nil {
		return nil, fmt.Errorf("kernel types: %w", err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
	if err != nil {
		return nil, fmt.Errorf("kernel types: %w", err)
	}
	return spec, nil
}

// reader reads a raw BTF blob in place.
type reader struct {
	bo      binary.ByteOrder
	types   []byte
	strings []byte
	// offsets[id] is where type id starts in types (id 0 is void).
	offsets []uint32
}

func newReader(raw []byte) (*reader, error) {
	if len(raw) < 24 {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(raw))
	}
	var bo binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint16(raw) == 0xeb9f:
		bo = binary.LittleEndian
	case binary.BigEndian.Uint16(raw) == 0xeb9f:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("%w: no BTF magic", ErrMalformed)
	}
	if raw[2] != 1 {
		return nil, fmt.Errorf("%w: version %d", ErrMalformed, raw[2])
	}
	hdrLen := uint64(bo.Uint32(raw[4:]))
	typeOff, typeLen := uint64(bo.Uint32(raw[8:])), uint64(bo.Uint32(raw[12:]))
	strOff, strLen := uint64(bo.Uint32(raw[16:])), uint64(bo.Uint32(raw[20:]))
	if hdrLen < 24 || hdrLen > uint64(len(raw)) {
		return nil, fmt.Errorf("%w: header length %d", ErrMalformed, hdrLen)
	}
	body := raw[hdrLen:]
	if typeOff+typeLen > uint64(len(body)) || strOff+strLen > uint64(len(body)) {
		return nil, fmt.Errorf("%w: sections past the end", ErrMalformed)
	}
	return &reader{
		bo:      bo,
		types:   body[typeOff : typeOff+typeLen],
		strings: body[strOff : strOff+strLen],
	}, nil
}

// scan walks every type once, recording where each starts, and calls fn
// with each one's ID, kind and name offset.
func (r *reader) scan(fn func(id uint32, kind int, nameOff uint32)) error {
	// A type takes at least its header: most take little more.
	r.offsets = make([]uint32, 1, min(len(r.types)/typeHeaderSize, maxTypes)+1) // void
	for off := 0; off < len(r.types); {
		if len(r.offsets) > maxTypes {
			return fmt.Errorf("%w: more than %d types", ErrMalformed, maxTypes)
		}
		if len(r.types)-off < typeHeaderSize {
			return fmt.Errorf("%w: type %d truncated", ErrMalformed, len(r.offsets))
		}
		nameOff := r.bo.Uint32(r.types[off:])
		info := r.bo.Uint32(r.types[off+4:])
		kind, vlen := int(info>>24&0x1f), int(info&0xffff)
		extra, ok := extraSize(kind, vlen)
		if !ok {
			return fmt.Errorf("%w: type %d of unknown kind %d", ErrMalformed, len(r.offsets), kind)
		}
		if len(r.types)-off-typeHeaderSize < extra {
			return fmt.Errorf("%w: type %d truncated", ErrMalformed, len(r.offsets))
		}
		id := uint32(len(r.offsets))
		r.offsets = append(r.offsets, uint32(off))
		fn(id, kind, nameOff)
		off += typeHeaderSize + extra
	}
	return nil
}

// extraSize returns the size of the data that follows the header of a
// type of kind with vlen items, and false for an unknown kind.
func extraSize(kind, vlen int) (int, bool) {
	switch kind {
	case kindPtr, kindFwd, kindTypedef, kindVolatile, kindConst, kindRestrict, kindFunc, kindFloat, kindTypeTag:
		return 0, true
	case kindInt, kindVar, kindDeclTag:
		return 4, true
	case kindArray:
		return 12, true
	case kindStruct, kindUnion, kindDatasec, kindEnum64:
		return 12 * vlen, true
	case kindEnum, kindFuncProto:
		return 8 * vlen, true
	}
	return 0, false
}

// nameBytes returns the name at off in the string table, in place.
func (r *reader) nameBytes(off uint32) ([]byte, bool) {
	if uint64(off) >= uint64(len(r.strings)) {
		return nil, false
	}
	s := r.strings[off:]
	n := bytes.IndexByte(s, 0)
	if n < 0 {
		return nil, false
	}
	return s[:n], true
}

func (r *reader) name(off uint32) (string, error) {
	if off == 0 {
		return "", nil
	}
	b, ok := r.nameBytes(off)
	if !ok {
		return "", fmt.Errorf("%w: name at %d out of the string table", ErrMalformed, off)
	}
	return string(b), nil
}

// inflater turns raw types into cilium/ebpf's, reduced (see Types).
type inflater struct {
	r     *reader
	types map[uint32]btf.Type
}

// void stands for what a pointer points to.
var void = &btf.Void{}

func (in *inflater) inflate(id uint32, depth int) (btf.Type, error) {
	if id == 0 {
		return void, nil
	}
	if t, ok := in.types[id]; ok {
		return t, nil
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: types nest deeper than %d", ErrMalformed, maxDepth)
	}
	if len(in.types) >= maxKept {
		return nil, fmt.Errorf("%w: more than %d types kept", ErrMalformed, maxKept)
	}
	r := in.r
	if uint64(id) >= uint64(len(r.offsets)) {
		return nil, fmt.Errorf("%w: type ID %d out of range", ErrMalformed, id)
	}
	d := r.types[r.offsets[id]:]
	info := r.bo.Uint32(d[4:])
	kind, vlen, kflag := int(info>>24&0x1f), int(info&0xffff), info>>31 != 0
	sizeOrType := r.bo.Uint32(d[8:])
	name, err := r.name(r.bo.Uint32(d))
	if err != nil {
		return nil, err
	}
	extra := d[typeHeaderSize:]
	next := func(ref uint32) (btf.Type, error) { return in.inflate(ref, depth+1) }
	switch kind {
	case kindInt:
		enc := btf.IntEncoding(r.bo.Uint32(extra) >> 24 & 0xf)
		t := &btf.Int{Name: name, Size: sizeOrType, Encoding: enc}
		in.types[id] = t
		return t, nil
	case kindFloat:
		t := &btf.Float{Name: name, Size: sizeOrType}
		in.types[id] = t
		return t, nil
	case kindPtr:
		t := &btf.Pointer{Target: void}
		in.types[id] = t
		return t, nil
	case kindFwd:
		t := &btf.Fwd{Name: name, Kind: btf.FwdStruct}
		if kflag {
			t.Kind = btf.FwdUnion
		}
		in.types[id] = t
		return t, nil
	case kindEnum, kindEnum64:
		t := &btf.Enum{Name: name, Size: sizeOrType, Signed: kflag}
		in.types[id] = t
		step := 8
		if kind == kindEnum64 {
			step = 12
		}
		for i := range vlen {
			e := extra[i*step:]
			vn, err := r.name(r.bo.Uint32(e))
			if err != nil {
				return nil, err
			}
			v := uint64(r.bo.Uint32(e[4:]))
			if kind == kindEnum64 {
				v |= uint64(r.bo.Uint32(e[8:])) << 32
			} else if kflag {
				v = uint64(int64(int32(v)))
			}
			t.Values = append(t.Values, btf.EnumValue{Name: vn, Value: v})
		}
		return t, nil
	case kindTypedef:
		t := &btf.Typedef{Name: name}
		in.types[id] = t
		if t.Type, err = next(sizeOrType); err != nil {
			return nil, err
		}
		return t, nil
	case kindVolatile:
		t := &btf.Volatile{}
		in.types[id] = t
		if t.Type, err = next(sizeOrType); err != nil {
			return nil, err
		}
		return t, nil
	case kindConst:
		t := &btf.Const{}
		in.types[id] = t
		if t.Type, err = next(sizeOrType); err != nil {
			return nil, err
		}
		return t, nil
	case kindRestrict:
		t := &btf.Restrict{}
		in.types[id] = t
		if t.Type, err = next(sizeOrType); err != nil {
			return nil, err
		}
		return t, nil
	case kindTypeTag:
		// The tag says nothing relocations look at.
		return next(sizeOrType)
	case kindArray:
		t := &btf.Array{Nelems: r.bo.Uint32(extra[8:])}
		in.types[id] = t
		if t.Type, err = next(r.bo.Uint32(extra)); err != nil {
			return nil, err
		}
		if t.Index, err = next(r.bo.Uint32(extra[4:])); err != nil {
			return nil, err
		}
		return t, nil
	case kindStruct, kindUnion:
		members := make([]btf.Member, vlen)
		var t btf.Type
		if kind == kindStruct {
			t = &btf.Struct{Name: name, Size: sizeOrType, Members: members}
		} else {
			t = &btf.Union{Name: name, Size: sizeOrType, Members: members}
		}
		in.types[id] = t
		for i := range members {
			m := extra[i*12:]
			mn, err := r.name(r.bo.Uint32(m))
			if err != nil {
				return nil, err
			}
			off := r.bo.Uint32(m[8:])
			members[i] = btf.Member{Name: mn, Offset: btf.Bits(off)}
			if kflag {
				members[i].Offset = btf.Bits(off & 0xffffff)
				members[i].BitfieldSize = btf.Bits(off >> 24)
			}
			if members[i].Type, err = next(r.bo.Uint32(m[4:])); err != nil {
				return nil, err
			}
		}
		return t, nil
	}
	return nil, fmt.Errorf("%w: type %d of kind %d is not a data type", ErrMalformed, id, kind)
}

// LocalNames returns the names of the structures and unions of spec (an
// eBPF object's own types), without a flavour suffix ("___v2"): the names
// its CO-RE relocations may look up in the kernel's types. Those the
// kernel does not have (the object's own structures) cost Types nothing.
func LocalNames(spec *btf.Spec) ([]string, error) {
	seen := map[string]bool{}
	var names []string
	for t, err := range spec.All() {
		if err != nil {
			return nil, fmt.Errorf("local types: %w", err)
		}
		var name string
		switch t := t.(type) {
		case *btf.Struct:
			name = t.Name
		case *btf.Union:
			name = t.Name
		}
		if i := strings.Index(name, "___"); i > 0 {
			name = name[:i]
		}
		if name != "" && !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return names, nil
}
