package elffile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/gopclntab"
)

// Symbols is the package's Symbols for f, reading the symbol and string
// tables in place from the mapped file when both are stored in it as is:
// one pass over the symbols, each name compared where it lies, without
// copying the tables or sorting the names' offsets. The result is the
// same; a file that cannot be mapped (not an open file, compressed or
// missing sections) is read as Symbols reads it.
func (f *File) Symbols(typ elf.SectionType, prefixes ...string) ([]elf.Symbol, error) {
	return f.SymbolsByKind(typ, prefixes, prefixes)
}

// SymbolsByKind is SymbolsByKind (the package's) for f, reading the
// tables in place as Symbols does.
func (f *File) SymbolsByKind(typ elf.SectionType, funcPrefixes, otherPrefixes []string) ([]elf.Symbol, error) {
	if syms, err, ok := mappedSymbols(f, typ, funcPrefixes, otherPrefixes); ok {
		return syms, err
	}
	return SymbolsByKind(f.ELF, typ, funcPrefixes, otherPrefixes)
}

// mappedSymbols reads the symbols as File.SymbolsByKind describes, and
// reports false when the tables cannot be mapped.
func mappedSymbols(f *File, typ elf.SectionType, funcPrefixes, otherPrefixes []string) (syms []elf.Symbol, err error, ok bool) {
	ef := f.ELF
	if f.fh == nil {
		return nil, nil, false
	}
	var symtab *elf.Section
	for _, s := range ef.Sections {
		if s.Type == typ {
			symtab = s
			break
		}
	}
	if symtab == nil || symtab.Link <= 0 || int(symtab.Link) >= len(ef.Sections) {
		return nil, nil, false // Symbols says why
	}
	entSize := symSize(ef.Class)
	if entSize == 0 {
		return nil, nil, false
	}
	strtab := ef.Sections[symtab.Link]
	data, symMem, err := gopclntab.MapSection(f.fh, symtab)
	if err != nil {
		return nil, nil, false
	}
	defer unix.Munmap(symMem)
	strs, strMem, err := gopclntab.MapSection(f.fh, strtab)
	if err != nil {
		return nil, nil, false
	}
	defer unix.Munmap(strMem)
	// The checks eachSymbol makes as it reads.
	if len(data)%entSize != 0 {
		return nil, errors.New("symbols: length is not a multiple of the entry size"), true
	}
	funcs, others := newPrefixSet(funcPrefixes), newPrefixSet(otherPrefixes)
	if funcs.empty() && others.empty() {
		return nil, nil, true
	}
	info := infoOffset(ef.Class)
	err = withFaults(func() {
		// Entry 0 is the reserved undefined symbol.
		for off := entSize; off+entSize <= len(data); off += entSize {
			e := data[off : off+entSize]
			name := uint64(ef.ByteOrder.Uint32(e[0:4]))
			if name >= uint64(len(strs)) {
				continue // an empty name
			}
			at := strs[name:]
			pre := others
			if elf.ST_TYPE(e[info]) == elf.STT_FUNC {
				pre = funcs
			}
			if !pre.match(at) {
				continue
			}
			n := bytes.IndexByte(at, 0)
			if n < 0 {
				continue // unterminated: an empty name
			}
			s := decodeSymbol(ef.Class, ef.ByteOrder, e)
			s.Name = string(at[:n])
			syms = append(syms, s)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("symbols: %w", err), true
	}
	return syms, nil, true
}

// prefixSet tells whether a name starts with one of a few prefixes, at
// the cost of one comparison for most names: prefixes are grouped by
// their first byte, and a group's members are compared only with a name
// that starts with what they all start with.
type prefixSet struct {
	group  [256]uint8 // index+1 in groups by first byte; 0: none
	groups []prefixGroup
}

type prefixGroup struct {
	common []byte // the longest prefix all members share
	// head and mask are common's first (at most) 8 bytes, little-endian,
	// and the mask of those bytes: most names are told apart from common
	// by one load and compare.
	head, mask uint64
	// rests are the members without common.
	rests [][]byte
}

// newPrefixSet returns the set of the non-empty prefixes.
func newPrefixSet(prefixes []string) *prefixSet {
	ps := &prefixSet{}
	var members [][]string
	for _, p := range prefixes {
		if p == "" {
			continue
		}
		g := ps.group[p[0]]
		if g == 0 {
			ps.groups = append(ps.groups, prefixGroup{common: []byte(p)})
			members = append(members, nil)
			g = uint8(len(ps.groups))
			ps.group[p[0]] = g
		}
		pg := &ps.groups[g-1]
		n := 0
		for n < len(pg.common) && n < len(p) && pg.common[n] == p[n] {
			n++
		}
		pg.common = pg.common[:n]
		members[g-1] = append(members[g-1], p)
	}
	for i := range ps.groups {
		pg := &ps.groups[i]
		var head [8]byte
		k := copy(head[:], pg.common)
		pg.head = binary.LittleEndian.Uint64(head[:])
		pg.mask = ^uint64(0) >> (64 - 8*k)
		for _, p := range members[i] {
			pg.rests = append(pg.rests, []byte(p[len(pg.common):]))
		}
	}
	return ps
}

func (ps *prefixSet) empty() bool { return len(ps.groups) == 0 }

// match reports whether b starts with one of the prefixes.
func (ps *prefixSet) match(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	g := ps.group[b[0]]
	if g == 0 {
		return false
	}
	pg := &ps.groups[g-1]
	if len(b) >= 8 && binary.LittleEndian.Uint64(b)&pg.mask != pg.head {
		return false
	}
	if !bytes.HasPrefix(b, pg.common) {
		return false
	}
	b = b[len(pg.common):]
	for _, r := range pg.rests {
		if len(r) == 0 || len(b) >= len(r) && b[0] == r[0] && bytes.Equal(b[:len(r)], r) {
			return true
		}
	}
	return false
}

// withFaults runs fn and turns a memory fault while it reads a mapping
// (its file truncated under it) into an error.
func withFaults(fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if fe, ok := r.(interface {
			error
			Addr() uintptr
		}); ok {
			err = fmt.Errorf("fault reading a mapped file at %#x (truncated under us?): %w", fe.Addr(), fe)
			return
		}
		panic(r)
	}()
	fn()
	return nil
}
