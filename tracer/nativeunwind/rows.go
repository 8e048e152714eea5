package nativeunwind

import (
	"cmp"
	"debug/elf"
	"fmt"
	"math"
	"slices"
	"unsafe"
)

// cfaGap marks, while a table is built, addresses that no function of a
// source covers: another source may fill them. Build turns the gaps left
// into CFAInvalid rows.
const cfaGap CFAKind = 0xff

// Rows are built, and kept in a Table, packed in a uint64 each: the file
// offset in the low addrBits bits, above it the index of the row's rule
// (its fields but Addr) in the ruleSet of the build. Rules are few (one
// per distinct frame layout), rows many: 8 bytes a row instead of a
// Row's 24, and two rows say the same exactly when their indices are
// equal.
const (
	addrBits = 42
	addrMask = 1<<addrBits - 1
	// MaxAddr bounds the file offsets of a table (4 TiB): Build fails
	// with ErrTooLarge for a row at MaxAddr or above.
	MaxAddr = 1 << addrBits
	// maxRules bounds the distinct rules of one build.
	maxRules = 1 << (64 - addrBits)
)

// packRow returns the packed row of a file offset below MaxAddr and a
// rule index below maxRules.
func packRow(addr uint64, rule uint32) uint64 { return uint64(rule)<<addrBits | addr }

// rowAddr returns the file offset of a packed row.
func rowAddr(p uint64) uint64 { return p & addrMask }

// rowRule returns the rule index of a packed row.
func rowRule(p uint64) uint32 { return uint32(p >> addrBits) }

// The rules every ruleSet has, at these indices.
const (
	ruleGap     uint32 = iota // Row{CFA: cfaGap}
	ruleInvalid               // Row{CFA: CFAInvalid}
)

// ruleSet interns the rules of a build: it gives each distinct rule (a
// Row without its Addr) an index.
type ruleSet struct {
	rules []Row     // by index, Addr 0
	keys  []ruleKey // of rules, by index
	// slots is an open-addressing hash table of indices+1 into rules (0
	// is an empty slot); its length is 1<<bits, at least twice
	// len(rules).
	slots []uint32
	bits  uint
	// last is the key of the rule interned last, at index lastIndex:
	// neighbouring rows often have the same rule.
	last      ruleKey
	lastIndex uint32
	// memo holds 1+the index of the rule of common call frame states
	// (arch.memoIndex), 0 when not looked up yet; memoUsed the entries
	// set, which reset clears.
	memo     []uint32
	memoUsed []uint16
}

// memoized returns the rule of the state of memo index i, when known.
func (s *ruleSet) memoized(i int) (uint32, bool) {
	if s.memo == nil {
		return 0, false
	}
	r := s.memo[i]
	return r - 1, r != 0
}

// memoize records rule as that of the state of memo index i.
func (s *ruleSet) memoize(i int, rule uint32) {
	if s.memo == nil {
		s.memo = make([]uint32, memoStates)
	}
	s.memo[i] = rule + 1
	s.memoUsed = append(s.memoUsed, uint16(i))
}

// ruleKey is a rule packed in two words, to hash and compare.
type ruleKey struct{ a, b uint64 }

// noKey is the key of no rule: bits 8-31 of a key's a are 0.
var noKey = ruleKey{a: 1 << 8}

// keyOf returns the key of r's rule.
func keyOf(r Row) ruleKey {
	return ruleKey{
		a: uint64(r.CFA) | uint64(uint32(r.RAOffset))<<32,
		b: uint64(uint32(r.CFAOffset)) | uint64(uint32(r.FPOffset))<<32,
	}
}

// slot returns the first slot of k in a table of 1<<bits slots: the top
// bits of a multiplicative hash, which depend on all of the key's bits.
func (k ruleKey) slot(bits uint) uint64 {
	h := (k.a ^ k.b*0xc2b2ae3d27d4eb4f) * 0x9e3779b97f4a7c15
	return h >> (64 - bits)
}

