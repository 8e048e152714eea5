package hotspot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// PcDescLayout is where a PcDesc's fields lie in the VM's PcDesc table
// (nmethod's scopes_pcs section), from the Layout.
type PcDescLayout struct {
	// Size is sizeof(PcDesc), the table's stride.
	Size uint64
	// PCOffset, ScopeDecodeOffset, ObjDecodeOffset and Flags are the
	// offsets of the int fields _pc_offset, _scope_decode_offset,
	// _obj_decode_offset and _flags.
	PCOffset, ScopeDecodeOffset, ObjDecodeOffset, Flags uint64
}

// PcDescLayoutOf returns the PcDesc layout l states.
func PcDescLayoutOf(l *Layout) (PcDescLayout, error) {
	var d PcDescLayout
	var ok bool
	if d.Size, ok = l.Size("PcDesc"); !ok {
		return d, errors.New("hotspot: the VM states no size of PcDesc")
	}
	for _, f := range []struct {
		name string
		into *uint64
	}{
		{"_pc_offset", &d.PCOffset}, {"_scope_decode_offset", &d.ScopeDecodeOffset},
		{"_obj_decode_offset", &d.ObjDecodeOffset}, {"_flags", &d.Flags},
	} {
		if *f.into, ok = l.Field("PcDesc", f.name); !ok {
			return d, fmt.Errorf("hotspot: the VM states no PcDesc::%s", f.name)
		}
	}
	if !d.valid() {
		return d, fmt.Errorf("hotspot: PcDesc layout %+v: fields outside the entry", d)
	}
	return d, nil
}

// valid reports whether every field lies inside the entry.
func (d PcDescLayout) valid() bool {
	if d.Size < 4 || d.Size > 256 {
		return false
	}
	for _, off := range []uint64{d.PCOffset, d.ScopeDecodeOffset, d.ObjDecodeOffset, d.Flags} {
		if off > d.Size-4 {
			return false
		}
	}
	return true
}

// PcDesc describes one code address of a compiled method: its offset from
// the code's start and where its scope (the inlined methods there) starts
// in the nmethod's scope data.
type PcDesc struct {
	PCOffset          int32
	ScopeDecodeOffset int32
	ObjDecodeOffset   int32
	Flags             int32
}

// FindPcDesc finds, in an nmethod's PcDesc table (scopes_pcs_begin to
// scopes_pcs_end, sorted by pc offset), the PcDesc for the code at
// pcOffset from the code's start: the first with a pc offset at or after
// it. A call's return address has a PcDesc of its own (PCOffset ==
// pcOffset); any other address (a sampled top frame) gets the next
// safepoint's, as HotSpot's approximate search does. It reports false
// when no PcDesc is at or after pcOffset or the layout is invalid.
func FindPcDesc(table []byte, desc PcDescLayout, pcOffset uint32) (PcDesc, bool) {
	if !desc.valid() {
		return PcDesc{}, false
	}
	n := len(table) / int(desc.Size)
	at := func(i int) int32 {
		return int32(binary.LittleEndian.Uint32(table[uint64(i)*desc.Size+desc.PCOffset:]))
	}
	// The table starts with a sentinel at pc offset -1: compare as
	// signed, as HotSpot does.
	target := int32(pcOffset)
	if target < 0 {
		return PcDesc{}, false
	}
	i := sort.Search(n, func(i int) bool { return at(i) >= target })
	if i == n {
		return PcDesc{}, false
	}
	e := table[uint64(i)*desc.Size:]
	field := func(off uint64) int32 { return int32(binary.LittleEndian.Uint32(e[off:])) }
	return PcDesc{
		PCOffset:          field(desc.PCOffset),
		ScopeDecodeOffset: field(desc.ScopeDecodeOffset),
		ObjDecodeOffset:   field(desc.ObjDecodeOffset),
		Flags:             field(desc.Flags),
	}, true
}

// maxScopeDepth bounds the inlining depth DecodeScopes follows. C2 inlines
// at most MaxInlineLevel (15) levels by default and never more than a few
// dozen; the bound only stops corrupt data.
const maxScopeDepth = 64

// Scope is one method of the inlining chain at a code address.
type Scope struct {
	// MethodIndex is the method's index into the nmethod's metadata, as
	// HotSpot's metadata_at takes it: index i is metadata_begin()[i-1].
	// (0 would be null; DecodeScopes rejects it.)
	MethodIndex int
	// BCI is the bytecode index in that method; -1
	// (InvocationEntryBci) stands for the method's entry.
	BCI int
}

