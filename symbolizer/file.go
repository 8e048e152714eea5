package symbolizer

import (
	"bytes"
	"runtime/debug"
	"strings"
	"unsafe"

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
//
// The table is an index into the file's string tables, which stay where
// they are: mapped read-only from the file (see mapSection), unmapped once
// the File is unreachable. Names are copied out by Lookup only.
type File struct {
	info  FileInfo
	mode  DemangleMode
	loads []segment

	// syms are the symbols, sorted by address, one per address.
	syms []symEntry
	// strtabs hold the names syms refer to, by increasing base.
	strtabs []strtab
	// maps are the mappings of the file (its string tables) the table
	// reads, unmapped by a cleanup when the File is unreachable.
	maps [][]byte

	goTab *goTable   // Go functions, nil for other files
	lines *lineTable // DWARF line table, nil without one
}

// symEntry is one symbol of the index: it covers [addr, addr+extent) and
// its raw name is the NUL-terminated string at name in the File's name
// space, the concatenation of its strtabs.
type symEntry struct {
	addr   uint64
	extent uint32
	name   uint32
}

// strtab is a string table in the name space of a File: offsets from base
// on are in data, mapped from the file or in the heap.
type strtab struct {
	base uint32
	data []byte
}

// segment is a PT_LOAD program header: the file bytes [off, off+filesz)
// are mapped at vaddr.
type segment struct {
	off, filesz, vaddr uint64
	exec               bool
}

// Info returns the file's build IDs and where its names came from.
func (f *File) Info() FileInfo { return f.info }

// Len returns the number of symbols in the table, not counting the
// functions of the Go table.
func (f *File) Len() int { return len(f.syms) }

// Lookup appends to buf the source positions of the instruction at
// fileOffset and returns the extended slice: one trace.Line per function,
// innermost inlined call first. It returns buf unchanged when no loadable
// segment maps fileOffset or nothing names its address.
//
// Function is the name demangled as the table's DemangleMode says;
// SystemName is the raw name when it differs. File and Line come from the
// Go table or the DWARF line table, when present.
//
// A fault reading the mapped file (truncated since it was loaded) leaves
// the frame unnamed: Lookup returns buf unchanged.
func (f *File) Lookup(fileOffset uint64, buf []trace.Line) (out []trace.Line) {
	vaddr, ok := f.vaddr(fileOffset)
	if !ok {
		return buf
	}
	if len(f.maps) > 0 || f.goTab != nil && f.goTab.mappedBytes() > 0 {
		var fault error
		defer func() {
			if fault != nil {
				out = buf
			}
		}()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer catchFault(&fault)
	}
	if f.goTab != nil {
		if out := f.goTab.lookup(vaddr, buf); len(out) > len(buf) {
			if f.mode == DemangleSimple {
				for i := range out[len(buf):] {
					l := &out[len(buf)+i]
					if name := goNameForPrint(l.Function); name != l.Function {
						l.Function, l.SystemName = name, l.Function
					}
				}
			}
			return out
		}
	}
	// Find the last symbol starting at or before vaddr.
	lo, hi := 0, len(f.syms)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if f.syms[m].addr <= vaddr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo - 1
	if i < 0 || vaddr-f.syms[i].addr >= uint64(f.syms[i].extent) {
		return buf
	}
	// Names are copied out: callers keep them long after the table is
	// evicted, and the mapping they come from is unmapped then.
	raw := string(f.name(f.syms[i].name))
	if raw == "" {
		return buf // the file changed under the mapping
	}
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
// Mapped string tables and a mapped .gopclntab are not heap: see
// MappedBytes.
func (f *File) Bytes() int {
	n := int(unsafe.Sizeof(*f)) +
		len(f.info.GNUBuildID) + len(f.info.GoBuildID) + len(f.info.DebugFile) +
		cap(f.loads)*int(unsafe.Sizeof(segment{})) +
		cap(f.syms)*int(unsafe.Sizeof(symEntry{})) +
		cap(f.strtabs)*int(unsafe.Sizeof(strtab{})) +
		cap(f.maps)*int(unsafe.Sizeof([]byte(nil)))
	for i, st := range f.strtabs {
		if i >= len(f.maps) { // the arena, after the mapped tables
			n += cap(st.data)
		}
	}
	if f.goTab != nil {
		n += f.goTab.bytes()
	}
	return n + f.lines.bytes()
}

// DropPages drops the pages of the file that lookups made resident from
// this process's memory: they are clean pages of the file, which the next
// lookup that needs one faults in again from the page cache. A caller that
// names frames in batches drops the pages of the files a batch looked up
// in once the batch is done (the tracer does, each time it has read the
// ring buffer): a lookup faults in 64 KiB around each page it reads, so
// the lookups of a few seconds keep megabytes of a big .gopclntab or
// string table resident, which only a Trim would drop.
func (f *File) DropPages() {
	for _, m := range f.maps {
		dropPages(m)
	}
	if f.goTab != nil {
		for _, m := range [][]byte{f.goTab.tabMem, f.goTab.goFuncMem} {
			if m != nil {
				dropPages(m)
			}
		}
	}
}

// MappedBytes returns how many bytes of the file (or its debug file) the
// table keeps mapped: its string tables, .gopclntab and the section of Go
// inline trees. They are page
// cache, not heap; only the pages lookups touch are resident.
func (f *File) MappedBytes() int {
	n := 0
	for _, m := range f.maps {
		n += len(m)
	}
	if f.goTab != nil {
		n += f.goTab.mappedBytes()
	}
	return n
}

// name returns the NUL-terminated name at off in the table's name space,
// without its NUL, at most maxNameLen bytes; nil when off is in no string
// table. The bytes may be mapped: the caller copies them, under a fault
// guard.
func (f *File) name(off uint32) []byte {
	k := len(f.strtabs) - 1
	for k >= 0 && f.strtabs[k].base > off {
		k--
	}
	if k < 0 || uint64(off-f.strtabs[k].base) >= uint64(len(f.strtabs[k].data)) {
		return nil
	}
	b := f.strtabs[k].data[off-f.strtabs[k].base:]
	b = b[:min(len(b), maxNameLen)]
	if n := bytes.IndexByte(b, 0); n >= 0 {
		b = b[:n]
	}
	return b
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
