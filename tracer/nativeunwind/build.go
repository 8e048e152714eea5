package nativeunwind

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	rtdebug "runtime/debug"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/gopclntab"
)

// Defaults for the zero fields of Options.
const (
	// DefaultMaxRows is the default bound on a table's rows: 16 MiB in the
	// 8-byte eBPF encoding. The largest libraries need a few hundred
	// thousand.
	DefaultMaxRows = 1 << 21
	// DefaultMaxCIEs is the default bound on the CIEs of one section.
	// Linkers merge identical CIEs; real files have a handful to a few
	// hundred.
	DefaultMaxCIEs = 1 << 14
	// DefaultMaxSectionBytes is the default bound on one section read.
	DefaultMaxSectionBytes = 512 << 20
)

// Options bound what Build may spend on one file. The work is linear in
// the size of the sections read: every instruction of a call frame
// program is run once, CIEs once each, and remember_state nests at most
// 64 deep.
type Options struct {
	// MaxRows bounds the rows of the table and of each source of rows
	// while it is built; past it Build fails with ErrTooLarge. 0 means
	// DefaultMaxRows.
	MaxRows int
	// MaxCIEs bounds the CIEs of one section; past it Build fails with
	// ErrTooLarge. 0 means DefaultMaxCIEs.
	MaxCIEs int
	// MaxSectionBytes bounds the (uncompressed) size of each section
	// read: .eh_frame, .debug_frame, .gopclntab; a larger one makes Build
	// fail with ErrTooLarge. 0 means DefaultMaxSectionBytes; more than 4
	// GiB means 4 GiB.
	MaxSectionBytes int64
}

// normalize checks o and fills in its defaults.
func (o *Options) normalize() error {
	if o.MaxRows < 0 || o.MaxCIEs < 0 || o.MaxSectionBytes < 0 {
		return errors.New("nativeunwind: negative limit")
	}
	if o.MaxRows == 0 {
		o.MaxRows = DefaultMaxRows
	}
	if o.MaxCIEs == 0 {
		o.MaxCIEs = DefaultMaxCIEs
	}
	if o.MaxSectionBytes == 0 {
		o.MaxSectionBytes = DefaultMaxSectionBytes
	}
	// Offsets in a section are kept in 32 bits.
	o.MaxSectionBytes = min(o.MaxSectionBytes, math.MaxUint32)
	return nil
}

// Errors of Build, wrapped with details.
var (
	// ErrUnsupportedArch says the file is for a machine whose unwinding
	// rules this package does not know (all but x86-64 for now).
	ErrUnsupportedArch = errors.New("unsupported machine")
	// ErrNoCFI says the file has no .eh_frame, .debug_frame or .gopclntab
	// with contents, nor has its debug file a .debug_frame.
	ErrNoCFI = errors.New("no call frame information")
	// ErrTooLarge says a limit of Options was exceeded.
	ErrTooLarge = errors.New("call frame information too large")
	// ErrMalformed says a section could not be parsed (or the file
	// changed while it was read).
	ErrMalformed = errors.New("malformed call frame information")
)

