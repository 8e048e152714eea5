package symbolizer

import (
	"runtime"

	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/gopclntab"
	"github.com/stackline-dev/stackline/trace"
)

// FileInfo identifies an ELF file beyond its FileID and says where its
// names came from.
type FileInfo struct {
	// GNUBuildID is the .note.gnu.build-id in lower-case hex, "" if absent.
	GNUBuildID string
	// GoBuildID is the Go toolchain's build ID, "" if absent.
	GoBuildID string
	// IsGo reports whether the file was built by the Go toolchain.
	IsGo bool
	// DebugFile is the path, relative to Source.Root, of the separate
	// debug file whose symbols or lines were used, "" if none.
	DebugFile string
	// MiniDebugInfo reports whether symbols came from .gnu_debugdata.
	MiniDebugInfo bool
	// LineInfo reports whether the table holds DWARF line information.
	LineInfo bool
}

// File is the immutable, compact symbol table of one ELF file, with the
// symbols of its debug files, its Go function table and, optionally, its
// DWARF line table. It is safe for concurrent use.
type File struct {
	info  FileInfo
	mode  DemangleMode
	loads []segment

	// Symbol i covers [addrs[i], addrs[i]+extents[i]); its raw name is
	// names[nameOffs[i]:nameOffs[i+1]], or up to the end of names for the
	// last symbol.
	addrs    []uint64
	extents  []uint32
	nameOffs []uint32
	names    string

	goTab *goTable   // Go functions, nil for other files
	lines *lineTable // DWARF line table, nil without one
}

// segment is a PT_LOAD program header: the file bytes [off, off+filesz)
// are mapped at vaddr.
type segment struct {
	off, filesz, vaddr uint64
	exec               bool
}

// Limits that keep a hostile file from making Parse allocate without
// bound. Real symbol and string tables are far smaller.
const (
	maxNoteSize      = 1 << 16
	maxNameLen       = 1 << 16
	maxDebuglinkSize = 1 << 12
)

// errSectionTooLarge says a section exceeds Options.MaxSectionBytes.
var errSectionTooLarge = errors.New("section too large")

// Parse reads the tables of the ELF file r alone, without looking for
// separate debug files: symbols from .symtab, .dynsym and MiniDebugInfo
// (functions, and untyped or indirect-function symbols with a nonzero
// value, in executable sections), Go functions from .gopclntab and, when
// opts.LineInfo is set, DWARF line tables. An ELF file without symbols is
// not an error; its table is empty. The cache fields of opts are ignored.
func Parse(r io.ReaderAt, opts Options) (*File, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	l := &loader{opts: opts, ctr: new(counters)}
	f, err := l.parse(r)
	if err != nil {
		return nil, fmt.Errorf("symbolizer: %w", err)
	}
	return f, nil
}

// Load opens the file src describes and reads its tables as Parse does,
// adding those of its separate debug file, found under src.Root by GNU
// build ID (usr/lib/debug/.build-id/xx/rest.debug) or by .gnu_debuglink
// (next to src.Path, in .debug/ there, or under usr/lib/debug; the debug
// file's CRC must match). The cache fields of opts are ignored.
func Load(src Source, opts Options) (*File, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	l := &loader{opts: opts, ctr: new(counters)}
	return l.load(src)
}

// loader reads one file and its debug files.
type loader struct {
	opts Options
	ctr  *counters
	root *os.Root // where debug files are looked up; nil: nowhere
	path string   // the file's path as its process sees it

	opened bool // the file itself was opened
	// file is the mapped file being parsed, when it is a real file: large
	// read-only sections are mapped from it instead of read into the heap.
	file *os.File
}

