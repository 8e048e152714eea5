package symbolizer

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"runtime/debug"
	"slices"
	"strings"
	"unsafe"
)

// lineTable maps addresses to source positions, compactly: row i covers
// [base+addrs[i], base+addrs[i+1]) and says file files[i], line lines[i].
// A row with file noFile ends a sequence: its addresses have no position.
type lineTable struct {
	base     uint64
	addrs    []uint32
	files    []uint32
	lines    []uint32
	nameOffs []uint32 // file k is names[nameOffs[k]:nameOffs[k+1]]
	names    string
}

const noFile = math.MaxUint32

// errDWARFTooLarge says the debug sections exceed Options.MaxDWARFBytes.
var errDWARFTooLarge = errors.New("DWARF sections too large")

// dwarfSize returns the uncompressed size of the file's DWARF sections.
func dwarfSize(ef *elf.File) (total uint64, hasLines bool) {
	for _, s := range ef.Sections {
		if s.Type == elf.SHT_NOBITS {
			continue
		}
		if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			total += s.Size
			if s.Name == ".debug_line" || s.Name == ".zdebug_line" {
				hasLines = true
			}
		}
	}
	return total, hasLines
}

type lineRow struct {
	addr uint64
	file uint32
	line uint32
}

// loadLineTable reads the DWARF line programs of ef. The DWARF sections
// are mapped from fh, when it is not nil, for the time of the read. sc,
// when not nil, lends the rows' buffer.
func loadLineTable(ef *elf.File, fh *os.File, limit uint64, sc *scratch) (lt *lineTable, err error) {
	if size, ok := dwarfSize(ef); !ok {
		return nil, nil
	} else if size > limit {
		return nil, fmt.Errorf("%w: %d bytes", errDWARFTooLarge, size)
	}
	var mems [][]byte
	defer func() { unmap(mems...) }()
	// A fault on a mapped section becomes an error too.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	// debug/dwarf reports some malformed input by panicking; the input is
	// untrusted.
	defer func() {
		if r := recover(); r != nil {
			lt, err = nil, fmt.Errorf("malformed DWARF: %v", r)
		}
	}()
	if ef.Type == elf.ET_REL || hasZdebug(ef) {
		// DWARF that needs relocating, or in .zdebug_ sections: read by
		// elf.File.DWARF.
		d, err := ef.DWARF()
		if err != nil {
			return nil, fmt.Errorf("read DWARF: %w", err)
		}
		return collectLines(d)
	}
	dat := make(map[string][]byte, len(lineSections))
	if err := addLineSections(ef, fh, []string{"line", "str", "line_str"}, dat, &mems); err != nil {
		return nil, fmt.Errorf("read DWARF: %w", err)
	}
	c := lineCollector{sc: sc, hint: len(dat["line"]) / bytesPerRow}
	err = c.lineProgramsV5(lineData{line: dat["line"], str: dat["str"], lineStr: dat["line_str"], bo: ef.ByteOrder})
	switch {
	case err == nil:
		return c.table()
	case !errors.Is(err, errUseDWARF):
		return nil, err
	}
	// Programs of DWARF 4 and older, found through their units: read
	// without debug/dwarf where readUnitHeads can.
	if err := addLineSections(ef, fh, []string{"info", "abbrev"}, dat, &mems); err != nil {
		return nil, fmt.Errorf("read DWARF: %w", err)
	}
	secs := lineData{line: dat["line"], str: dat["str"], lineStr: dat["line_str"], bo: ef.ByteOrder}
	if heads, err := readUnitHeads(dat["info"], dat["abbrev"], dat["str"], ef.ByteOrder); err == nil {
		c = c.restart()
		err = c.lineProgramsOfUnits(heads, secs)
		switch {
		case err == nil:
			return c.table()
		case !errors.Is(err, errUseDWARF):
			return nil, err
		}
	}
	if err := addLineSections(ef, fh, lineSections, dat, &mems); err != nil {
		return nil, fmt.Errorf("read DWARF: %w", err)
	}
	d, err := lineDWARF(dat)
	if err != nil {
		return nil, fmt.Errorf("read DWARF: %w", err)
	}
	// Else through debug/dwarf's units.
	c = c.restart()
	err = c.linePrograms(d, secs)
	switch {
	case err == nil:
		return c.table()
	case !errors.Is(err, errUseDWARF):
		return nil, err
	}
	return collectLines(d)
}

// collectLines returns the line table of the units of d.
func collectLines(d *dwarf.Data) (*lineTable, error) {
	var c lineCollector
	if err := c.collect(d); err != nil {
		return nil, err
	}
	return c.table()
}

// lineSections are the DWARF sections line programs need: the units and
// their abbreviations, the line programs, and the sections their
// attributes may point into.
var lineSections = []string{"abbrev", "info", "line", "str", "ranges", "addr", "line_str", "str_offsets", "rnglists"}

