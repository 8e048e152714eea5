package kallsyms

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unsafe"
)

// symtab is a sorted, packed list of symbols. Symbol i starts at addrs[i];
// its name is names[nameOffs[i]:nameOffs[i+1]] (or up to the end of names
// for the last). When mods is not nil, mods[i] is an index whose meaning
// belongs to the owner of the symtab.
type symtab struct {
	addrs    []uint64
	nameOffs []uint32
	names    string
	mods     []uint32
}

func (s *symtab) len() int {
	if s == nil {
		return 0
	}
	return len(s.addrs)
}

func (s *symtab) bytes() int {
	if s == nil {
		return 0
	}
	return int(unsafe.Sizeof(*s)) + cap(s.addrs)*8 + cap(s.nameOffs)*4 + len(s.names) + cap(s.mods)*4
}

func (s *symtab) name(i int) string {
	end := uint32(len(s.names))
	if i+1 < len(s.nameOffs) {
		end = s.nameOffs[i+1]
	}
	return s.names[s.nameOffs[i]:end]
}

// find returns the index of the last symbol that starts at or before addr
// and addr's offset from it. It reports false when there is no such
// symbol or the offset is at least MaxSymbolSize.
func (s *symtab) find(addr uint64) (int, uint64, bool) {
	if s == nil || len(s.addrs) == 0 || addr < s.addrs[0] {
		return 0, 0, false
	}
	lo, hi := 0, len(s.addrs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.addrs[m] <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo - 1
	off := addr - s.addrs[i]
	if off >= MaxSymbolSize {
		return 0, 0, false
	}
	return i, off, true
}

// builder collects the symbols of one kallsyms text.
type builder struct {
	// modulesOnly drops the kernel image's symbols, for re-reads that
	// only refresh the modules.
	modulesOnly      bool
	vmlinux, modules part
	modNames         []string
	modIndex         map[string]uint32
	parsed           int // well-formed lines, of any symbol type
	nonzero          int // well-formed lines with a nonzero address
	skipped          int // malformed lines
}

// part accumulates the symbols of a symtab before sorting.
type part struct {
	entries []entry
	names   []byte
}

type entry struct {
	addr    uint64
	nameOff uint32
	nameLen uint32
	mod     uint32
	global  bool // type T rather than t
}

// maxLine bounds the length of a line; longer ones are skipped as
// malformed. The kernel limits symbol names to a few hundred bytes and
// module dependency lists in /proc/modules to a few kilobytes.
const maxLine = 64 << 10

// forEachLine calls fn for every line of r, with its newline if any. Lines
// longer than maxLine are not passed to fn but counted in the result.
func forEachLine(r io.Reader, fn func(line []byte)) (overlong int, err error) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Skip the rest of an overlong line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			overlong++
		} else if len(line) > 0 {
			fn(line)
		}
		if err == io.EOF {
			return overlong, nil
		}
		if err != nil {
			return overlong, err
		}
	}
}

func (b *builder) read(r io.Reader) error {
	overlong, err := forEachLine(r, b.line)
	b.skipped += overlong
	if err != nil {
		return fmt.Errorf("read symbols: %w", err)
	}
	return nil
}

// check reports why a complete read yielded no usable symbols, if it did.
func (b *builder) check() error {
	if b.parsed == 0 {
		return fmt.Errorf("no well-formed symbol line (%d malformed)", b.skipped)
	}
	if b.nonzero == 0 {
		return ErrAddressesHidden
	}
	return nil
}

// fields splits line at blanks into at most len(dst) fields. It reports
// false when there are more.
func fields(line []byte, dst [][]byte) (int, bool) {
	n := 0
	for i := 0; i < len(line); {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		j := i
		for j < len(line) && !isSpace(line[j]) {
			j++
		}
		if j > i {
			if n == len(dst) {
				return n, false
			}
			dst[n] = line[i:j]
			n++
		}
		i = j
	}
	return n, true
}

// line parses one line. Blank lines are ignored; other lines that do not
// have the form "ADDR TYPE NAME" or "ADDR TYPE NAME [MODULE]" are counted
// as skipped.
func (b *builder) line(line []byte) {
	var f [4][]byte
	n, ok := fields(line, f[:])
	if ok && n == 0 {
		return
	}
	if !ok || n < 3 || len(f[1]) != 1 {
		b.skipped++
		return
	}
	addr, ok := parseHex(f[0])
	if !ok {
		b.skipped++
		return
	}
	var mod []byte
	if n == 4 {
		m := f[3]
		if len(m) < 3 || m[0] != '[' || m[len(m)-1] != ']' {
			b.skipped++
			return
		}
		mod = m[1 : len(m)-1]
	}
	b.parsed++
	if addr != 0 {
		b.nonzero++
	}
	typ := f[1][0]
	if (typ != 't' && typ != 'T') || addr == 0 || (mod == nil && b.modulesOnly) {
		return
	}
	name := f[2]
	p := &b.vmlinux
	var mi uint32
	if mod != nil {
		p = &b.modules
		idx, ok := b.modIndex[string(mod)]
		if !ok {
			if b.modIndex == nil {
				b.modIndex = make(map[string]uint32)
			}
			idx = uint32(len(b.modNames))
			b.modNames = append(b.modNames, string(mod))
			b.modIndex[string(mod)] = idx
		}
		mi = idx
	}
	if uint64(len(p.names))+uint64(len(name)) > 1<<32-1 {
		b.skipped++
		return
	}
	p.entries = append(p.entries, entry{
		addr:    addr,
		nameOff: uint32(len(p.names)),
		nameLen: uint32(len(name)),
		mod:     mi,
		global:  typ == 'T',
	})
	p.names = append(p.names, name...)
}

// finish sorts the part's symbols by address, keeps one symbol per address
// (the first listed, unless a later one is global and it is not) and packs
// them into a symtab. With withMods, the symtab's mods hold each symbol's
// module name index.
func (p *part) finish(withMods bool) *symtab {
	// kallsyms lists most symbols in address order already; a stable sort
	// keeps the listed order among equal addresses.
	slices.SortStableFunc(p.entries, func(a, b entry) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		}
		return 0
	})
	kept := p.entries[:0]
	for _, e := range p.entries {
		if n := len(kept); n > 0 && kept[n-1].addr == e.addr {
			if e.global && !kept[n-1].global {
				kept[n-1] = e
			}
			continue
		}
		kept = append(kept, e)
	}
	s := &symtab{
		addrs:    make([]uint64, len(kept)),
		nameOffs: make([]uint32, len(kept)),
	}
	size := 0
	for _, e := range kept {
		size += int(e.nameLen)
	}
	var names strings.Builder
	names.Grow(size)
	for i, e := range kept {
		s.addrs[i] = e.addr
		s.nameOffs[i] = uint32(names.Len())
		names.Write(p.names[e.nameOff : e.nameOff+e.nameLen])
	}
	s.names = names.String()
	if withMods {
		s.mods = make([]uint32, len(kept))
		for i, e := range kept {
			s.mods[i] = e.mod
		}
	}
	*p = part{}
	return s
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// parseHex parses 1 to 16 hex digits.
func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}