// load opens src and parses it.
func (l *loader) load(src Source) (*File, error) {
	if src.Open == nil {
		return nil, errors.New("symbolizer: no way to open the file")
	}
	fh, err := src.Open()
	if err != nil {
		return nil, fmt.Errorf("symbolizer: open: %w", err)
	}
	if fh == nil {
		return nil, errors.New("symbolizer: open returned no file")
	}
	defer fh.Close()
	l.opened = true
	if root, err := src.openRoot(); err == nil {
		defer root.Close()
		l.root = root
	}
	l.path = src.Path
	l.file = fh
	f, err := l.parse(fh)
	if err != nil {
		return nil, fmt.Errorf("symbolizer: %s: %w", fh.Name(), err)
	}
	return f, nil
}

func (l *loader) parse(r io.ReaderAt) (*File, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("not a readable ELF file: %w", err)
	}
	f := &File{mode: l.opts.Demangle}
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		f.loads = append(f.loads, segment{off: p.Off, filesz: p.Filesz, vaddr: p.Vaddr, exec: p.Flags&elf.PF_X != 0})
	}
	f.info = fileInfo(ef)

	b := tableBuilder{limit: uint64(l.opts.MaxSectionBytes)}
	hasSymtab, err := l.addTables(&b, ef)
	if err != nil {
		return nil, err
	}

	if sec := ef.Section(".gopclntab"); sec != nil {
		gt, err := l.goTable(ef, sec)
		if err == nil {
			f.goTab = gt
			f.info.IsGo = true
		} else if errors.Is(err, errSectionTooLarge) {
			l.ctr.sectionsSkipped.Add(1)
		}
	}

	_, mainLines := dwarfSize(ef)
	wantLines := l.opts.LineInfo && f.goTab == nil
	var dbg *elf.File
	if l.root != nil && (!hasSymtab || wantLines && !mainLines) {
		var dfh *os.File
		dfh, dbg, f.info.DebugFile = findDebugFile(l.root, l.path, ef, f.info.GNUBuildID, l.ctr)
		if dfh != nil {
			defer dfh.Close()
			l.ctr.debugFiles.Add(1)
			if ok, err := l.addTables(&b, dbg); err == nil && ok {
				hasSymtab = true
			}
		}
	}
	if !hasSymtab {
		if sec := ef.Section(".gnu_debugdata"); sec != nil {
			if mini, err := miniDebugInfo(sec); err == nil {
				if ok, err := l.addTables(&b, mini); err == nil && ok {
					hasSymtab = true
					f.info.MiniDebugInfo = true
					l.ctr.miniDebugInfo.Add(1)
				}
			}
		}
	}

	if wantLines {
		src := ef
		if dbg != nil {
			if _, ok := dwarfSize(dbg); ok {
				src = dbg
			}
		}
		lt, err := loadLineTable(src, uint64(l.opts.MaxDWARFBytes))
		switch {
		case errors.Is(err, errDWARFTooLarge):
			l.ctr.dwarfSkipped.Add(1)
		case err != nil:
			l.ctr.dwarfErrors.Add(1)
		}
		f.lines = lt
		f.info.LineInfo = lt != nil
	}

	if f.goTab != nil {
		// The Go table names these; the symbols would repeat it.
		b.excludeLo, b.excludeHi = f.goTab.textRange()
	}
	if err := b.build(f); err != nil {
		return nil, err
	}
	return f, nil
}

// addTables adds the symbols of ef's .symtab and .dynsym to b and reports
// whether it had a .symtab. A table over the size limit is skipped.
func (l *loader) addTables(b *tableBuilder, ef *elf.File) (hasSymtab bool, err error) {
	// The ELF specification allows one table of each type; reading only
	// the first also bounds the work a hostile file can ask for.
	for _, typ := range []elf.SectionType{elf.SHT_SYMTAB, elf.SHT_DYNSYM} {
		i := slices.IndexFunc(ef.Sections, func(s *elf.Section) bool { return s.Type == typ })
		if i < 0 {
			continue
		}
		err := b.addSymbols(ef, ef.Sections[i])
		switch {
		case errors.Is(err, errSectionTooLarge):
			l.ctr.sectionsSkipped.Add(1)
			continue
		case err != nil:
			return false, fmt.Errorf("%s: %w", ef.Sections[i].Name, err)
		}
		if typ == elf.SHT_SYMTAB {
			hasSymtab = true
		}
	}
	return hasSymtab, nil
}

