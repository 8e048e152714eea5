package elffile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/stackline-dev/stackline/internal/keysort"
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
// C++ program), Symbols reads them through small buffers: it collects
// where the symbols' names are, reads the string table at those places in
// increasing order to find the names that match, then decodes the
// symbols that have them. It is for callers that look for a few names
// among hundreds of thousands.
func Symbols(ef *elf.File, typ elf.SectionType, prefixes ...string) ([]elf.Symbol, error) {
	return SymbolsByKind(ef, typ, prefixes, prefixes)
}

// SymbolsByKind is Symbols with one set of prefixes for functions
// (elf.STT_FUNC) and another for the other symbols: a function is
// returned when its name starts with one of funcPrefixes, another symbol
// when its name starts with one of otherPrefixes.
//
// A caller that looks for a few data symbols with common prefixes (C++
// names) and for functions of a rarer prefix, among hundreds of
// thousands of functions, spares most names the comparison with the
// common prefixes: comparing each name with them is most of the cost of
// a look through a large table (node's .symtab).
func SymbolsByKind(ef *elf.File, typ elf.SectionType, funcPrefixes, otherPrefixes []string) ([]elf.Symbol, error) {
	prefixes := slices.Concat(funcPrefixes, otherPrefixes)
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
	entSize := symSize(ef.Class)
	if entSize == 0 {
		return nil, fmt.Errorf("symbols: unsupported ELF class %v", ef.Class)
	}
	// words[i] holds the offset of a name in its high half and the index
	// of the symbol in the low one.
	words := make([]uint64, 0, min(symtab.Size/uint64(entSize), 1<<20))
	err := eachSymbol(symtab, entSize, func(i int, e []byte) {
		words = append(words, uint64(ef.ByteOrder.Uint32(e[0:4]))<<32|uint64(i))
	})
	if err != nil {
		return nil, err
	}
	if symtab.Link <= 0 || int(symtab.Link) >= len(ef.Sections) {
		return nil, errors.New("symbols: section has invalid string table link")
	}
	names, err := namesWithPrefix(ef.Sections[symtab.Link], words, prefixes)
	if err != nil {
		return nil, fmt.Errorf("symbols: cannot load string table section: %w", err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	var out []elf.Symbol
	err = eachSymbol(symtab, entSize, func(i int, e []byte) {
		if name, ok := names[i]; ok {
			s := decodeSymbol(ef.Class, ef.ByteOrder, e)
			kind := otherPrefixes
			if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
				kind = funcPrefixes
			}
			if !slices.ContainsFunc(kind, func(p string) bool { return p != "" && strings.HasPrefix(name, p) }) {
				return
			}
			s.Name = name
			out = append(out, s)
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachSymbol calls fn with the index (from 0, after the reserved entry)
// and the bytes of each entry of the symbol table sec, read through a
// small buffer. It fails as debug/elf does on a table that is empty or
// not a whole number of entries.
func eachSymbol(sec *elf.Section, entSize int, fn func(i int, e []byte)) error {
	r := sec.Open()
	buf := make([]byte, symbolChunk-symbolChunk%entSize)
	i := -1 // entry 0 is the reserved undefined symbol
	for {
		n, err := io.ReadFull(r, buf)
		for off := 0; off+entSize <= n; off += entSize {
			if i >= 0 {
				fn(i, buf[off:off+entSize])
			}
			i++
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			if n%entSize != 0 {
				return errors.New("symbols: length is not a multiple of the entry size")
			}
			if i < 0 {
				return errors.New("symbols: section is empty")
			}
			return nil
		case err != nil:
			return fmt.Errorf("symbols: cannot load symbol section: %w", err)
		}
	}
}

// namesWithPrefix returns the names that start with one of prefixes, by
// symbol index, of the symbols in words (see Symbols), which it sorts. The
// string table sec is read in increasing order of offsets, through a
// small window; a name the table does not terminate, or at an offset past
// its end, is empty, as in debug/elf.
func namesWithPrefix(sec *elf.Section, words []uint64, prefixes []string) (map[int]string, error) {
	names := map[int]string{}
	longest := 0
	for _, p := range prefixes {
		longest = max(longest, len(p))
	}
	if longest == 0 || len(words) == 0 {
		return names, nil
	}
	// By name offset; the indexes, in increasing order in the low
	// halves, stay so among the symbols of one name.
	keysort.Words(words, 32, nil)
	var r io.ReaderAt = sec
	size := int64(sec.Size)
	if sec.Type == elf.SHT_NOBITS || sec.Flags&elf.SHF_COMPRESSED != 0 {
		// Not in the file as is: read it whole, as debug/elf does.
		data, err := sec.Data()
		if err != nil {
			return nil, err
		}
		r, size = bytes.NewReader(data), int64(len(data))
	}
	buf := make([]byte, max(symbolChunk, 2*longest))
	var window []byte // the table's bytes from start on
	start := int64(-1)
	lastOff, lastName, lastOK := int64(-1), "", false
	for _, w := range words {
		off := int64(w >> 32)
		if off >= size {
			break // and all after it: an empty name
		}
		if off != lastOff {
			if start < 0 || off+int64(longest) > start+int64(len(window)) && start+int64(len(window)) < size {
				n, err := r.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					return nil, err
				}
				start, window = off, buf[:n]
			}
			lastOff, lastOK = off, false
			at := window[off-start:]
			if slices.ContainsFunc(prefixes, func(p string) bool { return p != "" && bytes.HasPrefix(at, []byte(p)) }) {
				name, ok, err := cstring(r, off, at, size)
				if err != nil {
					return nil, err
				}
				lastName, lastOK = name, ok
			}
		}
		if lastOK {
			names[int(uint32(w))] = lastName
		}
	}
	return names, nil
}

// cstring returns the NUL-terminated string at off in r, whose first
// bytes are in have, and false if it is not terminated before size.
func cstring(r io.ReaderAt, off int64, have []byte, size int64) (string, bool, error) {
	if k := bytes.IndexByte(have, 0); k >= 0 {
		return string(have[:k]), true, nil
	}
	// It runs past the window: read on.
	name := bytes.Clone(have)
	next := off + int64(len(have))
	var buf [4096]byte
	for next < size {
		n, err := r.ReadAt(buf[:], next)
		if k := bytes.IndexByte(buf[:n], 0); k >= 0 {
			return string(append(name, buf[:k]...)), true, nil
		}
		name = append(name, buf[:n]...)
		next += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", false, err
		}
	}
	return "", false, nil
}

// decodeSymbol decodes one symbol table entry e, but for its name.
func decodeSymbol(class elf.Class, bo binary.ByteOrder, e []byte) elf.Symbol {
	var s elf.Symbol
	if class == elf.ELFCLASS64 {
		s.Info, s.Other = e[4], e[5]
		s.Section = elf.SectionIndex(bo.Uint16(e[6:8]))
		s.Value, s.Size = bo.Uint64(e[8:16]), bo.Uint64(e[16:24])
	} else {
		s.Value, s.Size = uint64(bo.Uint32(e[4:8])), uint64(bo.Uint32(e[8:12]))
		s.Info, s.Other = e[12], e[13]
		s.Section = elf.SectionIndex(bo.Uint16(e[14:16]))
	}
	return s
}

// infoOffset returns the offset of st_info in a symbol table entry of
// class c (64-bit or 32-bit; symSize tells which are read).
func infoOffset(c elf.Class) int {
	if c == elf.ELFCLASS64 {
		return 4
	}
	return 12
}

// symSize returns the size of a symbol table entry of class c, or 0 for a
// class this package does not read.
func symSize(c elf.Class) int {
	switch c {
	case elf.ELFCLASS64:
		return elf.Sym64Size
	case elf.ELFCLASS32:
		return elf.Sym32Size
	}
	return 0
}
