package nativeunwind

import (
	"debug/elf"
	"os"
	"sort"

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
	// build read it; goBlocks samples its function entries (see
	// searchBlocks), nil before a build searched them.
	goTab    *gopclntab.Table
	goOff    uint64
	goBlocks []uint64
	// frames is what the builds learnt of the call frame section at
	// offset frameOff, nil before one read it.
	frames   *keptFrames
	frameOff uint64
}

// keptFrames is what the builds by range of a kept file keep of one of
// its call frame sections besides its mapping, so that the next ones
// touch only the pages of their own FDEs: the CIEs parsed (an FDE's CIE
// is most often in the first page of the section, which each build
// would fault in again after release), where the .eh_frame_hdr table
// starts in its section (hdrOff, 0 before a build read its header; hdrN
// entries) and samples of it (hdrBlocks), which narrow its binary
// searches to one page of it.
type keptFrames struct {
	cies      []cie
	cieIndex  map[uint64]int32
	hdrOff    int
	hdrN      int
	hdrBlocks []uint64
}

// framesFor returns what k keeps of the call frame section at offset
// off, made empty when it kept another one's.
func (k *keptFile) framesFor(off uint64) *keptFrames {
	if k.frames == nil || k.frameOff != off {
		k.frames, k.frameOff = &keptFrames{cieIndex: make(map[uint64]int32)}, off
	}
	return k.frames
}

// searchBlock is the number of entries of a sorted table that one sample
// of searchBlocks stands for: 512 entries of 8 bytes (.eh_frame_hdr's,
// and .gopclntab's function table) fill a page.
const searchBlock = 512

// searchBlocks returns the keys of entries 0, searchBlock, 2*searchBlock…
// of a table of n entries sorted by key.
func searchBlocks(n int, key func(int) uint64) []uint64 {
	blocks := make([]uint64, 0, (n+searchBlock-1)/searchBlock)
	for i := 0; i < n; i += searchBlock {
		blocks = append(blocks, key(i))
	}
	return blocks
}

// searchFirst returns the least i in [0, n) whose key is at least v (n
// when none is), as sort.Search does over a table of n entries sorted by
// key, whose samples are blocks (see searchBlocks; nil: none). With
// samples it reads only the keys of one block of the table.
func searchFirst(n int, key func(int) uint64, blocks []uint64, v uint64) int {
	lo, hi := 0, n
	if len(blocks) > 0 {
		// The first block whose first key is v or more: the answer is
		// at its start or in the block before it.
		j := sort.Search(len(blocks), func(j int) bool { return blocks[j] >= v })
		lo, hi = max(j-1, 0)*searchBlock, min(j*searchBlock, n)
	}
	return lo + sort.Search(hi-lo, func(i int) bool { return key(lo+i) >= v })
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