// Build returns the stack-delta table of the ELF file f. debug, when not
// nil, is its separate debug file (see elffile.File.Debug). Sections of a
// real file are mapped, not read into the heap, while the table is built.
// Build is Builder.Build with a Builder of its own: the table owns its
// rows.
//
// Rows come from, in order of preference where several cover an address:
// f's .gopclntab (Go functions, from their stack pointer deltas), f's
// .eh_frame, f's .debug_frame and debug's .debug_frame; an FDE whose range
// a preferred source covers all of is not even run. Table.Sources tells
// which gave rows. Addresses in no executable PT_LOAD segment of f are
// dropped; the others become file offsets (a file offset of MaxAddr or
// more fails the build with ErrTooLarge). .eh_frame_hdr is not used, so a
// file without section headers has no table.
//
// A row translates the DWARF rules at its addresses as follows (x86-64):
//
//   - the return address undefined (DW_CFA_undefined): CFAEndOfStack;
//   - the return address anywhere but at CFA-8: CFAInvalid;
//   - CFA = rsp+N: CFASP N; CFA = rbp+N: CFAFP N; the lazy PLT expression
//     with threshold 11: CFAPLT N (other thresholds, as with IBT, are
//     spelled out as CFASP rows per 16-byte stub); another register or
//     expression: CFAInvalid;
//   - an FDE whose CIE has the 'S' augmentation: CFASignal for its range;
//   - rbp saved at CFA+N: FPOffset N; rbp unchanged: FPOffset 0. rbp saved
//     where a row cannot say (in another register, by an expression, or
//     undefined) leaves the caller's frame pointer unknown: the row is
//     CFAInvalid if its CFA is computed from rbp, and keeps FPOffset 0
//     otherwise, since unwinding this frame does not need it.
//
// Where an FDE's program uses an instruction this package cannot run, the
// rest of its range is CFAInvalid; an FDE whose address only the running
// process knows (an indirect, text- or function-relative pointer) is left
// out. Malformed framing (lengths, CIE
// pointers, CIEs) fails the whole build with ErrMalformed; a file with no
// call frame sections fails with ErrNoCFI.
func Build(f, debug *elffile.File, opts Options) (*Table, error) {
	var b Builder
	t, err := b.Build(f, debug, opts)
	if err != nil {
		return nil, err
	}
	rows := t.rows
	if cap(rows)-len(rows) > len(rows)/4 {
		// The table outlives the build: not its buffer's spare room.
		rows = slices.Clone(rows)
	}
	return &Table{rows: rows, rules: slices.Clip(t.rules), Sources: t.Sources}, nil
}

// Build returns the stack-delta table of the ELF file f, as the function
// Build does, with its rows and rules in b's memory: they are valid until
// the next call of b.Build or b.Release.
//
// Building a table allocates nothing once b's buffers have grown to the
// sizes the file needs: the call frame sections are read in place (mapped
// from the file, or read into a buffer of b when they are compressed or f
// is not an open file), and the rows of each source are merged into the
// rows of those before in b's buffers.
func (b *Builder) Build(f, debug *elffile.File, opts Options) (t *Table, err error) {
	b.Release()
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	ef := f.ELF
	a, err := archFor(ef.Machine)
	if err != nil {
		return nil, fmt.Errorf("nativeunwind: %w", err)
	}
	var dbg *elf.File
	var debugR io.ReaderAt
	if debug != nil {
		dbg, debugR = debug.ELF, debug.ReaderAt()
		if dbg.Machine != ef.Machine || dbg.Class != ef.Class || dbg.ByteOrder != ef.ByteOrder {
			return nil, fmt.Errorf("nativeunwind: debug file is for %v %v, not %v %v", dbg.Class, dbg.Machine, ef.Class, ef.Machine)
		}
	}
	b.arch, b.opts = a, opts
	b.segs = appendExecSegments(b.segs[:0], ef)
	bs := &b.state
	*bs = buildState{arch: &b.arch, opts: &b.opts, segs: b.segs, ranges: b.ranges, scratch: b}
	defer func() { b.trim(err != nil) }()
	defer rtdebug.SetPanicOnFault(rtdebug.SetPanicOnFault(true))
	defer catchFault(&err)
	if err = bs.build(ef, f.ReaderAt(), dbg, debugR); err != nil {
		return nil, fmt.Errorf("nativeunwind: %w", err)
	}
	return &b.table, nil
}

// catchFault turns a fault reading a mapped section, as when the file is
// truncated while it is read, into an error.
func catchFault(err *error) {
	if r := recover(); r != nil {
		if _, ok := r.(interface{ Addr() uintptr }); !ok {
			panic(r)
		}
		*err = fmt.Errorf("nativeunwind: %w: fault reading the file: %v", ErrMalformed, r)
	}
}

// buildState is what building one table needs.
type buildState struct {
	arch    *arch
	opts    *Options
	segs    segments // of the file the table is for
	ranges  rangeSet // the offsets built, all when empty
	scratch *Builder // buffers
}