// reset empties s but for ruleGap and ruleInvalid.
func (s *ruleSet) reset() {
	s.rules, s.keys = s.rules[:0], s.keys[:0]
	s.last = noKey
	for _, i := range s.memoUsed {
		s.memo[i] = 0
	}
	s.memoUsed = s.memoUsed[:0]
	if len(s.slots) == 0 {
		s.bits = 6
		s.slots = make([]uint32, 1<<s.bits)
	} else {
		clear(s.slots)
	}
	s.intern(Row{CFA: cfaGap})
	s.intern(Row{CFA: CFAInvalid})
}

// intern returns the index of r's rule (r without its Addr), adding it;
// false means s is full (maxRules).
func (s *ruleSet) intern(r Row) (uint32, bool) {
	k := keyOf(r)
	if k == s.last {
		return s.lastIndex, true
	}
	i, ok := s.lookup(k, r)
	if ok {
		s.last, s.lastIndex = k, i
	}
	return i, ok
}

// lookup returns the index of the rule r, whose key is k, adding it.
func (s *ruleSet) lookup(k ruleKey, r Row) (uint32, bool) {
	mask := uint64(len(s.slots) - 1)
	h := k.slot(s.bits)
	for ; s.slots[h] != 0; h = (h + 1) & mask {
		if i := s.slots[h] - 1; s.keys[i] == k {
			return i, true
		}
	}
	if len(s.rules) >= maxRules {
		return 0, false
	}
	r.Addr = 0
	s.rules, s.keys = append(s.rules, r), append(s.keys, k)
	n := uint32(len(s.rules))
	if 2*len(s.rules) <= len(s.slots) {
		s.slots[h] = n
		return n - 1, true
	}
	// Rehash into twice the slots.
	s.bits++
	s.slots = make([]uint32, 1<<s.bits)
	mask = uint64(len(s.slots) - 1)
	for i, k := range s.keys {
		h := k.slot(s.bits)
		for s.slots[h] != 0 {
			h = (h + 1) & mask
		}
		s.slots[h] = uint32(i) + 1
	}
	return n - 1, true
}

// bytes returns the memory s holds.
func (s *ruleSet) bytes() int {
	return cap(s.rules)*int(unsafe.Sizeof(Row{})) + cap(s.keys)*int(unsafe.Sizeof(ruleKey{})) + len(s.slots)*4 + len(s.memo)*4 + cap(s.memoUsed)*2
}

// builder collects the rows of one source in address order, merging
// equal neighbours. Rows come in ranges (an FDE, a Go function): begin a
// range, give it spans, finish it. A range that starts below the end of
// the ranges before it is clipped to start there.
type builder struct {
	rows  []uint64 // packed
	rules *ruleSet
	max   int
	err   error

	lo, hi uint64 // the current range
	last   uint64 // end of its last span
	end    uint64 // end of the earlier ranges
}

// newBuilder returns a builder of at most maxRows rows, their rules in
// rules, that appends them to dst[:0], grown to capHint rows first.
func newBuilder(dst []uint64, rules *ruleSet, maxRows, capHint int) builder {
	return builder{max: maxRows, rules: rules, rows: slices.Grow(dst[:0], max(min(capHint, maxRows), 0)+1)}
}

// begin starts the range [lo, hi) of file offsets; false means nothing of
// it is left to add.
func (b *builder) begin(lo, hi uint64) bool {
	lo = max(lo, b.end)
	if b.err != nil || hi <= lo {
		return false
	}
	b.lo, b.hi, b.last = lo, hi, lo
	return true
}

// span sets the rule r (r.Addr is ignored) for the offsets [lo, hi) of
// the current range. Spans come in address order.
func (b *builder) span(lo, hi uint64, r Row) {
	if l := max(lo, b.lo); l >= min(hi, b.hi) || l < b.last {
		return // nothing of it in the range: r is not interned
	}
	rule, ok := b.rules.intern(r)
	if !ok {
		b.fail(fmt.Errorf("%w: more than %d distinct rules", ErrTooLarge, maxRules))
		return
	}
	b.spanRule(lo, hi, rule)
}

