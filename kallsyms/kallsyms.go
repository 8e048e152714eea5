// Package kallsyms names kernel addresses from the kernel's symbol list,
// /proc/kallsyms, and reads the kernel's build ID from sysfs.
//
// A Table keeps only text symbols (types t and T), in two parts: the
// symbols of the kernel image (vmlinux) and those of loaded modules
// (including pseudo-modules such as [bpf] and [__builtin__ftrace]). The
// parts are held separately so that the module part can be replaced when
// modules come and go, without reloading the kernel image's symbols.
//
// All paths hang off the proc and sys roots given in Options, so tests can
// point them at fixture trees.
package kallsyms

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"
)

// MaxSymbolSize bounds the offset of an address from the start of the
// symbol that names it. kallsyms lists where symbols start but not where
// they end, so without a bound an address in a gap (after _etext, between
// modules, past the last module) would be named after whatever symbol
// precedes it. No kernel function comes close to this size.
const MaxSymbolSize = 64 << 10

// maxModules is the number of distinct module names a table can hold, the
// range of its uint16 module index.
const maxModules = 1 << 16

// Options says where Load finds the kernel's files.
type Options struct {
	// ProcRoot is the proc file system's mount point; "" means "/proc".
	ProcRoot string
	// SysRoot is the sys file system's mount point; "" means "/sys".
	SysRoot string
}

func (o Options) procRoot() string {
	if o.ProcRoot == "" {
		return "/proc"
	}
	return o.ProcRoot
}

func (o Options) sysRoot() string {
	if o.SysRoot == "" {
		return "/sys"
	}
	return o.SysRoot
}

// Symbol is the kernel symbol that contains an address.
type Symbol struct {
	// Name is the symbol's name.
	Name string
	// Offset is the address minus the symbol's start.
	Offset uint64
	// Module is the name of the module that holds the symbol, "" for the
	// kernel image.
	Module string
}

// Table is an immutable, compact table of kernel text symbols. It is safe
// for concurrent use.
type Table struct {
	vmlinux *symtab
	modules *symtab
	buildID string
	skipped int
	sysRoot string
}

// ErrAddressesHidden is returned (wrapped) by Load and Parse when every
// address in the symbol list is zero: the kernel hides them from this
// reader because of kernel.kptr_restrict or missing privileges.
var ErrAddressesHidden = errors.New("all kernel symbol addresses are zero: kernel.kptr_restrict hides them (run as root with CAP_SYSLOG, or lower kernel.kptr_restrict)")

// Load reads the kernel's text symbols from ProcRoot/kallsyms and the
// kernel's GNU build ID from SysRoot/kernel/notes. A missing or unreadable
// notes file is not an error: BuildID then returns "".
func Load(opts Options) (*Table, error) {
	path := filepath.Join(opts.procRoot(), "kallsyms")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	defer f.Close()
	t, err := parse(f)
	if err != nil {
		return nil, fmt.Errorf("kallsyms: %s: %w", path, err)
	}
	t.sysRoot = opts.sysRoot()
	if notes, err := os.ReadFile(filepath.Join(t.sysRoot, "kernel", "notes")); err == nil {
		t.buildID = BuildIDFromNotes(notes)
	}
	return t, nil
}

// Parse reads a symbol list in the format of /proc/kallsyms:
//
//	ffffffff81000000 T _stext
//	ffffffffc0a01000 t foo	[mod]
//
// Only text symbols (types t and T) at nonzero addresses are kept.
// Malformed lines are skipped and counted (see Table.Skipped). Parse fails
// only when reading fails, when no line at all is well formed, or when all
// addresses are zero (ErrAddressesHidden).
func Parse(r io.Reader) (*Table, error) {
	t, err := parse(r)
	if err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	return t, nil
}

func parse(r io.Reader) (*Table, error) {
	var b builder
	if err := b.read(r); err != nil {
		return nil, err
	}
	if b.parsed == 0 {
		return nil, fmt.Errorf("no well-formed symbol line (%d malformed)", b.skipped)
	}
	if b.nonzero == 0 {
		return nil, ErrAddressesHidden
	}
	return &Table{
		vmlinux: b.vmlinux.finish(nil),
		modules: b.modules.finish(b.modNames),
		skipped: b.skipped,
	}, nil
}

// Lookup returns the symbol that contains addr. It reports false when addr
// lies before the first symbol, at least MaxSymbolSize past the start of
// the symbol before it, or in no known part of the kernel.
func (t *Table) Lookup(addr uint64) (Symbol, bool) {
	k, kok := t.vmlinux.lookup(addr)
	m, mok := t.modules.lookup(addr)
	// The kernel image and modules occupy separate address ranges; should
	// both parts claim addr, the symbol that starts closer to it wins.
	if mok && (!kok || m.Offset < k.Offset) {
		return m, true
	}
	return k, kok
}

// BuildID returns the kernel's GNU build ID in lower-case hex, or "" when
// it is unknown.
func (t *Table) BuildID() string { return t.buildID }

// Len returns the number of symbols in the table.
func (t *Table) Len() int { return t.vmlinux.len() + t.modules.len() }

// Skipped returns the number of malformed lines that were skipped while
// parsing.
func (t *Table) Skipped() int { return t.skipped }