// build collects the rows of every source and lays them under those of
// the sources before, leaving the table in bs.scratch.table. The rows of
// the sources so far are in the Builder's buffer rows, those of the
// current source in its buffer layer; they are merged in rows' memory.
// The first source with rows builds them in rows' buffer.
func (bs *buildState) build(ef *elf.File, f io.ReaderAt, dbg *elf.File, debugR io.ReaderAt) error {
	s := bs.scratch
	t := &s.table
	*t = Table{}
	s.rules.reset()
	rows := s.rows[:0]
	found := false
	// buffer returns the buffer for the next source's rows: rows' own
	// while there are none yet, so that a file with one source needs
	// one buffer. giveBack returns it, with the rows built in it.
	buffer := func() []uint64 {
		if len(rows) == 0 {
			return rows[:0]
		}
		return s.layer[:0]
	}
	giveBack := func(layer []uint64) {
		if len(rows) == 0 {
			rows = layer[:0]
		} else {
			s.layer = layer[:0]
		}
	}
	add := func(layer []uint64, src Source) error {
		found = true
		if len(layer) == 0 {
			giveBack(layer)
			return nil
		}
		t.Sources |= src
		if len(rows) == 0 {
			rows = layer
			return nil
		}
		s.layer = layer[:0]
		var err error
		rows, err = overlay(rows, layer, bs.opts.MaxRows)
		return err
	}
	defer func() { s.rows = rows }()
	if sec := withData(ef, ".gopclntab"); sec != nil {
		layer, err := bs.goSection(ef, f, sec, buffer())
		switch {
		case errors.Is(err, gopclntab.ErrUnsupportedVersion):
			// Go 1.15 or earlier: other sections may do.
			giveBack(layer)
		case err != nil:
			giveBack(layer)
			return fmt.Errorf(".gopclntab: %w", err)
		default:
			if err := add(layer, SourceGoPCLNTab); err != nil {
				return err
			}
		}
	}
	frames := []struct {
		ef   *elf.File
		r    io.ReaderAt
		name string
		src  Source
	}{
		{ef, f, ".eh_frame", SourceEHFrame},
		{ef, f, ".debug_frame", SourceDebugFrame},
		{dbg, debugR, ".debug_frame", SourceDebugFrame},
	}
	// A Go binary linked by Go's own linker (no .eh_frame: no C objects
	// linked by the system linker) has a .debug_frame the Go linker wrote
	// from the same stack pointer deltas as its .gopclntab, for the same
	// functions: it adds no rows, and is often compressed.
	goLinked := t.Sources&SourceGoPCLNTab != 0 && ef.Section(".eh_frame") == nil
	for i, fr := range frames {
		if fr.ef == nil || goLinked && fr.name == ".debug_frame" {
			continue
		}
		sec := withData(fr.ef, fr.name)
		if sec == nil {
			continue
		}
		covered := newCoverage(s.holes, rows)
		s.holes = covered.holes[:0]
		layer, err := bs.frameSection(fr.ef, fr.r, sec, covered, buffer())
		if err == nil {
			err = add(layer, fr.src)
		} else {
			giveBack(layer)
		}
		if err != nil {
			if i == len(frames)-1 {
				err = fmt.Errorf("debug file: %w", err)
			}
			return err
		}
	}
	if !found {
		return ErrNoCFI
	}
	rows = finalize(rows)
	if bs.ranges.holdsEntry(ef, bs.segs) {
		var err error
		if rows, err = markEntry(rows, &s.rules, ef, bs.segs); err != nil {
			return err
		}
	}
	if len(bs.ranges) > 0 {
		// Rows of the functions that meet the ranges reach past
		// them: keep the ranges'.
		cut := bs.ranges.cut(s.layer, rows)
		s.layer = rows[:0]
		rows = cut
	}
	t.rows, t.rules = rows, s.rules.rules
	return nil
}

