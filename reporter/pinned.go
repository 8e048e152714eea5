package reporter

import (
	"encoding/binary"
	"math/bits"

	"github.com/stackline-dev/stackline/trace"
)

// pinnedFrames is the frame metadata an interval pins: a hash table with
// open addressing in one array of 32-byte slots, two to a cache line, and
// the metadata apart, in the order it was pinned.
//
// FrameKnown asks it for every frame of every trace, a few traces at a
// time between the Run goroutine's sleeps, with the caches taken by other
// work meanwhile: a question costs the cache misses it makes. A Go map
// keyed by trace.FrameID (whose padding makes its hash and equality
// functions calls) took a dozen dependent loads through its directory,
// table and groups, and its slots held the metadata beside the keys; a
// question here loads the slice header, beside the interval's other
// fields, and then one slot, rarely two.
type pinnedFrames struct {
	// slots has a power-of-two length, at least twice the entries (the
	// table grows before it is half full); nil until the first entry.
	slots []pinnedSlot
	infos []trace.FrameInfo
	seed  uint64
}

// pinnedSlot is one slot of a pinnedFrames: a frame ID, laid out without
// its padding, and the index of its metadata in infos plus one (0 for an
// empty slot).
type pinnedSlot struct {
	file trace.FileID
	addr uint64
	typ  trace.FrameType
	info uint32 // index in infos + 1; 0: empty
}

// minPinnedSlots is the smallest table a pinnedFrames allocates.
const minPinnedSlots = 256

// newPinnedFrames returns a table with room for about hint entries before
// it grows, seeded with seed.
func newPinnedFrames(hint int, seed uint64) pinnedFrames {
	p := pinnedFrames{seed: seed}
	if hint > 0 {
		p.slots = make([]pinnedSlot, slotsFor(hint))
		p.infos = make([]trace.FrameInfo, 0, hint)
	}
	return p
}

// slotsFor returns the table size for n entries: a power of two at least
// 2n + 2 and minPinnedSlots.
func slotsFor(n int) int {
	return max(minPinnedSlots, 1<<bits.Len(uint(2*n+1)))
}

// len returns the number of frames pinned.
func (p *pinnedFrames) len() int { return len(p.infos) }

// hash returns the hash of id under the table's seed: the file ID is a
// SHA-256 prefix (or derived from one), mixed already; the address and
// type are mixed in with two multiplications, seeded so that addresses
// chosen to collide cannot be picked without knowing the seed.
func (p *pinnedFrames) hash(id *trace.FrameID) uint64 {
	h := (id.Addr ^ p.seed) * 0x9e3779b97f4a7c15
	h ^= binary.LittleEndian.Uint64(id.File[:8]) ^ binary.LittleEndian.Uint64(id.File[8:]) ^ uint64(id.Type)<<56
	h *= 0xbf58476d1ce4e5b9
	return h ^ h>>31
}

// find returns the index of id's slot, or of the empty slot where it
// would go.
func (p *pinnedFrames) find(id *trace.FrameID) int {
	mask := len(p.slots) - 1
	i := int(p.hash(id)>>32) & mask
	for {
		s := &p.slots[i]
		if s.info == 0 || s.addr == id.Addr && s.file == id.File && s.typ == id.Type {
			return i
		}
		i = (i + 1) & mask
	}
}

// has reports whether id is pinned.
func (p *pinnedFrames) has(id trace.FrameID) bool {
	if len(p.slots) == 0 {
		return false
	}
	return p.slots[p.find(&id)].info != 0
}

// get returns the metadata pinned for id.
func (p *pinnedFrames) get(id trace.FrameID) (trace.FrameInfo, bool) {
	if len(p.slots) == 0 {
		return trace.FrameInfo{}, false
	}
	s := &p.slots[p.find(&id)]
	if s.info == 0 {
		return trace.FrameInfo{}, false
	}
	return p.infos[s.info-1], true
}

// put pins info for id, replacing what was pinned for it.
func (p *pinnedFrames) put(id trace.FrameID, info trace.FrameInfo) {
	if 2*(len(p.infos)+1) >= len(p.slots) {
		p.grow()
	}
	s := &p.slots[p.find(&id)]
	if s.info != 0 {
		p.infos[s.info-1] = info
		return
	}
	p.infos = append(p.infos, info)
	*s = pinnedSlot{file: id.File, addr: id.Addr, typ: id.Type, info: uint32(len(p.infos))}
}

// grow doubles the table (or makes the first one) and places the entries
// anew.
func (p *pinnedFrames) grow() {
	old := p.slots
	p.slots = make([]pinnedSlot, slotsFor(len(p.infos)+1))
	for i := range old {
		s := &old[i]
		if s.info == 0 {
			continue
		}
		id := trace.FrameID{File: s.file, Addr: s.addr, Type: s.typ}
		p.slots[p.find(&id)] = *s
	}
}