// spanRule is span with the index of a rule of b.rules.
func (b *builder) spanRule(lo, hi uint64, rule uint32) {
	lo, hi = max(lo, b.lo), min(hi, b.hi)
	if lo >= hi || lo < b.last {
		return
	}
	if lo > b.last {
		// A hole inside the range: nothing said how to unwind there.
		b.add(b.last, ruleInvalid)
	}
	b.add(lo, rule)
	b.last = hi
}

// finish ends the current range with a gap, which the next range replaces
// when it starts right there.
func (b *builder) finish() {
	if b.last > b.lo {
		b.add(b.last, ruleGap)
		b.end = b.last
	}
}

// fail records the first error of the build.
func (b *builder) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// add appends the row (addr, rule), which replaces a row at the same
// address, unless the row before has the same rule.
func (b *builder) add(addr uint64, rule uint32) {
	n := len(b.rows)
	if n > 0 && rowAddr(b.rows[n-1]) == addr {
		n--
		b.rows = b.rows[:n]
	}
	if n > 0 && rowRule(b.rows[n-1]) == rule {
		return
	}
	if n >= b.max {
		b.fail(fmt.Errorf("%w: more than %d rows", ErrTooLarge, b.max))
		return
	}
	if addr >= MaxAddr {
		b.fail(fmt.Errorf("%w: file offset %#x", ErrTooLarge, addr))
		return
	}
	b.rows = append(b.rows, packRow(addr, rule))
}

// overlay returns the rows of top where top has rules and those of bottom
// in top's gaps. When both have rows, they are merged in top's memory
// (grown if it has no room for len(bottom) more rows), which must not
// overlap bottom's: top's rows are moved to its end and merged from there
// into its start, where a row is written only once the rows it overwrites
// have been read.
func overlay(top, bottom []uint64, maxRows int) ([]uint64, error) {
	if len(bottom) == 0 {
		return top, nil
	}
	if len(top) == 0 {
		return bottom, nil
	}
	n, m := len(top), len(bottom)
	buf := slices.Grow(top, m)[:n+m]
	copy(buf[m:], buf[:n])
	top = buf[m:]
	// After reading i rows of top and j of bottom, at most i+j rows are
	// written, all below top[i], which is buf[m+i], since j <= m.
	b := builder{rows: buf[:0], max: maxRows}
	t, u := ruleGap, ruleGap // the rules in effect
	for i, j := 0, 0; i < len(top) || j < len(bottom); {
		var addr uint64
		switch {
		case j == len(bottom) || i < len(top) && rowAddr(top[i]) <= rowAddr(bottom[j]):
			addr = rowAddr(top[i])
		default:
			addr = rowAddr(bottom[j])
		}
		if i < len(top) && rowAddr(top[i]) == addr {
			t = rowRule(top[i])
			i++
		}
		if j < len(bottom) && rowAddr(bottom[j]) == addr {
			u = rowRule(bottom[j])
			j++
		}
		r := t
		if r == ruleGap {
			r = u
		}
		b.add(addr, r)
	}
	return b.rows, b.err
}

// coverage is the set of file offsets that some rows have rules for, as
// the sorted list of the holes between them.
type coverage struct {
	holes []hole
}

// hole is a range [lo, hi) of file offsets without rules.
type hole struct{ lo, hi uint64 }

// newCoverage returns the coverage of rows (packed, sorted, ending in a
// gap), its holes in dst[:0].
func newCoverage(dst []hole, rows []uint64) coverage {
	if len(rows) == 0 {
		return coverage{holes: append(dst[:0], hole{0, math.MaxUint64})}
	}
	c := coverage{holes: append(dst[:0], hole{0, rowAddr(rows[0])})}
	for i, p := range rows {
		if rowRule(p) != ruleGap {
			continue
		}
		end := uint64(math.MaxUint64)
		if i+1 < len(rows) {
			end = rowAddr(rows[i+1])
		}
		c.holes = append(c.holes, hole{rowAddr(p), end})
	}
	return c
}