// DecodeScopes decodes the inlining chain that starts at decodeOffset (a
// PcDesc's ScopeDecodeOffset) in an nmethod's scope data
// (scopes_data_begin to scopes_data_end): the innermost method first, then
// the methods it is inlined into, each at the bytecode of its call, the
// nmethod's own method last. Each scope is a sender offset (0 for none), a
// metadata index and a bci, as compressed integers of enc; a sender always
// lies before its callee, which bounds the walk, as does maxScopeDepth.
//
// A decodeOffset of 0 (serialized_null: a PcDesc without debug
// information) returns no scopes and no error: the code is the nmethod's
// own method at an unknown bci.
func DecodeScopes(scopes []byte, decodeOffset int, enc Encoding) ([]Scope, error) {
	var out []Scope
	for off := decodeOffset; off != 0; {
		if len(out) == maxScopeDepth {
			return nil, fmt.Errorf("scope data: deeper than %d scopes", maxScopeDepth)
		}
		if off < 0 || off >= len(scopes) {
			return nil, fmt.Errorf("scope data: scope at %d outside %d bytes: %w", off, len(scopes), ErrTruncated)
		}
		s := NewStream(scopes, off, enc)
		sender, err := s.Uint()
		if err != nil {
			return nil, fmt.Errorf("scope data: scope at %d: %w", off, err)
		}
		method, err := s.Uint()
		if err != nil {
			return nil, fmt.Errorf("scope data: scope at %d: %w", off, err)
		}
		bci, err := s.Uint()
		if err != nil {
			return nil, fmt.Errorf("scope data: scope at %d: %w", off, err)
		}
		if method == 0 || method > 1<<24 {
			return nil, fmt.Errorf("scope data: scope at %d: metadata index %d", off, method)
		}
		if bci > 1<<16 {
			return nil, fmt.Errorf("scope data: scope at %d: bci %d", off, int64(bci)-1)
		}
		if sender != 0 && int64(sender) >= int64(off) {
			return nil, fmt.Errorf("scope data: scope at %d: sender at %d does not precede it", off, sender)
		}
		out = append(out, Scope{MethodIndex: int(method), BCI: int(bci) - 1})
		off = int(sender)
	}
	return out, nil
}

// NMethodLayout is where an nmethod's header (the first Size bytes of the
// nmethod, at its address in the code cache) keeps what naming its frames
// needs. JDK 17 and 21 keep the PcDescs, scope data and metadata inside
// the nmethod (offsets from it, the scope data at a pointer); JDK 25 keeps
// PcDescs and scope data in a separate immutable data block and metadata
// in a mutable data block after its relocations (both at pointers).
type NMethodLayout struct {
	// Size is sizeof(nmethod): the header bytes Sections reads.
	Size uint64
	// Method, CompileID, FrameSize are the offsets of nmethod's _method
	// (a Method*), _compile_id and CodeBlob's _frame_size (in words).
	Method, CompileID, FrameSize uint64
	// Immutable is true for the JDK 25 layout.
	Immutable bool
	// CodeBegin is CodeBlob's _code_begin (a pointer, JDK 17, 21) or
	// _code_offset (an int from the blob, JDK 25).
	CodeBegin uint64
	// JDK 17, 21: the int offsets from the nmethod of the metadata,
	// the PcDescs and their end (_dependencies_offset), and the pointer
	// to the scope data (which ends where the PcDescs begin, and where
	// the metadata ends).
	MetadataOffset, PcsOffset, DependenciesOffset, ScopesDataBegin uint64
	// JDK 25: the pointer to the immutable data, the int offsets in it
	// of the PcDescs and the scope data, its int size; the pointer to
	// the mutable data, its int size and the int size of the relocations
	// before the metadata in it.
	ImmutableData, ScopesPcsOffset, ScopesDataOffset, ImmutableDataSize uint64
	MutableData, MutableDataSize, RelocationSize                        uint64
}

// NMethodLayoutOf returns the nmethod layout l states.
func NMethodLayoutOf(l *Layout) (NMethodLayout, error) {
	var n NMethodLayout
	var ok bool
	if n.Size, ok = l.Size("nmethod"); !ok || n.Size > 4096 {
		return n, fmt.Errorf("hotspot: nmethod size %d, %v", n.Size, ok)
	}
	type f struct {
		name string
		into *uint64
		size uint64
	}
	fields := []f{{"_method", &n.Method, 8}, {"_compile_id", &n.CompileID, 4}, {"_frame_size", &n.FrameSize, 4}}
	if _, n.Immutable = l.FieldOrSuper("nmethod", "_immutable_data"); n.Immutable {
		fields = append(fields,
			f{"_code_offset", &n.CodeBegin, 4},
			f{"_immutable_data", &n.ImmutableData, 8}, f{"_scopes_pcs_offset", &n.ScopesPcsOffset, 4},
			f{"_scopes_data_offset", &n.ScopesDataOffset, 4}, f{"_immutable_data_size", &n.ImmutableDataSize, 4},
			f{"_mutable_data", &n.MutableData, 8}, f{"_mutable_data_size", &n.MutableDataSize, 4},
			f{"_relocation_size", &n.RelocationSize, 4})
	} else {
		fields = append(fields,
			f{"_code_begin", &n.CodeBegin, 8},
			f{"_metadata_offset", &n.MetadataOffset, 4}, f{"_scopes_pcs_offset", &n.PcsOffset, 4},
			f{"_dependencies_offset", &n.DependenciesOffset, 4}, f{"_scopes_data_begin", &n.ScopesDataBegin, 8})
	}
	for _, fl := range fields {
		if *fl.into, ok = l.FieldOrSuper("nmethod", fl.name); !ok {
			return n, fmt.Errorf("hotspot: the VM states no nmethod::%s", fl.name)
		}
		if *fl.into > n.Size || fl.size > n.Size-*fl.into {
			return n, fmt.Errorf("hotspot: nmethod::%s at %d, outside the %d-byte nmethod", fl.name, *fl.into, n.Size)
		}
	}
	return n, nil
}