// hasZdebug reports whether ef has DWARF in .zdebug_ sections.
func hasZdebug(ef *elf.File) bool {
	return slices.ContainsFunc(ef.Sections, func(s *elf.Section) bool { return strings.HasPrefix(s.Name, ".zdebug_") })
}

// addLineSections adds to dat the DWARF sections of ef named (without
// their ".debug_" prefix) in names that it lacks, mapped from fh where
// possible (the mappings are appended to mems), else read into the heap.
func addLineSections(ef *elf.File, fh *os.File, names []string, dat map[string][]byte, mems *[][]byte) error {
	for _, s := range ef.Sections {
		name, ok := strings.CutPrefix(s.Name, ".debug_")
		if !ok || !slices.Contains(names, name) || s.Type == elf.SHT_NOBITS {
			continue
		}
		if _, dup := dat[name]; dup {
			continue
		}
		data, mem, err := sectionData(fh, s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		if mem != nil {
			*mems = append(*mems, mem)
		}
		dat[name] = data
	}
	return nil
}

// lineDWARF returns the DWARF data of the sections dat holds, the
// sections line programs need, rather than every DWARF section read into
// the heap as elf.File.DWARF does.
func lineDWARF(dat map[string][]byte) (*dwarf.Data, error) {
	d, err := dwarf.New(dat["abbrev"], nil, nil, dat["info"], dat["line"], nil, dat["ranges"], dat["str"])
	if err != nil {
		return nil, err
	}
	for _, name := range lineSections[5:] {
		if data, ok := dat[name]; ok {
			if err := d.AddSection(".debug_"+name, data); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// lineCollector gathers the rows of a file's line programs and the names
// of their source files.
//
// Rows are collected in chunks of fixed size, not one slice grown by
// appending, which would allocate several times the final size; a row
// that repeats the position of the row before it in its sequence is not
// collected, since it adds nothing to the table.
//
// With a scratch (sc), the first chunk is the scratch's buffer of rows,
// as large as the largest table read before: one chunk holds all the
// rows, which are then sorted where they are, and the buffer goes back
// to the scratch when the table is made.
type lineCollector struct {
	sc *scratch
	// hint is how many rows the first chunk holds when the scratch has
	// no buffer: the rows expected, so that one chunk holds them all.
	hint     int
	chunks   [][]lineRow       // full chunks
	cur      []lineRow         // the chunk being filled
	n        int               // rows in chunks and cur
	fileIdx  map[string]uint32 // name -> index in nameOffs
	nameOffs []uint32
	names    strings.Builder
}

// collect adds the rows of every compilation unit of d.
func (c *lineCollector) collect(d *dwarf.Data) error {
	c.fileIdx = map[string]uint32{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return fmt.Errorf("read DWARF: %w", err)
		}
		if e == nil {
			return nil
		}
		r.SkipChildren()
		if e.Tag != dwarf.TagCompileUnit && e.Tag != dwarf.TagPartialUnit {
			continue
		}
		lr, err := d.LineReader(e)
		if err != nil || lr == nil {
			continue // a unit without lines, or a malformed one
		}
		if err := c.addUnit(lr); err != nil {
			return err
		}
	}
}

// rowChunk is the number of rows in a chunk of a lineCollector.
const rowChunk = 4096

// bytesPerRow is about the fewest bytes of line programs a row takes:
// the large programs of node and of the debug files of ld.so and libm
// take 6.4 to 8.2 bytes for each row collected.
const bytesPerRow = 6

// add collects row.
func (c *lineCollector) add(row lineRow) {
	if len(c.cur) == cap(c.cur) {
		switch {
		case c.cur == nil && c.sc != nil && cap(c.sc.lineRows) > 0:
			c.cur, c.sc.lineRows = c.sc.lineRows[:0], nil
		case c.cur != nil:
			c.chunks = append(c.chunks, c.cur)
			fallthrough
		default:
			n := rowChunk
			if c.cur == nil {
				n = max(n, c.hint)
			}
			c.cur = make([]lineRow, 0, n)
		}
	}
	c.cur = append(c.cur, row)
	c.n++
}

// addUnit adds the rows of one unit's line program. A malformed program
// ends its unit's rows.
func (c *lineCollector) addUnit(lr *dwarf.LineReader) error {
	var le dwarf.LineEntry
	prev := lineRow{file: noFile} // the last row added of this sequence
	for {
		if err := lr.Next(&le); err != nil {
			if err != io.EOF {
				c.add(lineRow{addr: le.Address, file: noFile})
			}
			return nil
		}
		row := lineRow{addr: le.Address, file: noFile}
		if !le.EndSequence && le.File != nil {
			k, err := c.file(le.File.Name)
			if err != nil {
				return err
			}
			row.file = k
			row.line = uint32(min(max(le.Line, 0), math.MaxUint32))
			if prev.file == row.file && prev.line == row.line && row.addr >= prev.addr {
				continue
			}
		}
		c.add(row)
		prev = row
	}
}

// restart returns an empty collector with c's scratch and, when c filled
// one chunk only, that chunk (the scratch's buffer, when c had it).
func (c *lineCollector) restart() lineCollector {
	if len(c.chunks) == 0 && c.cur != nil {
		return lineCollector{sc: c.sc, hint: c.hint, cur: c.cur[:0]}
	}
	return lineCollector{sc: c.sc, hint: c.hint}
}

// rows returns the collected rows in one slice, releasing the chunks:
// the one chunk when there is one, else a copy.
func (c *lineCollector) rows() []lineRow {
	if len(c.chunks) == 0 {
		rows := c.cur
		c.cur = nil
		return rows
	}
	rows := make([]lineRow, 0, c.n)
	for i, ch := range c.chunks {
		rows = append(rows, ch...)
		c.chunks[i] = nil
	}
	rows = append(rows, c.cur...)
	c.chunks, c.cur = nil, nil
	return rows
}

// file returns the index of the source file name, adding it on first
// sight.
func (c *lineCollector) file(name string) (uint32, error) {
	if k, ok := c.fileIdx[name]; ok {
		return k, nil
	}
	if c.names.Len() > math.MaxUint32-len(name) {
		return 0, errors.New("DWARF file names too large")
	}
	k := uint32(len(c.nameOffs))
	c.fileIdx[name] = k
	c.nameOffs = append(c.nameOffs, uint32(c.names.Len()))
	c.names.WriteString(path.Clean(name))
	return k, nil
}

// table sorts and merges the rows into a compact table, nil when there are
// none.
func (c *lineCollector) table() (*lineTable, error) {
	if c.n == 0 {
		return nil, nil
	}
	rows := c.rows()
	if len(rows) == 0 {
		return nil, nil
	}
	if c.sc != nil {
		// Done with once the table is made.
		defer func() { c.sc.lineRows = rows[:0] }()
	}
	sortLineRows(rows)
	base := rows[0].addr
	if rows[len(rows)-1].addr-base > math.MaxUint32 {
		return nil, errors.New("DWARF line table spans more than 4 GiB")
	}
	kept := mergeLineRows(rows)
	lt := &lineTable{
		base:     base,
		addrs:    make([]uint32, len(kept)),
		files:    make([]uint32, len(kept)),
		lines:    make([]uint32, len(kept)),
		nameOffs: slices.Clip(c.nameOffs),
		names:    c.names.String(),
	}
	for i, row := range kept {
		lt.addrs[i] = uint32(row.addr - base)
		lt.files[i] = row.file
		lt.lines[i] = row.line
	}
	return lt, nil
}

// sortLineRows sorts rows by address; at one address an end of sequence
// first, so that a sequence starting where another ends wins, then the
// later row.
func sortLineRows(rows []lineRow) {
	slices.SortStableFunc(rows, func(a, b lineRow) int {
		if a.addr != b.addr {
			if a.addr < b.addr {
				return -1
			}
			return 1
		}
		ae, be := a.file == noFile, b.file == noFile
		switch {
		case ae && !be:
			return -1
		case be && !ae:
			return 1
		}
		return 0
	})
}

// mergeLineRows keeps, of sorted rows, the last at each address, and drops
// rows that repeat the position of the row before. It reuses rows.
func mergeLineRows(rows []lineRow) []lineRow {
	kept := rows[:0]
	for _, row := range rows {
		if n := len(kept); n > 0 {
			if kept[n-1].addr == row.addr {
				kept[n-1] = row
				if n > 1 && kept[n-2].file == row.file && kept[n-2].line == row.line {
					kept = kept[:n-1]
				}
				continue
			}
			if kept[n-1].file == row.file && kept[n-1].line == row.line {
				continue
			}
		}
		kept = append(kept, row)
	}
	return kept
}

// lookup returns the source position of addr.
func (lt *lineTable) lookup(addr uint64) (string, int64, bool) {
	if lt == nil || addr < lt.base || addr-lt.base > math.MaxUint32 {
		return "", 0, false
	}
	a := uint32(addr - lt.base)
	lo, hi := 0, len(lt.addrs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if lt.addrs[m] <= a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo - 1
	if i < 0 || lt.files[i] == noFile || i == len(lt.addrs)-1 {
		return "", 0, false
	}
	k := lt.files[i]
	end := uint32(len(lt.names))
	if int(k)+1 < len(lt.nameOffs) {
		end = lt.nameOffs[k+1]
	}
	return lt.names[lt.nameOffs[k]:end], int64(lt.lines[i]), true
}

func (lt *lineTable) bytes() int {
	if lt == nil {
		return 0
	}
	return int(unsafe.Sizeof(*lt)) + 4*(cap(lt.addrs)+cap(lt.files)+cap(lt.lines)+cap(lt.nameOffs)) + len(lt.names)
}
