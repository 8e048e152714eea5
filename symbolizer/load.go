package symbolizer

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/gopclntab"
	"github.com/stackline-dev/stackline/internal/keysort"
)

// Limits that keep a hostile file from making Parse allocate without
// bound. Real symbol and string tables are far smaller.
const maxNameLen = 1 << 16

// errSectionTooLarge says a section exceeds Options.MaxSectionBytes.
var errSectionTooLarge = errors.New("section too large")

// Parse reads the tables of the ELF file r alone, without looking for
// separate debug files: symbols from .symtab, .dynsym and MiniDebugInfo
// (functions, and untyped or indirect-function symbols with a nonzero
// value, in executable sections), Go functions from .gopclntab and, when
// opts.LineInfo is set, DWARF line tables. An ELF file without symbols is
// not an error; its table is empty. The cache fields of opts are ignored.
//
// When r is an *os.File, the string tables are mapped from it, as Load
// maps them, and the table stays valid after r is closed; otherwise the
// names the table keeps are copied into the heap.
func Parse(r io.ReaderAt, opts Options) (*File, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	ef, err := elffile.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("symbolizer: %w", err)
	}
	l := &loader{opts: opts, ctr: new(counters)}
	l.fh, _ = r.(*os.File)
	f, err := l.parse(ef)
	if err != nil {
		return nil, fmt.Errorf("symbolizer: %w", err)
	}
	return f, nil
}

// Load opens the file src describes and reads its tables as Read does,
// with its debug file found under src.Root by elffile.File.Debug (build ID,
// then .gnu_debuglink with its CRC checked). The cache fields of opts are
// ignored.
func Load(src elffile.Source, opts Options) (*File, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	f, _, err := (&loader{opts: opts, ctr: new(counters)}).load(src)
	return f, err
}

// Read reads the tables of the opened file ef as Parse does, adding those
// of its separate debug file (elffile.File.Debug) when ef lacks a .symtab,
// or lacks DWARF lines that opts asks for. The cache fields of opts are
// ignored; ef stays open.
func Read(ef *elffile.File, opts Options) (*File, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	f, err := (&loader{opts: opts, ctr: new(counters)}).parse(ef)
	if err != nil {
		return nil, fmt.Errorf("symbolizer: %s: %w", ef.Name(), err)
	}
	return f, nil
}

// loader reads one file and its debug file.
type loader struct {
	opts Options
	ctr  *counters
	// fh, when not nil, is the open file to map the tables of a File
	// made by elffile.NewReader from.
	fh *os.File
	// scratch, when not nil, lends the build its buffers, and gets them
	// back, grown as the build grew them.
	scratch *scratch
}

// scratch holds the buffers a table build works in, which a Symbolizer
// lends from one load to the next: the candidates and the words their
// sort uses, the .dynsym check's index, and the rows of a line table. A
// large program's build needs megabytes of them and is done with them
// when it returns; a burst of loads (the agent's start) would otherwise
// allocate them afresh for every file, and collect them after.
type scratch struct {
	cands []candidate
	keys  keysort.Buffer
	// starts is the memory of the .dynsym check's address index, words
	// that of its symbols when they are sorted instead.
	starts []int32
	words  []uint64
	// lineRows are the rows of a line table being read (lineCollector).
	lineRows []lineRow
}

// maxScratchBytes bounds the buffers a Symbolizer keeps between loads:
// those of a program with more symbols are dropped after its load. Those
// of the agent's start are about 4.5 MB, node's.
const maxScratchBytes = 16 << 20

// bytes returns the memory the buffers hold.
func (sc *scratch) bytes() int {
	return cap(sc.cands)*int(unsafe.Sizeof(candidate{})) + sc.keys.Bytes() + 4*cap(sc.starts) + 8*cap(sc.words) + cap(sc.lineRows)*int(unsafe.Sizeof(lineRow{}))
}

// osFile returns the open file to map ef's sections from, or nil.
func (l *loader) osFile(ef *elffile.File) *os.File {
	if fh := ef.OSFile(); fh != nil {
		return fh
	}
	return l.fh
}

// load opens src and parses it. opened reports whether the file itself
// could be opened, whatever came after.
func (l *loader) load(src elffile.Source) (f *File, opened bool, err error) {
	if src.Open == nil {
		return nil, false, errors.New("symbolizer: no way to open the file")
	}
	fh, err := src.Open()
	if err != nil {
		return nil, false, fmt.Errorf("symbolizer: open: %w", err)
	}
	if fh == nil {
		return nil, false, errors.New("symbolizer: open returned no file")
	}
	ef, err := elffile.NewFile(fh, src)
	if err != nil {
		fh.Close()
		return nil, true, fmt.Errorf("symbolizer: %s: %w", fh.Name(), err)
	}
	defer ef.Close()
	if f, err = l.parse(ef); err != nil {
		return nil, true, fmt.Errorf("symbolizer: %s: %w", fh.Name(), err)
	}
	return f, true, nil
}

