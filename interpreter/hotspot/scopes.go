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