// Bytes returns approximately how many heap bytes the table holds.
func (t *Table) Bytes() int {
	return int(unsafe.Sizeof(*t)) + len(t.buildID) + t.vmlinux.bytes() + t.modules.bytes()
}

// Modules returns the names of the modules that have symbols in the table,
// in the order they first appear.
func (t *Table) Modules() []string { return slices.Clone(t.modules.modNames) }

// ModuleBuildID returns the GNU build ID of a loaded module in lower-case
// hex, read from SysRoot/module/NAME/notes/.note.gnu.build-id. It returns
// "" and no error when the module has no build ID note (or is a
// pseudo-module such as bpf), and an error for tables not made by Load.
func (t *Table) ModuleBuildID(module string) (string, error) {
	if t.sysRoot == "" {
		return "", errors.New("kallsyms: module build IDs need a table made by Load")
	}
	if module == "" || module == "." || module == ".." || strings.ContainsAny(module, "/\x00") {
		return "", fmt.Errorf("kallsyms: invalid module name %q", module)
	}
	path := filepath.Join(t.sysRoot, "module", module, "notes", ".note.gnu.build-id")
	notes, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("kallsyms: module %s build ID: %w", module, err)
	}
	return BuildIDFromNotes(notes), nil
}

// symtab is one sorted part of a Table. Symbol i starts at addrs[i]; its
// name is names[nameOffs[i]:nameOffs[i+1]] (or up to the end of names for
// the last); it belongs to module modNames[mods[i]] when mods is not nil.
type symtab struct {
	addrs    []uint64
	nameOffs []uint32
	names    string
	mods     []uint16
	modNames []string
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
	n := int(unsafe.Sizeof(*s)) + cap(s.addrs)*8 + cap(s.nameOffs)*4 + len(s.names) + cap(s.mods)*2
	for _, m := range s.modNames {
		n += int(unsafe.Sizeof(m)) + len(m)
	}
	return n
}

func (s *symtab) name(i int) string {
	end := uint32(len(s.names))
	if i+1 < len(s.nameOffs) {
		end = s.nameOffs[i+1]
	}
	return s.names[s.nameOffs[i]:end]
}

func (s *symtab) lookup(addr uint64) (Symbol, bool) {
	if s == nil || len(s.addrs) == 0 || addr < s.addrs[0] || addr-s.addrs[len(s.addrs)-1] >= MaxSymbolSize && addr > s.addrs[len(s.addrs)-1] {
		return Symbol{}, false
	}
	// Find the last symbol starting at or before addr.
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
	if i < 0 {
		return Symbol{}, false
	}
	off := addr - s.addrs[i]
	if off >= MaxSymbolSize {
		return Symbol{}, false
	}
	sym := Symbol{Name: s.name(i), Offset: off}
	if s.mods != nil {
		sym.Module = s.modNames[s.mods[i]]
	}
	return sym, true
}

// builder collects the symbols of one kallsyms text.
type builder struct {
	vmlinux, modules part
	modNames         []string
	modIndex         map[string]uint16
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
	mod     uint16
	global  bool // type T rather than t
}

// maxLine bounds the length of a line; longer ones are skipped as
// malformed. The kernel limits symbol names to a few hundred bytes.
const maxLine = 4096

func (b *builder) read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Skip the rest of an overlong line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			b.skipped++
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read symbols: %w", err)
			}
			continue
		}
		if len(line) > 0 {
			if len(line) > maxLine {
				b.skipped++
			} else {
				b.line(line)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read symbols: %w", err)
		}
	}
}

// line parses one line. Blank lines are ignored; other lines that do not
// have the form "ADDR TYPE NAME" or "ADDR TYPE NAME [MODULE]" are counted
// as skipped.
func (b *builder) line(line []byte) {
	var fields [5][]byte
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
			if n == len(fields) {
				b.skipped++
				return
			}
			fields[n] = line[i:j]
			n++
		}
		i = j
	}
	if n == 0 {
		return
	}
	if n < 3 || n > 4 || len(fields[1]) != 1 {
		b.skipped++
		return
	}
	addr, ok := parseHex(fields[0])
	if !ok {
		b.skipped++
		return
	}
	var mod []byte
	if n == 4 {
		m := fields[3]
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
	typ := fields[1][0]
	if (typ != 't' && typ != 'T') || addr == 0 {
		return
	}
	name := fields[2]
	p := &b.vmlinux
	var mi uint16
	if mod != nil {
		p = &b.modules
		idx, ok := b.modIndex[string(mod)]
		if !ok {
			if len(b.modNames) >= maxModules {
				b.skipped++
				return
			}
			if b.modIndex == nil {
				b.modIndex = make(map[string]uint16)
			}
			idx = uint16(len(b.modNames))
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
// them into a symtab. modNames is nil for the kernel image's part.
func (p *part) finish(modNames []string) *symtab {
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
	if modNames != nil {
		s.mods = make([]uint16, len(kept))
		for i, e := range kept {
			s.mods[i] = e.mod
		}
		// Keep only the names of modules that still have symbols.
		used := make([]bool, len(modNames))
		for _, m := range s.mods {
			used[m] = true
		}
		remap := make([]uint16, len(modNames))
		for i, name := range modNames {
			if used[i] {
				remap[i] = uint16(len(s.modNames))
				s.modNames = append(s.modNames, name)
			}
		}
		for i, m := range s.mods {
			s.mods[i] = remap[m]
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