// goTable reads the .gopclntab section and the inline trees.
func (l *loader) goTable(ef *elf.File, sec *elf.Section) (*goTable, error) {
	if sec.Type == elf.SHT_NOBITS || compressed(sec) {
		return nil, errors.New("gopclntab: no data")
	}
	if sec.Size > uint64(l.opts.MaxSectionBytes) {
		return nil, errSectionTooLarge
	}
	// The table is large (megabytes for big Go binaries) and read sparsely:
	// map it from the file when possible, so it costs reclaimable page
	// cache touched on demand rather than heap.
	data, mapping, err := gopclntab.MapSection(l.file, sec)
	if err != nil {
		if data, err = sec.Data(); err != nil {
			return nil, fmt.Errorf("gopclntab: %w", err)
		}
	}
	gt, err := parseGoTable(data, ef.ByteOrder)
	if err != nil {
		if mapping != nil {
			unix.Munmap(mapping)
		}
		return nil, err
	}
	if mapping != nil {
		gt.mapped = true
		// Unmapped once the table is unreachable: no lookup can be under
		// way then, and lookups return copies of the names.
		runtime.AddCleanup(gt, func(m []byte) { unix.Munmap(m) }, mapping)
	}
	// Without the moduledata, function entries may be misplaced when the
	// header's text address is unrelocated, and frames are named by their
	// outermost function only.
	md, _ := gt.tab.FindModuledata(ef, sec.Addr)
	gt.tab.ResolveText(ef, md)
	gt.loadInlineTrees(ef, md)
	if mapping != nil {
		// Loading touched every function record. Those are clean file
		// pages: drop them from this process (a later lookup faults in
		// the one page it reads, from the page cache) and ask for no
		// read-around, so the table's RSS is the pages lookups use.
		unix.Madvise(mapping, unix.MADV_DONTNEED)
		unix.Madvise(mapping, unix.MADV_RANDOM)
	}
	return gt, nil
}

// Info returns the file's build IDs and where its names came from.
func (f *File) Info() FileInfo { return f.info }

// Len returns the number of symbols in the table, not counting the
// functions of the Go table.
func (f *File) Len() int { return len(f.addrs) }

