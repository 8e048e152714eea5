package symbolizer

import (
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
