package nativeunwind

import (
	"debug/elf"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/gopclntab"
)

// keptFile is what a Builder keeps of a file between its builds by range
// (see Builder.Keep): the sections they mapped, and its .gopclntab parsed.
type keptFile struct {
	// sections are the sections mapped, by offset in the file.
	sections map[uint64]keptSection
	// goTab is the parsed .gopclntab at offset goOff, nil before a
	// build read it.
	goTab *gopclntab.Table
	goOff uint64
}

// keptSection is a section of a kept file, mapped: data its contents,
// mapping what to unmap.
type keptSection struct {
	size          uint64
	data, mapping []byte
}

// Keep says that f's table is built by range again and again (the
// tracer's tables built by region): the call frame sections of f that
// builds by range (BuildRanges) map stay mapped, and its .gopclntab
// parsed, for the next ones, until Forget(f). A build by range of a kept
// file then neither maps nor unmaps its sections, nor parses its Go
// function table again. Each build drops the pages it touched from the
// process's memory when it ends (they stay in the page cache), as an
// unmap would: kept resident, the pages of a busy file's builds, with
// those the kernel maps around each fault, add up to megabytes within a
// minute. Whole builds (Build) map and unmap as always.
//
// Keep does nothing for a file that is not open (made from a reader).
// The caller bounds the files kept, and calls Forget before it closes f.
func (b *Builder) Keep(f *elffile.File) {
	fh := f.OSFile()
	if fh == nil {
		return
	}
	if b.kept == nil {
		b.kept = make(map[*os.File]*keptFile)
	}
	if _, ok := b.kept[fh]; !ok {
		b.kept[fh] = &keptFile{sections: make(map[uint64]keptSection)}
	}
}

// Forget unmaps what b kept of f (see Keep).
func (b *Builder) Forget(f *elffile.File) {
	fh := f.OSFile()
	k, ok := b.kept[fh]
	if !ok {
		return
	}
	for _, s := range k.sections {
		unmap(s.mapping)
	}
	delete(b.kept, fh)
}

// release drops the pages of k's sections from the process's memory (they
// stay in the page cache): a build touches those of its ranges, and
// those the kernel maps around them at each fault, which kept mapped
// would add up to most of a section over the builds of a busy file.
func (k *keptFile) release() {
	for _, s := range k.sections {
		unix.Madvise(s.mapping, unix.MADV_DONTNEED)
	}
}

// Kept returns how many files b keeps (see Keep).
func (b *Builder) Kept() int { return len(b.kept) }

// keptFor returns what b keeps of the file r for the build under way: nil
// unless it is a build by range of a kept file.
func (bs *buildState) keptFor(r any) *keptFile {
	if len(bs.ranges) == 0 {
		return nil
	}
	fh, ok := r.(*os.File)
	if !ok {
		return nil
	}
	return bs.scratch.kept[fh]
}

// mapSection maps sec of the open file fh, as gopclntab.MapSection does,
// unless k (nil: none) has it mapped already. The mapping returned is to
// be unmapped after the build; it is nil when k keeps it.
func mapSection(k *keptFile, fh *os.File, sec *elf.Section) (data, mapping []byte, err error) {
	if k != nil {
		if s, ok := k.sections[sec.Offset]; ok && s.size == sec.Size {
			return s.data, nil, nil
		}
	}
	data, mapping, err = gopclntab.MapSection(fh, sec)
	if err != nil || k == nil {
		return data, mapping, err
	}
	if old, ok := k.sections[sec.Offset]; ok {
		unmap(old.mapping)
	}
	k.sections[sec.Offset] = keptSection{size: sec.Size, data: data, mapping: mapping}
	return data, nil, nil
}
