package symbolizer

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"slices"

	"github.com/stackline-dev/stackline/internal/keysort"
)

// candidate is a symbol read from a symbol table, before deduplication:
// 24 bytes, since a large C++ program has hundreds of thousands.
type candidate struct {
	value uint64
	// size is the symbol's size, at most math.MaxUint32 (a symbol's
	// extent is kept in 32 bits).
	size uint32
	// nameOff is the offset of its name, which is NUL-terminated, in
	// the string table of its symbol table.
	nameOff uint32
	// seq is the order the tables list it in: the number of candidates
	// the tableBuilder read before it, which tells its symbol table
	// (tableBuilder.tables).
	seq         uint32
	shndx       uint16 // its section in its file
	rank        uint8  // higher is preferred among symbols at one address
	underscores uint8  // leading underscores, fewer is preferred
}

// Ranking bits of candidate.rank.
const (
	rankFunc   = 1 << 0
	rankSymtab = 1 << 1
	rankGlobal = 1 << 2
)

// tableBuilder collects the symbols of a file's symbol tables and packs
// them into a File's sorted index. The symbol tables are read in place
// (mapped) and only for as long as the build takes; string tables that
// can be mapped are kept mapped, as the names of the index, and those read
// into the heap (MiniDebugInfo, files that are not regular files) are
// compacted to the names the index keeps.
type tableBuilder struct {
	cands   []candidate
	strtabs []builderStrtab
	// secEnds holds the end addresses of the sections of the files whose
	// tables were read, those of each file one after the other.
	secEnds []uint64
	// tables are the symbol tables read, in order: the candidates of
	// tables[i] have seq from tables[i].firstSeq on.
	tables []readTable
	// nextSeq is the seq of the next candidate read.
	nextSeq uint32
	limit   uint64 // largest table read

	// deferred are .dynsym tables read only if the build finds one of
	// their symbols not named as well by a .symtab (see deferSymbols);
	// the tableBuilder closes them.
	deferred []*symTable

	// Symbols in [excludeLo, excludeHi) are left out.
	excludeLo, excludeHi uint64

	// keys, when not nil, lends the sort of the candidates its words.
	keys *keysort.Buffer
	// starts is the memory of the last addrIndex made (readDeferred).
	starts []int32
	// words is the memory of coveredSorted's symbols.
	words []uint64
}

// readTable is a symbol table a tableBuilder read.
type readTable struct {
	firstSeq uint32 // seq of its first candidate
	strtab   uint8  // index of its string table in strtabs
	secBase  uint32 // index of its file's first section in secEnds
}

// tableOf returns the symbol table that c comes from.
func (b *tableBuilder) tableOf(c *candidate) *readTable {
	i := len(b.tables) - 1
	for i > 0 && b.tables[i].firstSeq > c.seq {
		i--
	}
	return &b.tables[i]
}

// builderStrtab is a string table a tableBuilder read: mem is its
// mapping, or nil when data is in the heap.
type builderStrtab struct {
	data, mem []byte
}

// release unmaps the string tables that build did not hand to a File,
// and the deferred symbol tables.
func (b *tableBuilder) release() {
	for _, st := range b.strtabs {
		unmap(st.mem)
	}
	b.strtabs = nil
	for _, t := range b.deferred {
		t.close()
	}
	b.deferred = nil
}

// elfSym is a symbol table entry, decoded.
type elfSym struct {
	name        uint32
	info        byte
	shndx       uint16
	value, size uint64
}

// symTable is a symbol table being read: its entries, mapped or in the
// heap, and its string table, which the tableBuilder keeps.
type symTable struct {
	name    string
	typ     elf.SectionType
	data    []byte // the entries
	mem     []byte // the mapping of data, nil when in the heap
	entSize int
	le64    bool // ELFCLASS64, little-endian: decoded by decodeSym64LE
	class   elf.Class
	bo      binary.ByteOrder
	strs    []byte
	strtab  uint8  // index of strs in the tableBuilder's strtabs
	secBase uint32 // index of the file's first section in its secEnds
	code    codeSections
}

// close unmaps the entries of t.
func (t *symTable) close() { unmap(t.mem) }

// addSymbols reads the symbols of one SHT_SYMTAB or SHT_DYNSYM section of
// ef, mapping it and its string table from fh when fh is not nil.
func (b *tableBuilder) addSymbols(ef *elf.File, fh *os.File, sec *elf.Section) error {
	t, err := b.openSymbols(ef, fh, sec)
	if err != nil || t == nil {
		return err
	}
	defer t.close()
	return b.readSymbols(t)
}