// covers reports whether all of [lo, hi) has rules.
func (c coverage) covers(lo, hi uint64) bool {
	// The first hole that ends after lo must start at hi or later.
	i, _ := slices.BinarySearchFunc(c.holes, lo, func(h hole, lo uint64) int { return cmp.Compare(h.hi, lo+1) })
	return i == len(c.holes) || c.holes[i].lo >= hi
}

// finalize turns gaps into CFAInvalid rows, merging them with their
// neighbours, in place.
func finalize(rows []uint64) []uint64 {
	out := rows[:0]
	for _, p := range rows {
		rule := rowRule(p)
		if rule == ruleGap {
			rule = ruleInvalid
			p = packRow(rowAddr(p), rule)
		}
		if n := len(out); n > 0 && rowRule(out[n-1]) == rule {
			continue
		}
		out = append(out, p)
	}
	return out
}

// markEntry makes the ELF entry point the end of the stack when no call
// frame information covers it. The entry point is the outermost frame of
// a process by definition, but hand-written entry code often says nothing
// (the dynamic loader's _start, static musl binaries): without this mark an
// unwinder reaching it would report missing information instead of a
// complete stack.
func markEntry(rows []uint64, rules *ruleSet, ef *elf.File, segs segments) ([]uint64, error) {
	seg, ok := segs.find(ef.Entry)
	if !ok || ef.Entry == 0 {
		return rows, nil
	}
	off := seg.offset(ef.Entry)
	i, found := slices.BinarySearchFunc(rows, off, func(p uint64, a uint64) int { return cmp.Compare(rowAddr(p), a) })
	invalidAt := func(i int) bool { return rules.rules[rowRule(rows[i])].CFA == CFAInvalid }
	if found && !invalidAt(i) || !found && i > 0 && !invalidAt(i-1) {
		return rows, nil
	}
	// Nothing after the entry point: its rule ends at the end of its
	// segment.
	last := i == len(rows)
	if end := seg.off + seg.size; last && end >= MaxAddr {
		return rows, fmt.Errorf("%w: file offset %#x", ErrTooLarge, end)
	}
	eos, ok := rules.intern(Row{CFA: CFAEndOfStack})
	if !ok {
		return rows, fmt.Errorf("%w: more than %d distinct rules", ErrTooLarge, maxRules)
	}
	if found {
		rows[i] = packRow(off, eos)
		return rows, nil
	}
	rows = slices.Insert(rows, i, packRow(off, eos))
	if last {
		rows = append(rows, packRow(seg.off+seg.size, ruleInvalid))
	}
	return rows, nil
}

// segment is the file part of an executable PT_LOAD segment: addresses
// [vaddr, vaddr+size) are file offsets [off, off+size).
type segment struct {
	vaddr, off, size uint64
}

// offset returns the file offset of an address of s.
func (s segment) offset(vaddr uint64) uint64 { return vaddr - s.vaddr + s.off }

// segments are a file's executable segments.
type segments []segment

// appendExecSegments appends the executable PT_LOAD segments of ef to
// segs.
func appendExecSegments(segs segments, ef *elf.File) segments {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Filesz > 0 && p.Vaddr+p.Filesz > p.Vaddr {
			segs = append(segs, segment{vaddr: p.Vaddr, off: p.Off, size: p.Filesz})
		}
	}
	return segs
}

// find returns the segment holding the address.
func (s segments) find(vaddr uint64) (segment, bool) {
	if i, ok := s.index(vaddr); ok {
		return s[i], true
	}
	return segment{}, false
}

// index returns the index of the segment holding the address.
func (s segments) index(vaddr uint64) (int, bool) {
	for i, seg := range s {
		if vaddr >= seg.vaddr && vaddr-seg.vaddr < seg.size {
			return i, true
		}
	}
	return 0, false
}