// parse builds the table of ef from its sources, in order of preference.
func (l *loader) parse(ef *elffile.File) (*File, error) {
	ids := ef.BuildIDs()
	f := &File{
		mode:  l.opts.Demangle,
		loads: loadSegments(ef.ELF),
		info:  FileInfo{GNUBuildID: ids.GNU, GoBuildID: ids.Go, IsGo: ef.IsGo()},
	}
	// Without a scratch, the sorts of the build share their words.
	b := tableBuilder{limit: uint64(l.opts.MaxSectionBytes), keys: new(keysort.Buffer)}
	if sc := l.scratch; sc != nil {
		b.cands, b.keys, b.starts, b.words = sc.cands[:0], &sc.keys, sc.starts, sc.words
		defer func() { sc.cands, sc.starts, sc.words = b.cands[:0], b.starts, b.words[:0] }()
	}
	defer b.release()
	l.addGoTable(f, ef)
	if f.goTab != nil {
		// The Go table names these; the symbols would repeat it.
		b.excludeLo, b.excludeHi = f.goTab.textRange()
	}
	hasSymtab, err := l.addTables(&b, ef.ELF, l.osFile(ef))
	if err != nil {
		return nil, err
	}

	_, mainLines := dwarfSize(ef.ELF)
	wantLines := l.opts.LineInfo && f.goTab == nil
	var dbg *elffile.File
	if !hasSymtab || wantLines && !mainLines {
		if dbg = l.debugFile(f, ef); dbg != nil {
			if ok, err := l.addTables(&b, dbg.ELF, dbg.OSFile()); err == nil && ok {
				hasSymtab = true
			}
		}
	}
	if !hasSymtab {
		l.addMiniDebugInfo(&b, f, ef.ELF)
	}
	if wantLines {
		l.addLines(f, ef, dbg)
	}
	if err := b.build(f); err != nil {
		return nil, err
	}
	if len(f.maps) > 0 {
		// Unmapped once the table is unreachable: no lookup can be under
		// way then, and lookups return copies of the names.
		runtime.AddCleanup(f, func(maps [][]byte) { unmap(maps...) }, f.maps)
	}
	return f, nil
}

// loadSegments returns the file's PT_LOAD segments with file bytes.
func loadSegments(ef *elf.File) []segment {
	var loads []segment
	for _, p := range ef.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		loads = append(loads, segment{off: p.Off, filesz: p.Filesz, vaddr: p.Vaddr, exec: p.Flags&elf.PF_X != 0})
	}
	return loads
}

// addTables adds the symbols of ef's .symtab and .dynsym to b and reports
// whether it had a .symtab. A table over the size limit is skipped.
// The tables are mapped from fh when it is not nil.
//
// When ef has both, the .dynsym is deferred (tableBuilder.deferSymbols):
// a linker's .symtab holds every symbol of its .dynsym, which then adds
// nothing to the index, and reading its names is most of the cost of a
// large program's load (node's 75,000 dynamic symbols). The build reads
// it after all only when one of its symbols is not named as well by the
// .symtab.
func (l *loader) addTables(b *tableBuilder, ef *elf.File, fh *os.File) (hasSymtab bool, err error) {
	var tables []*symTable
	defer func() {
		for _, t := range tables {
			t.close()
		}
	}()
	// The ELF specification allows one table of each type; reading only
	// the first also bounds the work a hostile file can ask for.
	var dynsym *symTable
	symtabRead := false
	for _, typ := range []elf.SectionType{elf.SHT_SYMTAB, elf.SHT_DYNSYM} {
		i := slices.IndexFunc(ef.Sections, func(s *elf.Section) bool { return s.Type == typ })
		if i < 0 {
			continue
		}
		t, err := b.openSymbols(ef, fh, ef.Sections[i])
		switch {
		case errors.Is(err, errSectionTooLarge):
			l.ctr.sectionsSkipped.Add(1)
			continue
		case err != nil:
			return false, fmt.Errorf("%s: %w", ef.Sections[i].Name, err)
		}
		switch {
		case t == nil:
		case typ == elf.SHT_DYNSYM && symtabRead:
			dynsym = t
		default:
			tables = append(tables, t)
			symtabRead = typ == elf.SHT_SYMTAB
		}
		if typ == elf.SHT_SYMTAB {
			hasSymtab = true
		}
	}
	if err := b.readSymbols(tables...); err != nil {
		if dynsym != nil {
			dynsym.close()
		}
		return false, err
	}
	if dynsym != nil {
		b.deferSymbols(dynsym)
	}
	return hasSymtab, nil
}

