package tracer

import (
	"os"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/trace"
)

// Bounds of a build worker's parsed files (elfCache). A file held costs
// a descriptor, its parsed headers (8-16 KiB of heap for the Go command
// and cc1, BenchmarkRegionFileOpen) and what the builder keeps of it
// (its CIEs, a few samples of its tables; the pages of its sections are
// released after each build); one not held costs the next build of its
// regions the opening, parsing and debug file lookup again (35 µs of CPU
// for the Go command, 150 µs for cc1), its sections mapped and its
// samples taken again.
const (
	// maxCachedELF bounds the files an elfCache holds open: the files
	// of the whole-agent bench built by region (cc1, node, libjvm, the
	// Go command and compiler, the agent and the bench) with room for
	// as many more; with 8, a shared host's other agents and tests
	// evicted them 7-11 times a minute.
	maxCachedELF = 16
	// cachedELFTTL is how long an elfCache holds a file no build used:
	// the regions of a busy file are asked within seconds of each
	// other, then seldom, and a table gives back its spare room when it
	// gained no region for regionIdle; the bench's node and libjvm, with
	// a region every 15-40 s, were opened again after 30 s.
	cachedELFTTL = regionIdle
)

// elfCache holds the files of tables built by region open and parsed, on
// the build worker that builds their regions, from one build of regions
// to the next: each build of a file's regions otherwise opens the file
// again and parses its ELF headers, section names and notes, and looks
// for its debug file (about a tenth of the regions' build time, and most
// of what the builds allocate). The builder keeps the call frame sections
// of the files held mapped, and a Go binary's function table parsed
// (keeper): a build then neither maps, unmaps nor parses them again. A
// file is the same whichever process it was opened through: its identity
// (trace.FileID) is its contents.
//
// It is owned by one goroutine. Files are closed when unused for
// cachedELFTTL, when more than maxCachedELF are held, and by close.
type elfCache struct {
	files map[trace.FileID]*cachedELF
	// keeper, when not nil, is the build worker's builder, which keeps
	// the sections of the files held mapped between their builds (see
	// nativeunwind.Builder.Keep) as long as they are held.
	keeper sectionKeeper
}

// sectionKeeper is a TableBuilder that keeps files' sections mapped
// between builds by range, as *nativeunwind.Builder does.
type sectionKeeper interface {
	Keep(f *elffile.File)
	Forget(f *elffile.File)
}

// cachedELF is a file an elfCache holds: the parsed file, which owns its
// open descriptor, and when a build last used it.
type cachedELF struct {
	ef   *elffile.File
	fh   *os.File
	used time.Time
}

// lend gives mf the parsed file of its file when the cache holds it,
// closing what mf opened, and reports whether it did. A lent file goes
// back to the cache with keep.
func (c *elfCache) lend(mf *mappedFile) bool {
	if mf.fi == nil {
		return false
	}
	e, ok := c.files[mf.fi.id]
	if !ok {
		return false
	}
	mf.close()
	mf.opened, mf.fh, mf.openErr = true, e.fh, nil
	mf.parsed, mf.ef, mf.elfErr = true, e.ef, nil
	return true
}

// keep takes the parsed file of mf back from it (mf then holds nothing
// open) when it was lent, or when regional says mf's table is built by
// region, so the next build of its regions finds it; at now.
func (c *elfCache) keep(mf *mappedFile, lent, regional bool, now time.Time) {
	if !lent && (!regional || !mf.parsed || mf.ef == nil || mf.fi == nil) {
		return
	}
	id := mf.fi.id
	if c.files == nil {
		c.files = make(map[trace.FileID]*cachedELF)
	}
	if _, ok := c.files[id]; !ok && len(c.files) >= maxCachedELF {
		c.evictOldest()
	}
	if e, ok := c.files[id]; ok && e.ef != mf.ef {
		c.drop(e)
	}
	if c.keeper != nil {
		c.keeper.Keep(mf.ef)
	}
	c.files[id] = &cachedELF{ef: mf.ef, fh: mf.fh, used: now}
	mf.ef, mf.fh = nil, nil
}

// drop closes e's file, once the builder forgot it.
func (c *elfCache) drop(e *cachedELF) {
	if c.keeper != nil {
		c.keeper.Forget(e.ef)
	}
	e.ef.Close()
}

// expire closes the files unused since cachedELFTTL before now.
func (c *elfCache) expire(now time.Time) {
	for id, e := range c.files {
		if now.Sub(e.used) > cachedELFTTL {
			c.drop(e)
			delete(c.files, id)
		}
	}
}

// evictOldest closes the file used least recently.
func (c *elfCache) evictOldest() {
	oldest := leastRecent(c.files, func(e *cachedELF) time.Time { return e.used })
	if e, ok := c.files[oldest]; ok {
		c.drop(e)
		delete(c.files, oldest)
	}
}

// close closes every file held.
func (c *elfCache) close() {
	for id, e := range c.files {
		c.drop(e)
		delete(c.files, id)
	}
}