// withData returns the section name of ef when it has contents in the
// file.
func withData(ef *elf.File, name string) *elf.Section {
	sec := ef.Section(name)
	if sec == nil || sec.Type == elf.SHT_NOBITS || sec.Size == 0 {
		return nil
	}
	return sec
}

// goSection returns the rows of a .gopclntab section, in dst[:0].
func (bs *buildState) goSection(ef *elf.File, f io.ReaderAt, sec *elf.Section, dst []uint64) ([]uint64, error) {
	tab, mapping, err := bs.loadGoTable(ef, f, sec)
	if err != nil {
		return dst, err
	}
	defer unmap(mapping)
	return bs.goRows(tab, f, dst)
}

// frameSection returns the rows of an .eh_frame or .debug_frame section
// of ef, read from r, for the FDEs whose ranges are not all covered
// already, in dst[:0].
func (bs *buildState) frameSection(ef *elf.File, r io.ReaderAt, sec *elf.Section, covered coverage, dst []uint64) ([]uint64, error) {
	data, mapping, err := bs.sectionData(r, sec)
	if err != nil {
		return dst, fmt.Errorf("%s: %w", sec.Name, err)
	}
	defer unmap(mapping)
	fs := &bs.scratch.frame
	*fs = frameSection{
		name:    sec.Name,
		data:    data,
		addr:    sec.Addr,
		debug:   sec.Name == ".debug_frame",
		order:   ef.ByteOrder,
		ptrSize: 8,
	}
	if ef.Class == elf.ELFCLASS32 {
		fs.ptrSize = 4
	}
	hdr := withData(ef, ".eh_frame_hdr")
	k := bs.keptFor(r)
	if file, ok := r.(*os.File); ok && hdr != nil && len(bs.ranges) > 0 && !fs.debug && hdr.Size <= uint64(bs.opts.MaxSectionBytes) {
		// The FDEs of the ranges are found through its table (when
		// it can be mapped: the section buffer holds .eh_frame when
		// it cannot).
		if data, mapping, err := mapSection(k, file, hdr); err == nil {
			defer unmap(mapping)
			fs.hdr, fs.hdrAddr = data, hdr.Addr
		}
	}
	var kept *keptFrames
	if k != nil && mapping == nil {
		// The section stays mapped for the next builds: so does
		// what they learn of it.
		kept = k.framesFor(sec.Offset)
	}
	return bs.sectionRows(fs, covered, dst, kept)
}

// sectionData returns the contents of sec, read from r, and the mapping
// to unmap when they are no longer used (nil if they are not mapped).
// Sections of files are mapped rather than read, so they cost page cache
// rather than heap, and only while the table is built. Mapping rather than
// reading through a bounded window lets the decoder go back to a CIE, or
// to an FDE's program once the FDEs are sorted, wherever it is in the
// section, without a copy or a read per FDE. Compressed sections, and
// those of a file that is not open (a reader), are read into a buffer of
// the Builder, kept for the next build when it is small. A section of a
// file the Builder keeps (Keep) stays mapped after a build by range: its
// mapping is then nil.
func (bs *buildState) sectionData(r io.ReaderAt, sec *elf.Section) (data, mapping []byte, err error) {
	if sec.Size > uint64(bs.opts.MaxSectionBytes) {
		return nil, nil, fmt.Errorf("%w: section of %d bytes", ErrTooLarge, sec.Size)
	}
	if file, ok := r.(*os.File); ok {
		if data, mapping, err := mapSection(bs.keptFor(r), file, sec); err == nil {
			return data, mapping, nil
		}
	}
	s := bs.scratch
	buf := slices.Grow(s.section[:0], int(sec.Size))[:sec.Size]
	s.section = buf[:0]
	if _, err := io.ReadFull(sec.Open(), buf); err != nil {
		return nil, nil, fmt.Errorf("read: %w", err)
	}
	return buf, nil, nil
}

// unmap unmaps a section mapped by sectionData.
func unmap(mapping []byte) {
	if mapping != nil {
		unix.Munmap(mapping)
	}
}
