package symbolizer

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
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

// loadLineTable reads the DWARF line programs of ef.
func loadLineTable(ef *elf.File, limit uint64) (lt *lineTable, err error) {
	if size, ok := dwarfSize(ef); !ok {
		return nil, nil
	} else if size > limit {
		return nil, fmt.Errorf("%w: %d bytes", errDWARFTooLarge, size)
	}
	// debug/dwarf reports some malformed input by panicking; the input is
	// untrusted.
	defer func() {
		if r := recover(); r != nil {
			lt, err = nil, fmt.Errorf("malformed DWARF: %v", r)
		}
	}()
	d, err := ef.DWARF()
	if err != nil {
		return nil, fmt.Errorf("read DWARF: %w", err)
	}
	var c lineCollector
	if err := c.collect(d); err != nil {
		return nil, err
	}
	return c.table()
}

// lineCollector gathers the rows of a file's line programs and the names
// of their source files.
type lineCollector struct {
	rows     []lineRow
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

// addUnit adds the rows of one unit's line program. A malformed program
// ends its unit's rows.
func (c *lineCollector) addUnit(lr *dwarf.LineReader) error {
	var le dwarf.LineEntry
	for {
		if err := lr.Next(&le); err != nil {
			if err != io.EOF {
				c.rows = append(c.rows, lineRow{addr: le.Address, file: noFile})
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
		}
		c.rows = append(c.rows, row)
	}
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
	rows := c.rows
	if len(rows) == 0 {
		return nil, nil
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