// Span is an address range [Start, End) in a process.
type Span struct{ Start, End uint64 }

// Len returns the range's length.
func (s Span) Len() uint64 { return s.End - s.Start }

// NMethodSections are where an nmethod's data lie in the process.
type NMethodSections struct {
	// Method is the compiled method (a Method*).
	Method uint64
	// CompileID changes when a method is compiled again: a cheap check
	// that code at an address is still the same compilation.
	CompileID int32
	// FrameSize is the frame's size in words.
	FrameSize int32
	// CodeBegin is the address PcDesc offsets count from.
	CodeBegin uint64
	// PcDescs is the PcDesc table, Scopes the scope data, Metadata the
	// metadata array (8 bytes an entry; Scope.MethodIndex i is the
	// entry at Start+8*(i-1)). For JDK 25, Scopes runs on to the end of
	// the immutable data (JVMCI speculations and a reference counter
	// follow the scope data) and Metadata to the end of the mutable data
	// (JVMCI data may follow the metadata): both start right and bound
	// what may be read.
	PcDescs, Scopes, Metadata Span
}

// maxNMethodData bounds each of an nmethod's sections.
const maxNMethodData = 16 << 20

// Sections computes where the data of the nmethod at addr lie from its
// header (at least n.Size bytes read at addr); an error for a header whose
// offsets do not make sense (code freed or reused, a torn read).
func (n NMethodLayout) Sections(addr uint64, header []byte) (NMethodSections, error) {
	if uint64(len(header)) < n.Size {
		return NMethodSections{}, fmt.Errorf("nmethod %#x: %d header bytes, need %d", addr, len(header), n.Size)
	}
	u64 := func(off uint64) uint64 { return binary.LittleEndian.Uint64(header[off:]) }
	i32 := func(off uint64) int32 { return int32(binary.LittleEndian.Uint32(header[off:])) }
	s := NMethodSections{
		Method:    u64(n.Method),
		CompileID: i32(n.CompileID),
		FrameSize: i32(n.FrameSize),
	}
	span := func(base uint64, from, to int32) (Span, bool) {
		if from < 0 || to < from || to-from > maxNMethodData {
			return Span{}, false
		}
		return Span{base + uint64(from), base + uint64(to)}, base+uint64(to) >= base
	}
	var ok1, ok2, ok3 bool
	if n.Immutable {
		s.CodeBegin = addr + uint64(i32(n.CodeBegin))
		imm := u64(n.ImmutableData)
		size := i32(n.ImmutableDataSize)
		pcs, data := i32(n.ScopesPcsOffset), i32(n.ScopesDataOffset)
		s.PcDescs, ok1 = span(imm, pcs, data)
		s.Scopes, ok2 = span(imm, data, size)
		mut := u64(n.MutableData)
		s.Metadata, ok3 = span(mut, i32(n.RelocationSize), i32(n.MutableDataSize))
		ok1 = ok1 && imm != 0
		ok3 = ok3 && mut != 0
	} else {
		s.CodeBegin = u64(n.CodeBegin)
		s.PcDescs, ok1 = span(addr, i32(n.PcsOffset), i32(n.DependenciesOffset))
		scopes := u64(n.ScopesDataBegin)
		ok2 = scopes <= s.PcDescs.Start && s.PcDescs.Start-scopes <= maxNMethodData && scopes >= addr
		s.Scopes = Span{scopes, s.PcDescs.Start}
		meta := addr + uint64(i32(n.MetadataOffset))
		ok3 = i32(n.MetadataOffset) >= 0 && meta <= scopes && scopes-meta <= maxNMethodData
		s.Metadata = Span{meta, scopes}
	}
	if !ok1 || !ok2 || !ok3 {
		return NMethodSections{}, fmt.Errorf("nmethod %#x: PcDescs %#x-%#x, scopes %#x-%#x, metadata %#x-%#x: not a valid layout",
			addr, s.PcDescs.Start, s.PcDescs.End, s.Scopes.Start, s.Scopes.End, s.Metadata.Start, s.Metadata.End)
	}
	return s, nil
}
