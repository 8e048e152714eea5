package nativeunwind

import (
	"os"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/keysort"
)

// DefaultKeepBytes is the default of Builder.KeepBytes.
const DefaultKeepBytes = 1 << 20

// Builder builds stack-delta tables (see Build) in memory it keeps from one
// build to the next: its row buffers, the FDE index (and the words that
// sort it) and CIEs of a section, and a buffer for sections that cannot be
// mapped. Building the tables of many files with one Builder allocates
// only while its buffers grow.
//
// A Builder belongs to one goroutine at a time (one per worker that
// builds tables); the zero Builder is ready to use.
type Builder struct {
	// KeepBytes bounds each buffer kept between builds: a larger one,
	// grown for a large file, is freed when its build ends (the rows'
	// buffer when they are released). 0 means DefaultKeepBytes.
	KeepBytes int

	table Table
	// The state of a build.
	state buildState
	arch  arch
	opts  Options
	segs  segments
	// ranges limits the build to those file offsets (BuildRanges);
	// empty for the whole table.
	ranges rangeSet
	frame  frameSection // the section being read
	// rows holds the table's packed rows (or, during a build, those of
	// the sources so far); layer those of the current source, which are
	// merged into rows. The two never share memory. rules holds the
	// rules they index.
	rows, layer []uint64
	rules       ruleSet
	holes       []hole
	fdes        []fde
	keys        keysort.Buffer // sorts fdes
	cies        []cie
	cieIndex    map[uint64]int32
	section     []byte // a section that is read, not mapped
	code        []byte // Go function prologues
	spRules     spMemo // Go rows' rules by stack pointer delta
	interp      interp
	// kept are the files whose sections builds by range leave mapped
	// (Keep).
	kept map[*os.File]*keptFile
}

// Release ends the use of the rows of the last table b built: b frees
// their buffer if it is larger than b keeps, or reuses it for the next
// table. It is for a caller that is done with the rows (has copied them
// into the eBPF map) well before it builds the next table.
func (b *Builder) Release() {
	b.table = Table{}
	if cap(b.rows)*rowSize > b.keep() {
		b.rows = nil
	}
	if b.rules.bytes() > b.keep() {
		b.rules = ruleSet{}
	}
}

// Sizes in memory of the elements of Builder's buffers.
const (
	rowSize  = 8 // a packed row
	holeSize = int(unsafe.Sizeof(hole{}))
	fdeSize  = int(unsafe.Sizeof(fde{}))
	cieSize  = int(unsafe.Sizeof(cie{}))
)

func (b *Builder) keep() int {
	if b.KeepBytes > 0 {
		return b.KeepBytes
	}
	return DefaultKeepBytes
}

// trim frees the working buffers of a build that are larger than b keeps:
// all but the table's rows, and those too when the build failed.
func (b *Builder) trim(failed bool) {
	if failed {
		b.Release()
	}
	keep := b.keep()
	if cap(b.layer)*rowSize > keep {
		b.layer = nil
	}
	if cap(b.holes)*holeSize > keep {
		b.holes = nil
	}
	if cap(b.fdes)*fdeSize > keep {
		b.fdes = nil
	}
	b.keys.Trim(keep)
	if cap(b.cies)*cieSize > keep {
		b.cies = nil
	}
	if len(b.cieIndex) > keep/64 {
		b.cieIndex = nil
	}
	if cap(b.section) > keep {
		b.section = nil
	}
	b.interp.sec = nil
	b.frame = frameSection{}
}