// Lookup appends to buf the source positions of the instruction at
// fileOffset and returns the extended slice: one trace.Line per function,
// innermost inlined call first. It returns buf unchanged when no loadable
// segment maps fileOffset or nothing names its address.
//
// Function is the name demangled as the table's DemangleMode says;
// SystemName is the raw name when it differs. File and Line come from the
// Go table or the DWARF line table, when present.
func (f *File) Lookup(fileOffset uint64, buf []trace.Line) []trace.Line {
	vaddr, ok := f.vaddr(fileOffset)
	if !ok {
		return buf
	}
	if f.goTab != nil {
		if out := f.goTab.lookup(vaddr, buf); len(out) > len(buf) {
			return out
		}
	}
	// Find the last symbol starting at or before vaddr.
	lo, hi := 0, len(f.addrs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if f.addrs[m] <= vaddr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo - 1
	if i < 0 || vaddr-f.addrs[i] >= uint64(f.extents[i]) {
		return buf
	}
	// Names are copied out: callers keep them long after the table is
	// evicted, and a substring would keep the whole table alive.
	raw := strings.Clone(f.name(i))
	line := trace.Line{Function: demangleName(raw, f.mode)}
	if line.Function != raw {
		line.SystemName = raw
	}
	if file, n, ok := f.lines.lookup(vaddr); ok {
		line.File, line.Line = strings.Clone(file), n
	}
	return append(buf, line)
}

// Bytes returns approximately how many heap bytes the table holds.
func (f *File) Bytes() int {
	n := int(unsafe.Sizeof(*f)) +
		len(f.info.GNUBuildID) + len(f.info.GoBuildID) + len(f.info.DebugFile) +
		cap(f.loads)*int(unsafe.Sizeof(segment{})) +
		cap(f.addrs)*8 + cap(f.extents)*4 + cap(f.nameOffs)*4 + len(f.names)
	if f.goTab != nil {
		n += f.goTab.bytes()
	}
	return n + f.lines.bytes()
}

func (f *File) name(i int) string {
	end := uint32(len(f.names))
	if i+1 < len(f.nameOffs) {
		end = f.nameOffs[i+1]
	}
	return f.names[f.nameOffs[i]:end]
}

// vaddr translates a file offset to a virtual address through the PT_LOAD
// segment whose file bytes contain it, preferring executable segments.
func (f *File) vaddr(off uint64) (uint64, bool) {
	var found *segment
	for i := range f.loads {
		s := &f.loads[i]
		if off >= s.off && off-s.off < s.filesz {
			if s.exec {
				found = s
				break
			}
			if found == nil {
				found = s
			}
		}
	}
	if found == nil {
		return 0, false
	}
	return off - found.off + found.vaddr, true
}

// candidate is a symbol read from a symbol table, before deduplication.
type candidate struct {
	value, size uint64
	secEnd      uint64 // end address of the symbol's section
	nameOff     uint32 // into the tableBuilder's strtabs[strtab]
	nameLen     uint32
	strtab      uint8
	rank        uint8 // higher is preferred among symbols at one address
	underscores uint8 // leading underscores, fewer is preferred
}

// Ranking bits of candidate.rank.
const (
	rankFunc   = 1 << 0
	rankSymtab = 1 << 1
	rankGlobal = 1 << 2
)

type tableBuilder struct {
	cands   []candidate
	strtabs [][]byte
	limit   uint64 // largest table read

	// Symbols in [excludeLo, excludeHi) are left out.
	excludeLo, excludeHi uint64
}

// addSymbols reads the symbols of one SHT_SYMTAB or SHT_DYNSYM section.
func (b *tableBuilder) addSymbols(ef *elf.File, sec *elf.Section) error {
	if sec.Type == elf.SHT_NOBITS {
		return nil
	}
	if sec.Size > b.limit {
		return fmt.Errorf("%w: symbol table of %d bytes", errSectionTooLarge, sec.Size)
	}
	if int(sec.Link) >= len(ef.Sections) || sec.Link == 0 {
		return fmt.Errorf("invalid string table index %d", sec.Link)
	}
	strSec := ef.Sections[sec.Link]
	if strSec.Type != elf.SHT_STRTAB {
		return fmt.Errorf("linked section %d is not a string table", sec.Link)
	}
	if strSec.Size > b.limit {
		return fmt.Errorf("%w: string table of %d bytes", errSectionTooLarge, strSec.Size)
	}
	// Symbol and string tables are never compressed in practice, and
	// decompressing lets a small file claim a huge table.
	if compressed(sec) || compressed(strSec) {
		return errors.New("compressed symbol or string table")
	}
	if len(b.strtabs) >= math.MaxUint8 {
		return errors.New("too many symbol tables")
	}
	data, err := sec.Data()
	if err != nil {
		return fmt.Errorf("read symbols: %w", err)
	}
	strs, err := strSec.Data()
	if err != nil {
		return fmt.Errorf("read string table %s: %w", strSec.Name, err)
	}
	strtab := uint8(len(b.strtabs))
	b.strtabs = append(b.strtabs, strs)

	var entSize int
	switch ef.Class {
	case elf.ELFCLASS64:
		entSize = elf.Sym64Size
	case elf.ELFCLASS32:
		entSize = elf.Sym32Size
	default:
		return fmt.Errorf("unsupported ELF class %v", ef.Class)
	}
	bo := ef.ByteOrder
	// Entry 0 is the reserved undefined symbol.
	for off := entSize; off+entSize <= len(data); off += entSize {
		e := data[off : off+entSize]
		var (
			name        uint32
			info        byte
			shndx       uint16
			value, size uint64
		)
		if ef.Class == elf.ELFCLASS64 {
			name = bo.Uint32(e[0:4])
			info = e[4]
			shndx = bo.Uint16(e[6:8])
			value = bo.Uint64(e[8:16])
			size = bo.Uint64(e[16:24])
		} else {
			name = bo.Uint32(e[0:4])
			value = uint64(bo.Uint32(e[4:8]))
			size = uint64(bo.Uint32(e[8:12]))
			info = e[12]
			shndx = bo.Uint16(e[14:16])
		}
		typ := elf.SymType(info & 0xf)
		bind := elf.SymBind(info >> 4)
		var rank uint8
		switch typ {
		case elf.STT_FUNC:
			rank |= rankFunc
		case elf.STT_NOTYPE, elf.STT_GNU_IFUNC:
			if value == 0 {
				continue
			}
		default:
			continue
		}
		// Only symbols defined in ordinary sections (not undefined,
		// absolute or common) that hold code.
		if shndx == uint16(elf.SHN_UNDEF) || shndx >= uint16(elf.SHN_LORESERVE) || int(shndx) >= len(ef.Sections) {
			continue
		}
		s := ef.Sections[shndx]
		if s.Flags&elf.SHF_EXECINSTR == 0 || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		nameLen, ok := cstringLen(strs, name)
		if !ok || nameLen == 0 || nameLen > maxNameLen {
			continue
		}
		n := strs[name : name+nameLen]
		// Skip mapping symbols ($x, $d, $t on ARM) and assembler-local
		// labels, which name no function.
		if n[0] == '$' || bytes.HasPrefix(n, []byte(".L")) {
			continue
		}
		if bind != elf.STB_LOCAL {
			rank |= rankGlobal
		}
		if sec.Type == elf.SHT_SYMTAB {
			rank |= rankSymtab
		}
		underscores := 0
		for underscores < len(n) && underscores < math.MaxUint8 && n[underscores] == '_' {
			underscores++
		}
		secEnd := s.Addr + s.Size
		if secEnd < s.Addr {
			secEnd = math.MaxUint64
		}
		b.cands = append(b.cands, candidate{
			value:       value,
			size:        size,
			secEnd:      secEnd,
			nameOff:     name,
			nameLen:     nameLen,
			strtab:      strtab,
			rank:        rank,
			underscores: uint8(underscores),
		})
	}
	return nil
}

// compressed reports whether debug/elf would decompress the section.
func compressed(s *elf.Section) bool { return gopclntab.Compressed(s) }

// cstringLen returns the length of the NUL-terminated string at off.
func cstringLen(strs []byte, off uint32) (uint32, bool) {
	if uint64(off) >= uint64(len(strs)) {
		return 0, false
	}
	n := bytes.IndexByte(strs[off:], 0)
	if n < 0 {
		return 0, false
	}
	return uint32(n), true
}

// build sorts and deduplicates the candidates and packs them into f.
func (b *tableBuilder) build(f *File) error {
	// By address; at one address the preferred symbol first: global over
	// local, .symtab over .dynsym, functions over other types, then fewer
	// leading underscores ("malloc" over "__libc_malloc"), then the order
	// the tables list them in.
	slices.SortStableFunc(b.cands, func(x, y candidate) int {
		switch {
		case x.value != y.value:
			if x.value < y.value {
				return -1
			}
			return 1
		case x.rank != y.rank:
			return int(y.rank) - int(x.rank)
		}
		return int(x.underscores) - int(y.underscores)
	})
	kept := b.cands[:0]
	for _, c := range b.cands {
		if c.value >= b.excludeLo && c.value < b.excludeHi {
			continue
		}
		if n := len(kept); n > 0 && kept[n-1].value == c.value {
			// An alias: keep the preferred name, but the largest size,
			// since an untyped label may alias a sized function.
			kept[n-1].size = max(kept[n-1].size, c.size)
			continue
		}
		kept = append(kept, c)
	}
	size := 0
	for _, c := range kept {
		size += int(c.nameLen)
	}
	if size > math.MaxUint32 {
		return fmt.Errorf("symbol names of %d bytes are too large", size)
	}
	f.addrs = make([]uint64, len(kept))
	f.extents = make([]uint32, len(kept))
	f.nameOffs = make([]uint32, len(kept))
	var names strings.Builder
	names.Grow(size)
	for i, c := range kept {
		f.addrs[i] = c.value
		f.nameOffs[i] = uint32(names.Len())
		names.Write(b.strtabs[c.strtab][c.nameOff : c.nameOff+c.nameLen])
		// A sized symbol covers its size. One of size zero covers up to
		// the next symbol but not past the end of its section.
		extent := c.size
		if extent == 0 {
			end := c.secEnd
			if i+1 < len(kept) {
				end = min(end, kept[i+1].value)
			}
			if end > c.value {
				extent = end - c.value
			}
		}
		f.extents[i] = uint32(min(extent, math.MaxUint32))
	}
	f.names = names.String()
	*b = tableBuilder{}
	return nil
}

// ELF note types and names of the build IDs.
const (
	ntGNUBuildID = 3
	ntGoBuildID  = 4
)

// fileInfo reads the build IDs from the file's note sections (or, when it
// has no section headers, its PT_NOTE segments) and decides whether the Go
// toolchain built it.
func fileInfo(ef *elf.File) FileInfo {
	var info FileInfo
	note := func(r io.Reader, size, align uint64) {
		if size > maxNoteSize {
			return
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(r, data); err != nil {
			return
		}
		eachNote(data, ef.ByteOrder, align, func(name string, typ uint32, desc []byte) {
			switch {
			case name == "GNU" && typ == ntGNUBuildID && info.GNUBuildID == "" && len(desc) > 0:
				info.GNUBuildID = hex.EncodeToString(desc)
			case name == "Go" && typ == ntGoBuildID && info.GoBuildID == "":
				info.GoBuildID = strings.TrimRight(string(desc), "\x00")
			}
		})
	}
	hasNoteSections := false
	for _, s := range ef.Sections {
		switch s.Name {
		case ".gopclntab", ".go.buildinfo":
			info.IsGo = true
		}
		if s.Type == elf.SHT_NOTE {
			hasNoteSections = true
			note(s.Open(), s.Size, s.Addralign)
		}
	}
	if !hasNoteSections {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_NOTE {
				note(p.Open(), p.Filesz, p.Align)
			}
		}
	}
	if info.GoBuildID != "" {
		info.IsGo = true
	}
	return info
}

// eachNote calls fn for each well-formed note in data, stopping at the
// first malformed one. Notes are aligned to 4 bytes, or 8 when the section
// or segment says so.
func eachNote(data []byte, bo binary.ByteOrder, align uint64, fn func(name string, typ uint32, desc []byte)) {
	if align != 8 {
		align = 4
	}
	pad := func(n uint64) uint64 { return (n + align - 1) &^ (align - 1) }
	for uint64(len(data)) >= 12 {
		namesz := uint64(bo.Uint32(data[0:4]))
		descsz := uint64(bo.Uint32(data[4:8]))
		typ := bo.Uint32(data[8:12])
		// The header is 12 bytes; 8-byte aligned notes pad the name from
		// the start of the header.
		nameStart := uint64(12)
		descStart := pad(nameStart + namesz)
		end := pad(descStart + descsz)
		if descStart+descsz > uint64(len(data)) {
			return
		}
		name := strings.TrimRight(string(data[nameStart:nameStart+namesz]), "\x00")
		fn(name, typ, data[descStart:descStart+descsz])
		if end > uint64(len(data)) {
			return
		}
		data = data[end:]
	}
}
