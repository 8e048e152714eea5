package elffile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"io"
)

// ELF note types of the build IDs.
const (
	ntGNUBuildID = 3 // NT_GNU_BUILD_ID, owner "GNU"
	ntGoBuildID  = 4 // the Go toolchain's build ID, owner "Go"
)

// maxNoteSize bounds a note section or segment read: real ones hold a few
// build IDs and ABI tags.
const maxNoteSize = 1 << 16

// BuildIDs are the build IDs an ELF file's notes carry.
type BuildIDs struct {
	// GNU is the NT_GNU_BUILD_ID note in lower-case hex, "" if absent.
	GNU string
	// Go is the Go toolchain's build ID, "" if absent.
	Go string
}

// NoteBuildIDs returns the first GNU and Go build IDs among the notes in
// data, the contents of a note section or segment whose notes are aligned
// to align bytes (8, or else 4) and in byte order bo. Kernel notes
// (/sys/kernel/notes, /sys/module/NAME/notes) have the same layout.
func NoteBuildIDs(data []byte, bo binary.ByteOrder, align uint64) BuildIDs {
	var ids BuildIDs
	EachNote(data, bo, align, func(name []byte, typ uint32, desc []byte) {
		switch {
		case ids.GNU == "" && typ == ntGNUBuildID && string(name) == "GNU" && len(desc) > 0:
			ids.GNU = hex.EncodeToString(desc)
		case ids.Go == "" && typ == ntGoBuildID && string(name) == "Go":
			ids.Go = string(bytes.TrimRight(desc, "\x00"))
		}
	})
	return ids
}

// EachNote calls fn for each well-formed note in data, stopping at the
// first malformed one. name is the note's owner without its terminating
// NULs; name and desc alias data. Notes are aligned to 4 bytes, or 8 when
// align says so.
func EachNote(data []byte, bo binary.ByteOrder, align uint64, fn func(name []byte, typ uint32, desc []byte)) {
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
		const nameStart = 12
		descStart := pad(nameStart + namesz)
		if descStart+descsz > uint64(len(data)) {
			return
		}
		fn(bytes.TrimRight(data[nameStart:nameStart+namesz], "\x00"), typ, data[descStart:descStart+descsz])
		end := pad(descStart + descsz)
		if end > uint64(len(data)) {
			return
		}
		data = data[end:]
	}
}

// buildIDs reads the build IDs from the file's note sections or, when it
// has none, its PT_NOTE segments.
func buildIDs(ef *elf.File) BuildIDs {
	var ids BuildIDs
	add := func(r io.Reader, size, align uint64) {
		if size > maxNoteSize {
			return
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(r, data); err != nil {
			return
		}
		found := NoteBuildIDs(data, ef.ByteOrder, align)
		if ids.GNU == "" {
			ids.GNU = found.GNU
		}
		if ids.Go == "" {
			ids.Go = found.Go
		}
	}
	hasNoteSections := false
	for _, s := range ef.Sections {
		if s.Type == elf.SHT_NOTE {
			hasNoteSections = true
			add(s.Open(), s.Size, s.Addralign)
		}
	}
	if !hasNoteSections {
		for _, p := range ef.Progs {
			if p.Type == elf.PT_NOTE {
				add(p.Open(), p.Filesz, p.Align)
			}
		}
	}
	return ids
}
