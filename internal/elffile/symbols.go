package elffile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
)

// symbolChunk is how many bytes of a symbol table Symbols reads at a time.
const symbolChunk = 64 << 10

// Symbols returns the symbols of ef's first symbol table of type typ
// (elf.SHT_SYMTAB or elf.SHT_DYNSYM) whose names start with one of
// prefixes, as debug/elf's File.Symbols and File.DynamicSymbols return
// them but without Version and Library. It fails with elf.ErrNoSymbols
// when ef has no such table.
//
// Unlike debug/elf, which reads both tables into the heap and makes an
// elf.Symbol and a string of every symbol (tens of megabytes for a large
// C++ program), Symbols reads them through small buffers: it finds where
// the prefixes occur in the string table, then keeps the symbols whose
// names start at one of those places. It is for callers that look for a
// few names among hundreds of thousands.
func Symbols(ef *elf.File, typ elf.SectionType, prefixes ...string) ([]elf.Symbol, error) {
	var symtab *elf.Section
	for _, s := range ef.Sections {
		if s.Type == typ {
			symtab = s
			break
		}
	}
	if symtab == nil {
		return nil, elf.ErrNoSymbols
	}
	var entSize int
	switch ef.Class {
	case elf.ELFCLASS64:
		entSize = elf.Sym64Size
	case elf.ELFCLASS32:
		entSize = elf.Sym32Size
	default:
		return nil, fmt.Errorf("symbols: unsupported ELF class %v", ef.Class)
	}
	if symtab.Link <= 0 || int(symtab.Link) >= len(ef.Sections) {
		return nil, errors.New("symbols: section has invalid string table link")
	}
	names, err := namesWithPrefix(ef.Sections[symtab.Link], prefixes)
	if err != nil {
		return nil, fmt.Errorf("symbols: cannot load string table section: %w", err)
	}
	r := symtab.Open()
	buf := make([]byte, symbolChunk-symbolChunk%entSize)
	var out []elf.Symbol
	first := true // entry 0 is the reserved undefined symbol
	for {
		n, err := io.ReadFull(r, buf)
		for off := 0; off+entSize <= n; off += entSize {
			if first {
				first = false
				continue
			}
			s, nameOff := decodeSymbol(ef.Class, ef.ByteOrder, buf[off:off+entSize])
			if name, ok := names[nameOff]; ok {
				s.Name = name
				out = append(out, s)
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			if n%entSize != 0 {
				return nil, errors.New("symbols: length is not a multiple of the entry size")
			}
			if first {
				return nil, errors.New("symbols: section is empty")
			}
			return out, nil
		case err != nil:
			return nil, fmt.Errorf("symbols: cannot load symbol section: %w", err)
		}
	}
}

// namesWithPrefix returns the NUL-terminated strings of the string table
// sec that start with one of prefixes, by their offsets. Any offset may
// start a name (linkers share the tails of strings), so every place a
// prefix occurs is one; a string the section does not terminate names
// nothing, as in debug/elf.
func namesWithPrefix(sec *elf.Section, prefixes []string) (map[uint32]string, error) {
	names := map[uint32]string{}
	longest := 0
	for _, p := range prefixes {
		longest = max(longest, len(p))
	}
	if longest == 0 {
		return names, nil
	}
	r := sec.Open()
	buf := make([]byte, max(symbolChunk, 2*longest))
	// buf[:carry] holds the last bytes of the chunk before, for prefixes
	// that straddle two chunks; start is the offset of buf[0].
	carry, start := 0, uint64(0)
	var pending []uint64 // matches whose names run past the chunk
	var partial [][]byte
	for {
		n, err := io.ReadFull(r, buf[carry:])
		chunk := buf[:carry+n]
		// Names of earlier chunks that continue here.
		for i := 0; i < len(pending); i++ {
			k := bytes.IndexByte(chunk[carry:], 0)
			if k < 0 {
				partial[i] = append(partial[i], chunk[carry:]...)
				continue
			}
			names[uint32(pending[i])] = string(append(partial[i], chunk[carry:carry+k]...))
			pending = slices.Delete(pending, i, i+1)
			partial = slices.Delete(partial, i, i+1)
			i--
		}
		for _, p := range prefixes {
			if p == "" {
				continue
			}
			for from := 0; ; {
				k := bytes.Index(chunk[from:], []byte(p))
				if k < 0 {
					break
				}
				at := from + k
				from = at + 1
				off := start + uint64(at)
				if off > math.MaxUint32 {
					break
				}
				if _, ok := names[uint32(off)]; ok || slices.Contains(pending, off) {
					continue // found in the chunk before
				}
				if end := bytes.IndexByte(chunk[at:], 0); end >= 0 {
					names[uint32(off)] = string(chunk[at : at+end])
				} else {
					pending = append(pending, off)
					partial = append(partial, bytes.Clone(chunk[at:]))
				}
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return names, nil // pending names are not terminated
		case err != nil:
			return nil, err
		}
		carry = min(longest-1, len(chunk))
		start += uint64(len(chunk) - carry)
		copy(buf, chunk[len(chunk)-carry:])
	}
}

// decodeSymbol decodes one symbol table entry e and returns the symbol
// without its name, and the offset of its name.
func decodeSymbol(class elf.Class, bo binary.ByteOrder, e []byte) (elf.Symbol, uint32) {
	var s elf.Symbol
	nameOff := bo.Uint32(e[0:4])
	if class == elf.ELFCLASS64 {
		s.Info, s.Other = e[4], e[5]
		s.Section = elf.SectionIndex(bo.Uint16(e[6:8]))
		s.Value, s.Size = bo.Uint64(e[8:16]), bo.Uint64(e[16:24])
	} else {
		s.Value, s.Size = uint64(bo.Uint32(e[4:8])), uint64(bo.Uint32(e[8:12]))
		s.Info, s.Other = e[12], e[13]
		s.Section = elf.SectionIndex(bo.Uint16(e[14:16]))
	}
	return s, nameOff
}