// openSymbols maps (from fh, when not nil) or reads the symbol table sec
// of ef and its string table, and adds the string table and the ends of
// ef's sections to b. It returns nil for a table without data.
func (b *tableBuilder) openSymbols(ef *elf.File, fh *os.File, sec *elf.Section) (*symTable, error) {
	if sec.Type == elf.SHT_NOBITS {
		return nil, nil
	}
	entSize, err := symSize(ef.Class)
	if err != nil {
		return nil, err
	}
	strSec, err := b.checkTables(ef, sec)
	if err != nil {
		return nil, err
	}
	data, symMem, err := sectionData(fh, sec)
	if err != nil {
		return nil, fmt.Errorf("read symbols: %w", err)
	}
	strs, strMem, err := sectionData(fh, strSec)
	if err != nil {
		unmap(symMem)
		return nil, fmt.Errorf("read string table %s: %w", strSec.Name, err)
	}
	strtab := uint8(len(b.strtabs))
	b.strtabs = append(b.strtabs, builderStrtab{data: strs, mem: strMem})
	if uint64(len(b.secEnds))+uint64(len(ef.Sections)) > math.MaxUint32 {
		unmap(symMem)
		return nil, errors.New("too many sections")
	}
	secBase := uint32(len(b.secEnds))
	b.secEnds = slices.Grow(b.secEnds, len(ef.Sections))
	for _, sec := range ef.Sections {
		end := sec.Addr + sec.Size
		if end < sec.Addr {
			end = math.MaxUint64
		}
		b.secEnds = append(b.secEnds, end)
	}
	return &symTable{
		name: sec.Name, typ: sec.Type,
		data: data, mem: symMem, entSize: entSize,
		le64: ef.Class == elf.ELFCLASS64 && ef.ByteOrder == binary.LittleEndian, class: ef.Class, bo: ef.ByteOrder,
		strs: strs, strtab: strtab, secBase: secBase,
		code: newCodeSections(ef),
	}, nil
}

// readSymbols adds the candidates of the tables to b.
//
// The candidates are allocated once, for as many as the tables have
// entries, not grown by appending nor grown again for the next table:
// most entries of a program's table are candidates, and counting those
// that are would be a pass of its own over the table (a fifth of the
// read of node's).
func (b *tableBuilder) readSymbols(tables ...*symTable) error {
	n, nt, seq := len(b.cands), len(b.tables), b.nextSeq
	entries := 0
	for _, t := range tables {
		entries += len(t.data) / t.entSize
	}
	var cur *symTable
	err := withFaults(func() {
		b.cands = grow(b.cands, entries)
		for _, t := range tables {
			cur = t
			t.toSym64LE()
			b.fillSymbols(t)
		}
	})
	if err != nil {
		b.cands, b.tables, b.nextSeq = b.cands[:n], b.tables[:nt], seq
		return fmt.Errorf("%s: %w", cur.name, err)
	}
	return nil
}

// fillSymbols appends the candidates of t to b.cands.
//
// The entry and the candidate are filled field by field where they live
// (a local and the slice element), not returned and copied as values:
// the copy of a struct just stored field by field reads it back whole,
// which the processor cannot forward from its pending stores, and those
// stalls were most of the loop's time on a large program's table.
func (b *tableBuilder) fillSymbols(t *symTable) {
	b.tables = append(b.tables, readTable{firstSeq: b.nextSeq, strtab: t.strtab, secBase: t.secBase})
	names := newNameCheck(t.strs)
	cands := b.cands
	var s elfSym
	for off := t.entSize; off+t.entSize <= len(t.data); off += t.entSize {
		s.decode64LE(t.data[off : off+elf.Sym64Size])
		if b.excluded(s.value) || !t.code.symbol(&s) {
			continue
		}
		cands = append(cands, candidate{})
		c := &cands[len(cands)-1]
		if !newCandidate(c, t.typ, &s, t.strs, names) {
			cands = cands[:len(cands)-1]
			continue
		}
		c.seq = b.nextSeq
		b.nextSeq++
	}
	b.cands = cands
}

