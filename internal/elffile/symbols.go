package elffile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// symbolChunk is how many bytes of a symbol table Symbols reads at a time.
const symbolChunk = 64 << 10

// Symbols returns the symbols of ef's first symbol table of type typ
// (elf.SHT_SYMTAB or elf.SHT_DYNSYM) whose names keep accepts, as
// debug/elf's File.Symbols and File.DynamicSymbols return them but without
// Version and Library. keep sees each name only during the call.
//
// Unlike debug/elf, which makes an elf.Symbol and a string of every
// symbol (tens of megabytes for a large C++ program), Symbols reads the
// table through a small buffer and allocates only the string table and
// the symbols kept: for a caller that looks for a few names among
// hundreds of thousands. It fails with elf.ErrNoSymbols when ef has no
// such table.
func Symbols(ef *elf.File, typ elf.SectionType, keep func(name []byte) bool) ([]elf.Symbol, error) {
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
	strs, err := ef.Sections[symtab.Link].Data()
	if err != nil {
		return nil, fmt.Errorf("symbols: cannot load string table section: %w", err)
	}
	r := symtab.Open()
	buf := make([]byte, symbolChunk-symbolChunk%entSize)
	var out []elf.Symbol
	first := true // entry 0 is the reserved undefined symbol
	for {
		n, err := io.ReadFull(r, buf)
		if n%entSize != 0 && err == nil {
			return nil, errors.New("symbols: length is not a multiple of the entry size")
		}
		for off := 0; off+entSize <= n; off += entSize {
			if first {
				first = false
				continue
			}
			s, name := decodeSymbol(ef.Class, ef.ByteOrder, buf[off:off+entSize], strs)
			if keep(name) {
				s.Name = string(name)
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

// decodeSymbol decodes one symbol table entry e and returns the symbol
// without its name, and the name: empty, as debug/elf has it, when its
// offset is outside strs or it is not NUL-terminated.
func decodeSymbol(class elf.Class, bo binary.ByteOrder, e, strs []byte) (elf.Symbol, []byte) {
	var s elf.Symbol
	var nameOff uint32
	if class == elf.ELFCLASS64 {
		nameOff = bo.Uint32(e[0:4])
		s.Info, s.Other = e[4], e[5]
		s.Section = elf.SectionIndex(bo.Uint16(e[6:8]))
		s.Value, s.Size = bo.Uint64(e[8:16]), bo.Uint64(e[16:24])
	} else {
		nameOff = bo.Uint32(e[0:4])
		s.Value, s.Size = uint64(bo.Uint32(e[4:8])), uint64(bo.Uint32(e[8:12]))
		s.Info, s.Other = e[12], e[13]
		s.Section = elf.SectionIndex(bo.Uint16(e[14:16]))
	}
	if uint64(nameOff) >= uint64(len(strs)) {
		return s, nil
	}
	name := strs[nameOff:]
	i := bytes.IndexByte(name, 0)
	if i < 0 {
		return s, nil // not terminated: debug/elf names it ""
	}
	return s, name[:i]
}