// addGoTable gives f the Go function table of ef, when it has a usable
// one.
func (l *loader) addGoTable(f *File, ef *elffile.File) {
	sec := ef.ELF.Section(".gopclntab")
	if sec == nil {
		return
	}
	gt, err := l.goTable(ef, sec)
	switch {
	case err == nil:
		f.goTab = gt
		f.info.IsGo = true
	case errors.Is(err, errSectionTooLarge):
		l.ctr.sectionsSkipped.Add(1)
	}
}

// goTable reads the .gopclntab section and the inline trees.
func (l *loader) goTable(ef *elffile.File, sec *elf.Section) (*goTable, error) {
	if sec.Type == elf.SHT_NOBITS || compressed(sec) {
		return nil, errors.New("gopclntab: no data")
	}
	if sec.Size > uint64(l.opts.MaxSectionBytes) {
		return nil, errSectionTooLarge
	}
	// The table is large (megabytes for big Go binaries) and read sparsely:
	// map it from the file when possible, so it costs reclaimable page
	// cache touched on demand rather than heap.
	data, mapping, err := sectionData(l.osFile(ef), sec)
	if err != nil {
		return nil, fmt.Errorf("gopclntab: %w", err)
	}
	var gt *goTable
	fault := withFaults(func() {
		if gt, err = parseGoTable(data, ef.ELF.ByteOrder); err != nil {
			return
		}
		// Without the moduledata, function entries may be misplaced when
		// the header's text address is unrelocated, and frames are named
		// by their outermost function only.
		md, _ := gt.tab.FindModuledata(ef.ELF, sec.Addr)
		gt.tab.ResolveText(ef.ELF, md)
		gt.loadInlineTrees(ef.ELF, l.osFile(ef), md)
	})
	if err == nil {
		err = fault
	}
	if err != nil {
		if gt != nil {
			unmap(gt.goFuncMem)
		}
		unmap(mapping)
		return nil, err
	}
	if mapping != nil {
		gt.mapped, gt.tabMem = true, mapping
		// Loading touched every function record: drop those pages, so
		// that the table's RSS is the pages lookups use.
		dropPages(mapping)
	}
	if mapping != nil || gt.goFuncMem != nil {
		// Unmapped once the table is unreachable: no lookup can be under
		// way then, and lookups return copies of the names.
		runtime.AddCleanup(gt, func(m [2][]byte) { unmap(m[:]...) }, [2][]byte{mapping, gt.goFuncMem})
	}
	return gt, nil
}

// debugFile returns ef's separate debug file, or nil, and records in f and
// the counters what was found.
func (l *loader) debugFile(f *File, ef *elffile.File) *elffile.File {
	dbg, err := ef.Debug()
	switch {
	case err == nil:
		f.info.DebugFile = ef.DebugPath()
		l.ctr.debugFiles.Add(1)
		return dbg
	case errors.Is(err, elffile.ErrDebugRejected):
		l.ctr.debugFileErrors.Add(1)
		if errors.Is(err, elffile.ErrCRCMismatch) {
			l.ctr.debuglinkMismatches.Add(1)
		}
	}
	return nil
}

// addMiniDebugInfo adds the symbols of ef's .gnu_debugdata to b.
func (l *loader) addMiniDebugInfo(b *tableBuilder, f *File, ef *elf.File) {
	sec := ef.Section(".gnu_debugdata")
	if sec == nil {
		return
	}
	mini, err := miniDebugInfo(sec)
	if err != nil {
		return
	}
	if ok, err := l.addTables(b, mini, nil); err == nil && ok {
		f.info.MiniDebugInfo = true
		l.ctr.miniDebugInfo.Add(1)
	}
}

// addLines gives f the DWARF line table of dbg, when it has DWARF, else
// of ef.
func (l *loader) addLines(f *File, ef, dbg *elffile.File) {
	src := ef
	if dbg != nil {
		if _, ok := dwarfSize(dbg.ELF); ok {
			src = dbg
		}
	}
	fh := l.osFile(ef)
	if src != ef {
		fh = src.OSFile()
	}
	lt, err := loadLineTable(src.ELF, fh, uint64(l.opts.MaxDWARFBytes), l.scratch)
	switch {
	case errors.Is(err, errDWARFTooLarge):
		l.ctr.dwarfSkipped.Add(1)
	case err != nil:
		l.ctr.dwarfErrors.Add(1)
	}
	f.lines = lt
	f.info.LineInfo = lt != nil
}

// compressed reports whether debug/elf would decompress the section.
func compressed(s *elf.Section) bool { return gopclntab.Compressed(s) }