// grow returns s with room for n more elements. Unlike slices.Grow, which
// copies the whole capacity of s, it copies only the elements of s: the
// buffers of a load are lent to the next (scratch), and copying the rest
// of one, what the load before left there, faulted in and wrote
// megabytes of fresh memory for nothing when it grew.
func grow[E any](s []E, n int) []E {
	if cap(s)-len(s) >= n {
		return s
	}
	g := make([]E, len(s), len(s)+n)
	copy(g, s)
	return g
}

// deferSymbols takes the .dynsym t of a file whose .symtab b has read,
// for the build, which reads its names only if one of its symbols is not
// named as well by the symbols read (readDeferred).
func (b *tableBuilder) deferSymbols(t *symTable) {
	b.deferred = append(b.deferred, t)
}

// readDeferred returns kept, the deduplicated candidates, with those of
// the deferred tables added when they change it: when a deferred symbol's
// address has no kept symbol that both wins over it and is at least as
// large. A global .symtab symbol wins over any .dynsym one, so a file
// whose .symtab holds its .dynsym's symbols, as a linker writes it, has
// its .dynsym's names left unread.
func (b *tableBuilder) readDeferred(kept []candidate) ([]candidate, error) {
	if len(b.deferred) == 0 {
		return kept, nil
	}
	covered := true
	var cur *symTable
	err := withFaults(func() {
		// Many deferred symbols (node's .dynsym) are sorted and walked
		// beside kept; a few (libjvm's) are binary searches.
		entries := 0
		for _, t := range b.deferred {
			entries += len(t.data) / t.entSize
		}
		if entries >= len(kept)/8 {
			// Walked in order of address, beside kept: a .dynsym
			// lists its symbols by hash, and looking each up in kept
			// would be a cache miss or two apiece.
			var ok bool
			if covered, ok = b.coveredSorted(kept, &cur); !ok {
				// Addresses or sizes too large to pack: an index.
				idx := newAddrIndex(kept, b.starts)
				b.starts = idx.starts
				covered = b.coveredEach(kept, &idx, &cur)
			}
		} else {
			covered = b.coveredEach(kept, &addrIndex{}, &cur)
		}
		if covered {
			return
		}
		// Deduplicating the kept candidates with the deferred ones
		// gives what deduplicating all of them would: each kept one
		// won over the candidates at its address it replaced, and
		// carries their largest size.
		b.cands = kept
		for _, t := range b.deferred {
			cur = t
			t.toSym64LE()
			b.fillSymbols(t)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cur.name, err)
	}
	if covered {
		return kept, nil
	}
	return b.dedup(), nil
}

// coveredEach reports whether every deferred table is covered, looking
// each symbol up through idx; cur is set to the table being read.
func (b *tableBuilder) coveredEach(kept []candidate, idx *addrIndex, cur **symTable) bool {
	for _, t := range b.deferred {
		*cur = t
		t.toSym64LE()
		if !b.covered(t, kept, idx) {
			return false
		}
	}
	return true
}

// Packing of a deferred symbol's address and size into one word for
// coveredSorted: the size in the low spanSizeBits, the address above.
const (
	spanSizeBits = 24
	spanSizeMask = 1<<spanSizeBits - 1
)

// coveredSorted reports, as coveredEach does, whether every code symbol
// of the deferred tables has a kept symbol at its address that wins over
// it and is at least as large, by sorting their addresses and walking
// them beside kept; cur is set to the table being read. It reports false
// for ok when an address or a size does not fit in a packed word: the
// caller looks them up instead.
func (b *tableBuilder) coveredSorted(kept []candidate, cur **symTable) (covered, ok bool) {
	const wins = rankGlobal | rankSymtab
	entries := 0
	for _, t := range b.deferred {
		entries += len(t.data) / t.entSize
	}
	words := grow(b.words[:0], entries)
	var s elfSym
	for _, t := range b.deferred {
		*cur = t
		t.toSym64LE()
		for off := t.entSize; off+t.entSize <= len(t.data); off += t.entSize {
			s.decode64LE(t.data[off : off+elf.Sym64Size])
			if b.excluded(s.value) || !t.code.symbol(&s) {
				continue
			}
			if s.value >= 1<<(64-spanSizeBits) || s.size > spanSizeMask {
				b.words = words
				return false, false
			}
			words = append(words, s.value<<spanSizeBits|s.size)
		}
	}
	b.words = words
	// By address: the packed words' order but for the sizes.
	keysort.Words(words, spanSizeBits, b.keys)
	i := 0
	for _, w := range words {
		v, size := w>>spanSizeBits, w&spanSizeMask
		for i < len(kept) && kept[i].value < v {
			i++
		}
		if i == len(kept) || kept[i].value != v || kept[i].rank&wins != wins || uint64(kept[i].size) < size {
			return false, true
		}
	}
	return true, true
}

// covered reports whether every code symbol of t (64-bit little-endian
// entries) has a kept symbol at its address that wins over it (a global
// .symtab symbol) and is at least as large; idx indexes kept.
func (b *tableBuilder) covered(t *symTable, kept []candidate, idx *addrIndex) bool {
	const wins = rankGlobal | rankSymtab
	var s elfSym
	for off := t.entSize; off+t.entSize <= len(t.data); off += t.entSize {
		s.decode64LE(t.data[off : off+elf.Sym64Size])
		if b.excluded(s.value) || !t.code.symbol(&s) {
			continue
		}
		i := idx.find(kept, s.value)
		if i == len(kept) || kept[i].value != s.value || kept[i].rank&wins != wins || uint64(kept[i].size) < min(s.size, math.MaxUint32) {
			return false
		}
	}
	return true
}

// addrIndex finds sorted candidates by address: the addresses from the
// first candidate's to the last's are cut into buckets of 1<<shift, about
// as many as the candidates, and starts[k] is the index of the first
// candidate in bucket k or after it. A search is then a binary search of
// one bucket, which holds about one candidate.
type addrIndex struct {
	lo     uint64
	shift  uint
	starts []int32
}

// newAddrIndex returns the index of cands, sorted by address, in buf's
// memory when it is large enough.
func newAddrIndex(cands []candidate, buf []int32) addrIndex {
	if len(cands) == 0 {
		return addrIndex{}
	}
	x := addrIndex{lo: cands[0].value}
	span := cands[len(cands)-1].value - x.lo
	if n := bits.Len64(span); n > bits.Len(uint(len(cands))) {
		x.shift = uint(n - bits.Len(uint(len(cands))))
	}
	buckets := int(span>>x.shift) + 1
	x.starts = grow(buf[:0], buckets+1)[:buckets+1]
	k := 0
	for i := range cands {
		for b := int((cands[i].value - x.lo) >> x.shift); k <= b; k++ {
			x.starts[k] = int32(i)
		}
	}
	for ; k <= buckets; k++ {
		x.starts[k] = int32(len(cands))
	}
	return x
}

// find returns the index of the first of cands (those the index was
// made of) at addr or above it. The zero addrIndex searches all of cands.
func (x *addrIndex) find(cands []candidate, addr uint64) int {
	lo, hi := 0, len(cands)
	if x.starts != nil {
		if addr < x.lo {
			return 0
		}
		k := (addr - x.lo) >> x.shift
		if k >= uint64(len(x.starts)-1) {
			return len(cands)
		}
		lo, hi = int(x.starts[k]), int(x.starts[k+1])
	}
	// A bucket holds about one candidate: a few steps of binary search
	// without a call per step.
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if cands[mid].value < addr {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// excluded reports whether a symbol at addr is left out.
func (b *tableBuilder) excluded(addr uint64) bool {
	return addr >= b.excludeLo && addr < b.excludeHi
}

// checkTables checks the symbol table sec and its string table against
// the builder's limits and returns the string table.
func (b *tableBuilder) checkTables(ef *elf.File, sec *elf.Section) (*elf.Section, error) {
	if sec.Size > b.limit {
		return nil, fmt.Errorf("%w: symbol table of %d bytes", errSectionTooLarge, sec.Size)
	}
	if int(sec.Link) >= len(ef.Sections) || sec.Link == 0 {
		return nil, fmt.Errorf("invalid string table index %d", sec.Link)
	}
	strSec := ef.Sections[sec.Link]
	if strSec.Type != elf.SHT_STRTAB {
		return nil, fmt.Errorf("linked section %d is not a string table", sec.Link)
	}
	if strSec.Size > b.limit {
		return nil, fmt.Errorf("%w: string table of %d bytes", errSectionTooLarge, strSec.Size)
	}
	// Symbol and string tables are never compressed in practice, and
	// decompressing lets a small file claim a huge table.
	if compressed(sec) || compressed(strSec) {
		return nil, errors.New("compressed symbol or string table")
	}
	if len(b.strtabs) >= math.MaxUint8 {
		return nil, errors.New("too many symbol tables")
	}
	return strSec, nil
}

// symSize returns the size of a symbol table entry of the ELF class.
func symSize(class elf.Class) (int, error) {
	switch class {
	case elf.ELFCLASS64:
		return elf.Sym64Size, nil
	case elf.ELFCLASS32:
		return elf.Sym32Size, nil
	}
	return 0, fmt.Errorf("unsupported ELF class %v", class)
}

// toSym64LE rewrites the entries of t, when they are not 64-bit
// little-endian entries, as such, in the heap: one decoder serves every
// file, and the rare others (32-bit, big-endian) pay for a copy.
func (t *symTable) toSym64LE() {
	if t.le64 {
		return
	}
	n := len(t.data) / t.entSize
	out := make([]byte, n*elf.Sym64Size)
	for i := range n {
		s := decodeSym(t.class, t.bo, t.data[i*t.entSize:(i+1)*t.entSize])
		e := out[i*elf.Sym64Size:]
		binary.LittleEndian.PutUint32(e[0:4], s.name)
		e[4] = s.info
		binary.LittleEndian.PutUint16(e[6:8], s.shndx)
		binary.LittleEndian.PutUint64(e[8:16], s.value)
		binary.LittleEndian.PutUint64(e[16:24], s.size)
	}
	t.data, t.entSize, t.le64 = out, elf.Sym64Size, true
}

// decode64LE sets s to the 64-bit little-endian symbol table entry e.
// It fills s in place, for the reason fillSymbols gives.
func (s *elfSym) decode64LE(e []byte) {
	_ = e[23]
	s.name = binary.LittleEndian.Uint32(e[0:4])
	s.info = e[4]
	s.shndx = binary.LittleEndian.Uint16(e[6:8])
	s.value = binary.LittleEndian.Uint64(e[8:16])
	s.size = binary.LittleEndian.Uint64(e[16:24])
}

// decodeSym decodes the symbol table entry e.
func decodeSym(class elf.Class, bo binary.ByteOrder, e []byte) elfSym {
	if class == elf.ELFCLASS64 {
		return elfSym{
			name:  bo.Uint32(e[0:4]),
			info:  e[4],
			shndx: bo.Uint16(e[6:8]),
			value: bo.Uint64(e[8:16]),
			size:  bo.Uint64(e[16:24]),
		}
	}
	return elfSym{
		name:  bo.Uint32(e[0:4]),
		value: uint64(bo.Uint32(e[4:8])),
		size:  uint64(bo.Uint32(e[8:12])),
		info:  e[12],
		shndx: bo.Uint16(e[14:16]),
	}
}

// newCandidate sets c, a zero candidate, to the code symbol s (see
// codeSections.symbol) and reports true when its name is not empty, at
// most maxNameLen bytes, and not a mapping symbol or local label; else it
// reports false and leaves c as it was. tableType is the type of the table s comes
// from; strs is its string table, which names checks.
func newCandidate(c *candidate, tableType elf.SectionType, s *elfSym, strs []byte, names nameCheck) bool {
	var rank uint8
	if elf.SymType(s.info&0xf) == elf.STT_FUNC {
		rank |= rankFunc
	}
	if !names.valid(strs, s.name) {
		return false
	}
	// A valid name is NUL-terminated, so that its first bytes up to the
	// NUL can be read without bounds beyond strs.
	n := strs[s.name:]
	// Skip mapping symbols ($x, $d, $t on ARM) and assembler-local labels,
	// which name no function.
	if n[0] == '$' || n[0] == '.' && n[1] == 'L' {
		return false
	}
	if elf.SymBind(s.info>>4) != elf.STB_LOCAL {
		rank |= rankGlobal
	}
	if tableType == elf.SHT_SYMTAB {
		rank |= rankSymtab
	}
	underscores := 0
	for underscores < math.MaxUint8 && n[underscores] == '_' {
		underscores++
	}
	c.value = s.value
	c.size = uint32(min(s.size, math.MaxUint32))
	c.shndx = s.shndx
	c.nameOff = s.name
	c.rank = rank
	c.underscores = uint8(underscores)
	return true
}

// codeSections says which sections of a file hold code: allocated and
// executable.
type codeSections []bool

// newCodeSections returns the sections of ef that hold code.
func newCodeSections(ef *elf.File) codeSections {
	code := make(codeSections, len(ef.Sections))
	for i, sec := range ef.Sections {
		code[i] = sec.Flags&elf.SHF_EXECINSTR != 0 && sec.Flags&elf.SHF_ALLOC != 0
	}
	return code
}

// symbol reports whether s, by its type and section, can name code: a
// function, or an untyped or indirect-function symbol with a nonzero
// value, defined in a section that holds code. Its name is newCandidate's
// to check.
func (code codeSections) symbol(s *elfSym) bool {
	switch elf.SymType(s.info & 0xf) {
	case elf.STT_FUNC:
	case elf.STT_NOTYPE, elf.STT_GNU_IFUNC:
		if s.value == 0 {
			return false
		}
	default:
		return false
	}
	// Only symbols defined in ordinary sections (not undefined, absolute
	// or common) that hold code.
	if s.shndx == uint16(elf.SHN_UNDEF) || s.shndx >= uint16(elf.SHN_LORESERVE) || int(s.shndx) >= len(code) {
		return false
	}
	return code[s.shndx]
}

// nameCheck checks the names of a string table: a name is valid when it
// is NUL-terminated, not empty and at most maxNameLen bytes long.
//
// Measuring every name to check its length is most of the cost of
// reading a large C++ symbol table. When the table's NULs are close
// enough together that no name can be longer than maxNameLen, which
// takes one look per block of maxNameLen/2 bytes to establish, a name is
// valid when it starts before the table's last NUL and is not empty.
type nameCheck struct {
	// lastNul is the offset of the table's last NUL, -1 without one.
	lastNul int
	// short says no name of the table can be longer than maxNameLen.
	short bool
}

// nameBlock is the stride of newNameCheck's look for NULs: with a NUL in
// every block, a name spans at most two blocks less one byte.
const nameBlock = maxNameLen / 2

// newNameCheck returns the nameCheck of the string table strs.
func newNameCheck(strs []byte) nameCheck {
	c := nameCheck{lastNul: bytes.LastIndexByte(strs, 0), short: true}
	// Every block that starts at or before the last NUL holds a NUL, so
	// from any offset up to the last NUL the next NUL is within the
	// offset's block or the next one.
	for lo := 0; lo <= c.lastNul; lo += nameBlock {
		if bytes.IndexByte(strs[lo:min(lo+nameBlock, len(strs))], 0) < 0 {
			c.short = false
			break
		}
	}
	return c
}

// valid reports whether the name at off in strs is valid.
func (c nameCheck) valid(strs []byte, off uint32) bool {
	if !c.short {
		n, ok := cstringLen(strs, off)
		return ok && n > 0 && n <= maxNameLen
	}
	return c.lastNul >= 0 && uint64(off) <= uint64(c.lastNul) && strs[off] != 0
}

// cstringLen returns the length of the NUL-terminated string at off.
func cstringLen(strs []byte, off uint32) (uint32, bool) {
	if uint64(off) >= uint64(len(strs)) {
		return 0, false
	}
	n := bytes.IndexByte(strs[off:], 0)
	if n < 0 {
		return 0, false
	}
	return uint32(n), true
}

// build sorts and deduplicates the candidates and packs them into f's
// index. It hands f the mappings of the string tables the index refers
// to, and unmaps the others.
func (b *tableBuilder) build(f *File) error {
	defer b.release()
	kept, err := b.readDeferred(b.dedup())
	if err != nil {
		return err
	}
	// Names are addressed in one space: the mapped string tables that
	// kept symbols refer to, one after the other, then an arena holding
	// copies of the names kept from string tables in the heap.
	used := make([]bool, len(b.strtabs))
	arenaSize := uint64(0)
	for i := range kept {
		k := b.tableOf(&kept[i]).strtab
		used[k] = true
		if st := b.strtabs[k]; st.mem == nil {
			n, _ := cstringLen(st.data, kept[i].nameOff)
			arenaSize += uint64(n) + 1
		}
	}
	// bases[i] is where mapped string table i starts in the name space,
	// or -1 when its names go to the arena.
	bases := make([]int64, len(b.strtabs))
	next := uint64(0)
	for i, st := range b.strtabs {
		bases[i] = -1
		if used[i] && st.mem != nil {
			bases[i] = int64(next)
			next += uint64(len(st.data))
			f.strtabs = append(f.strtabs, strtab{base: uint32(min(bases[i], math.MaxUint32)), data: st.data})
			f.maps = append(f.maps, st.mem)
			b.strtabs[i].mem = nil // f owns it now
		}
	}
	if next+arenaSize > math.MaxUint32 {
		unmap(f.maps...)
		f.strtabs, f.maps = nil, nil
		return fmt.Errorf("symbol string tables of %d bytes are too large", next+arenaSize)
	}
	var arena []byte
	if arenaSize > 0 {
		arena = make([]byte, 0, arenaSize)
	}
	f.syms = make([]symEntry, len(kept))
	for i := range kept {
		c := &kept[i]
		e := &f.syms[i]
		e.addr = c.value
		t := b.tableOf(c)
		if base := bases[t.strtab]; base >= 0 {
			e.name = uint32(uint64(base) + uint64(c.nameOff))
		} else {
			e.name = uint32(next + uint64(len(arena)))
			data := b.strtabs[t.strtab].data
			n, _ := cstringLen(data, c.nameOff)
			arena = append(arena, data[c.nameOff:c.nameOff+n]...)
			arena = append(arena, 0)
		}
		// A sized symbol covers its size. One of size zero covers up to
		// the next symbol but not past the end of its section.
		extent := uint64(c.size)
		if extent == 0 {
			end := b.secEnds[t.secBase+uint32(c.shndx)]
			if i+1 < len(kept) {
				end = min(end, kept[i+1].value)
			}
			if end > c.value {
				extent = end - c.value
			}
		}
		e.extent = uint32(min(extent, math.MaxUint32))
	}
	if len(arena) > 0 {
		f.strtabs = append(f.strtabs, strtab{base: uint32(next), data: arena})
	}
	for _, m := range f.maps {
		dropPages(m)
	}
	b.cands = b.cands[:0] // the caller's, when it lent them
	return nil
}

// dedup sorts the candidates by address and keeps the preferred one at
// each address, outside the excluded range.
func (b *tableBuilder) dedup() []candidate {
	// At one address the preferred symbol first: global over local,
	// .symtab over .dynsym, functions over other types, then fewer
	// leading underscores ("malloc" over "__libc_malloc"), then the order
	// the tables list them in.
	sortCandidates(b.cands, b.keys)
	// The candidates are compacted in place, each copied straight from
	// its element to its new one, and not at all while none was dropped:
	// copying through a local (range's value) stores it in two
	// overlapping halves that the copy out cannot be forwarded, which
	// stalled the loop on every candidate.
	kept := b.cands[:0]
	for i := range b.cands {
		c := &b.cands[i]
		if c.value >= b.excludeLo && c.value < b.excludeHi {
			continue
		}
		n := len(kept)
		if n > 0 && kept[n-1].value == c.value {
			// An alias: keep the preferred name, but the largest size,
			// since an untyped label may alias a sized function.
			kept[n-1].size = max(kept[n-1].size, c.size)
			continue
		}
		kept = kept[:n+1]
		if n != i {
			kept[n] = *c
		}
	}
	return kept
}

// sortCandidates sorts cands, listed in the order of their seq, as
// cmpCandidates orders them; keys, when not nil, lends the sort its
// words.
func sortCandidates(cands []candidate, keys *keysort.Buffer) {
	// The candidates are in the order the tables list them (seq is the
	// index), so a stable sort by address leaves only the aliases at one
	// address to order by preference. The radix sort of keysort is
	// several times faster than a comparison sort of the candidates on
	// the hundreds of thousands of symbols of a large binary.
	if keysort.Stable(cands, candidateValue, keys) {
		for i := 0; i < len(cands); {
			j := i + 1
			for j < len(cands) && cands[j].value == cands[i].value {
				j++
			}
			if j-i > 1 {
				slices.SortFunc(cands[i:j], cmpCandidates)
			}
			i = j
		}
	} else {
		slices.SortFunc(cands, cmpCandidates)
	}
}

// candidateValue returns the address of c, its sort key.
func candidateValue(c *candidate) uint64 { return c.value }

// cmpCandidates orders candidates by address, then the preferred first
// (see dedup).
func cmpCandidates(x, y candidate) int {
	switch {
	case x.value != y.value:
		if x.value < y.value {
			return -1
		}
		return 1
	case x.rank != y.rank:
		return int(y.rank) - int(x.rank)
	case x.underscores != y.underscores:
		return int(x.underscores) - int(y.underscores)
	}
	return cmp.Compare(x.seq, y.seq)
}
