package kallsyms

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"unsafe"
)

// symtab is a sorted, packed list of symbols. Symbol i starts at
// base+offs[i] when the symbols span less than 4 GiB, as the kernel image's
// and the modules' do, and at addrs[i] otherwise (see addr).
//
// The names are front-coded in blocks of nameBlock consecutive symbols:
// block k is data[blockOffs[k]:blockOffs[k+1]], and each of its names is
// stored as the bytes it shares with the block's previous stored name and
// the bytes that follow (see appendName). Neighbours by address are
// mostly functions of one source file, which share a prefix; and a
// function's padding symbol, __pfx_NAME just before NAME, is stored as a
// flag alone. Kernel names take about 40 % of their size that way, and
// coding them costs one pass over them; decoding a name costs a pass over
// part of one block. names keeps the names returned recently. When mods
// is not nil, mods[i] is an index whose meaning belongs to the owner of
// the symtab. Only names is ever written once the symtab is made.
type symtab struct {
	base      uint64
	offs      []uint32
	addrs     []uint64 // nil when offs is used
	blockOffs []uint32
	data      []byte
	mods      []uint32
	names     nameCache
}

// nameBlock is the number of symbols whose names are front-coded together.
// Larger blocks code a little smaller, smaller ones decode faster on a
// lookup: 64 kernel names are about 600 bytes coded, decoded in about a
// microsecond.
const nameBlock = 64

// pfxPrefix is the prefix of the padding symbols that the kernel places
// before functions when it is built with call-depth tracking or CFI: the
// padding of NAME is __pfx_NAME.
const pfxPrefix = "__pfx_"

// nameCache holds the names that lookups returned last, and the buffer
// that names are decoded into. The tracer looks up every kernel frame of
// every trace, mostly of a few hundred hot functions: their names come
// from recent, without decoding or allocating.
type nameCache struct {
	mu sync.Mutex
	// recent is set-associative by symbol index (recentNames slots in
	// sets of recentWays, made on the first lookup).
	recent []recentName
	buf    []byte
}

// recentNames is the number of slots of nameCache.recent, recentWays the
// slots of each set: 4096 names of 4 ways take 96 KiB (and the names).
const (
	recentNames = 4096
	recentWays  = 4
)

// recentName is a slot of nameCache.recent.
type recentName struct {
	sym  int // symbol index + 1; 0 for an empty slot
	name string
}

func (s *symtab) len() int {
	if s == nil {
		return 0
	}
	return len(s.offs) + len(s.addrs)
}

// addr returns the address of symbol i.
func (s *symtab) addr(i int) uint64 {
	if s.addrs != nil {
		return s.addrs[i]
	}
	return s.base + uint64(s.offs[i])
}

func (s *symtab) bytes() int {
	if s == nil {
		return 0
	}
	n := int(unsafe.Sizeof(*s)) + cap(s.offs)*4 + cap(s.addrs)*8 + cap(s.blockOffs)*4 + cap(s.data) + cap(s.mods)*4
	s.names.mu.Lock()
	n += cap(s.names.buf)
	n += cap(s.names.recent) * int(unsafe.Sizeof(recentName{}))
	for _, r := range s.names.recent {
		n += len(r.name)
	}
	s.names.mu.Unlock()
	return n
}

// name returns the name of symbol i: a recent one from the cache, another
// decoded from its block.
func (s *symtab) name(i int) string {
	c := &s.names
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recent == nil {
		c.recent = make([]recentName, recentNames)
	}
	// recentWays slots per set, most recently used first.
	set := c.recent[i%(recentNames/recentWays)*recentWays:][:recentWays]
	for w := range set {
		if set[w].sym == i+1 {
			r := set[w]
			copy(set[1:w+1], set[:w])
			set[0] = r
			return r.name
		}
	}
	var name string
	var err error
	name, c.buf, err = decodeName(s.data[s.blockOffs[i/nameBlock]:s.blockOffs[i/nameBlock+1]], i%nameBlock, c.buf[:0])
	if err != nil {
		// The blocks are coded by finish and never written: a failure
		// is a bug, not bad input.
		panic(fmt.Sprintf("kallsyms: name of symbol %d: %v", i, err))
	}
	copy(set[1:], set[:recentWays-1])
	set[0] = recentName{sym: i + 1, name: name}
	return name
}

// appendName appends the coding of name to a block: a uvarint head, which
// is 1 when name is __pfx_ and the next name of the block (which must
// follow), and otherwise twice the length of the prefix that name shares
// with prev, the previous name stored in full; then the length of the
// rest of name as a uvarint, and the rest.
func appendName(dst, prev, name []byte, padding bool) []byte {
	if padding {
		return append(dst, 1)
	}
	shared := 0
	for shared < len(prev) && shared < len(name) && prev[shared] == name[shared] {
		shared++
	}
	dst = binary.AppendUvarint(dst, uint64(shared)<<1)
	dst = binary.AppendUvarint(dst, uint64(len(name)-shared))
	return append(dst, name[shared:]...)
}

// decodeName decodes name j of a block coded by appendName, using buf for
// the names stored in full before it.
func decodeName(block []byte, j int, buf []byte) (string, []byte, error) {
	padding := 0 // __pfx_ heads from j on
	for k := 0; ; k++ {
		head, w := binary.Uvarint(block)
		if w <= 0 {
			return "", buf, fmt.Errorf("name %d of %d: bad head", k, j)
		}
		block = block[w:]
		if head == 1 {
			if k >= j {
				padding++
			}
			continue
		}
		shared := head >> 1
		n, w := binary.Uvarint(block)
		if w <= 0 || head&1 != 0 || shared > uint64(len(buf)) || n > uint64(len(block)-w) {
			return "", buf, fmt.Errorf("name %d of %d: bad coding", k, j)
		}
		buf = append(buf[:shared], block[w:w+int(n)]...)
		block = block[w+int(n):]
		if k >= j && padding == 0 {
			return string(buf), buf, nil
		}
		if k >= j {
			name := make([]byte, 0, padding*len(pfxPrefix)+len(buf))
			for range padding {
				name = append(name, pfxPrefix...)
			}
			return string(append(name, buf...)), buf, nil
		}
	}
}

// find returns the index of the last symbol that starts at or before addr
// and addr's offset from it. It reports false when there is no such
// symbol or the offset is at least MaxSymbolSize.
func (s *symtab) find(addr uint64) (int, uint64, bool) {
	if s.len() == 0 || addr < s.addr(0) {
		return 0, 0, false
	}
	var lo int
	if s.addrs != nil {
		lo = upper(s.addrs, addr)
	} else {
		// Every offset is below 2^32: clamping keeps them all at or
		// below an address that far past the base.
		lo = upper(s.offs, uint32(min(addr-s.base, math.MaxUint32)))
	}
	i := lo - 1
	off := addr - s.addr(i)
	if off >= MaxSymbolSize {
		return 0, 0, false
	}
	return i, off, true
}

// upper returns the number of elements of the sorted a that are at most v.
func upper[T uint32 | uint64](a []T, v T) int {
	lo, hi := 0, len(a)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if a[m] <= v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// builder collects the symbols of one kallsyms text.
type builder struct {
	// modulesOnly drops the kernel image's symbols, for re-reads that
	// only refresh the modules.
	modulesOnly      bool
	vmlinux, modules part
	modNames         []string
	modIndex         map[string]uint32
	parsed           int // well-formed lines, of any symbol type
	nonzero          int // well-formed lines with a nonzero address
	skipped          int // malformed lines
}

// part accumulates the symbols of a symtab before sorting. Entries and
// names are kept in chunks of fixed size, so that collecting them
// allocates about their size once, rather than several times over as
// slices grown by appending do; finish copies them into the symtab's
// exactly sized arrays.
type part struct {
	entries  [][]entry // chunks of entryChunk entries; the last is filling
	nEntries int
	sorted   bool     // entries were added by increasing address
	names    [][]byte // chunks of nameChunk bytes; the last is filling
}

// Chunk sizes of a part. A name and its length fit in a chunk: lines are
// shorter than maxLine, and a line holds at least 4 bytes more than its
// name, which a length of less than 2^21 needs at most 3 of.
const (
	entryChunk = 4096
	nameChunk  = maxLine
)

type entry struct {
	addr    uint64
	nameOff uint32 // chunk*nameChunk + offset in the chunk
	mod     uint32 // the module name index, or'ed with entryGlobal for type T
}

// entryGlobal marks an entry of a global symbol (type T rather than t) in
// its mod; module name indexes stay below it. Packed so, an entry takes
// 16 bytes rather than 24.
const entryGlobal = 1 << 31

func (e entry) global() bool { return e.mod&entryGlobal != 0 }

// add appends a symbol named name to the part. It reports false when the
// part's names would exceed 4 GiB.
func (p *part) add(e entry, name []byte) bool {
	last := len(p.names) - 1
	if last < 0 || len(p.names[last])+binary.MaxVarintLen32+len(name) > nameChunk {
		if uint64(len(p.names)+1)*nameChunk > 1<<32-1 {
			return false
		}
		p.names = append(p.names, make([]byte, 0, nameChunk))
		last++
	}
	e.nameOff = uint32(last*nameChunk + len(p.names[last]))
	p.names[last] = append(binary.AppendUvarint(p.names[last], uint64(len(name))), name...)
	if p.nEntries == 0 {
		p.sorted = true
	} else if c := p.entries[len(p.entries)-1]; e.addr < c[len(c)-1].addr {
		p.sorted = false
	}
	if n := len(p.entries); n == 0 || len(p.entries[n-1]) == entryChunk {
		p.entries = append(p.entries, make([]entry, 0, entryChunk))
	}
	p.entries[len(p.entries)-1] = append(p.entries[len(p.entries)-1], e)
	p.nEntries++
	return true
}

// maxLine bounds the length of a line; longer ones are skipped as
// malformed. The kernel limits symbol names to a few hundred bytes and
// module dependency lists in /proc/modules to a few kilobytes.
const maxLine = 64 << 10

// forEachLine calls fn for every line of r, with its newline if any. Lines
// longer than maxLine are not passed to fn but counted in the result.
func forEachLine(r io.Reader, fn func(line []byte)) (overlong int, err error) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Skip the rest of an overlong line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			overlong++
		} else if len(line) > 0 {
			fn(line)
		}
		if err == io.EOF {
			return overlong, nil
		}
		if err != nil {
			return overlong, err
		}
	}
}

func (b *builder) read(r io.Reader) error {
	overlong, err := forEachLine(r, b.line)
	b.skipped += overlong
	if err != nil {
		return fmt.Errorf("read symbols: %w", err)
	}
	return nil
}

// check reports why a complete read yielded no usable symbols, if it did.
func (b *builder) check() error {
	if b.parsed == 0 {
		return fmt.Errorf("no well-formed symbol line (%d malformed)", b.skipped)
	}
	if b.nonzero == 0 {
		return ErrAddressesHidden
	}
	return nil
}

// fields splits line at blanks into at most len(dst) fields. It reports
// false when there are more.
func fields(line []byte, dst [][]byte) (int, bool) {
	n := 0
	for i := 0; i < len(line); {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		j := i
		for j < len(line) && !isSpace(line[j]) {
			j++
		}
		if j > i {
			if n == len(dst) {
				return n, false
			}
			dst[n] = line[i:j]
			n++
		}
		i = j
	}
	return n, true
}

// line parses one line. Blank lines are ignored; other lines that do not
// have the form "ADDR TYPE NAME" or "ADDR TYPE NAME [MODULE]" are counted
// as skipped.
func (b *builder) line(line []byte) {
	addr, typ, name, mod, ok := canonicalLine(line)
	if !ok {
		var blank bool
		addr, typ, name, mod, blank, ok = fieldsLine(line)
		if blank {
			return
		}
		if !ok {
			b.skipped++
			return
		}
	}
	b.symbol(addr, typ, name, mod)
}

// fieldsLine parses a line field by field. It reports whether the line is
// blank, and whether it is well formed.
func fieldsLine(line []byte) (addr uint64, typ byte, name, mod []byte, blank, ok bool) {
	var f [4][]byte
	n, ok := fields(line, f[:])
	if ok && n == 0 {
		return 0, 0, nil, nil, true, false
	}
	if !ok || n < 3 || len(f[1]) != 1 {
		return 0, 0, nil, nil, false, false
	}
	if addr, ok = parseHex(f[0]); !ok {
		return 0, 0, nil, nil, false, false
	}
	if n == 4 {
		m := f[3]
		if len(m) < 3 || m[0] != '[' || m[len(m)-1] != ']' {
			return 0, 0, nil, nil, false, false
		}
		mod = m[1 : len(m)-1]
	}
	return addr, f[1][0], f[2], mod, false, true
}

// canonicalLine parses a line as the kernel writes it: 16 hex digits, a
// blank, the type, a blank, the name, and a tab and the module in
// brackets or nothing, then a newline or the end. It reports false for
// any other line, which line then parses field by field: the same result
// for every line, at a fraction of the cost for these.
func canonicalLine(line []byte) (addr uint64, typ byte, name, mod []byte, ok bool) {
	if len(line) < 20 || line[16] != ' ' || line[18] != ' ' || isSpace(line[17]) {
		return 0, 0, nil, nil, false
	}
	for _, c := range line[:16] {
		d := hexDigit[c]
		if d < 0 {
			return 0, 0, nil, nil, false
		}
		addr = addr<<4 | uint64(d)
	}
	rest := line[19:]
	if rest[len(rest)-1] == '\n' {
		rest = rest[:len(rest)-1]
	}
	if tab := bytes.IndexByte(rest, '\t'); tab >= 0 {
		name, mod = rest[:tab], rest[tab+1:]
		if len(mod) < 3 || mod[0] != '[' || mod[len(mod)-1] != ']' || hasSpace(mod) {
			return 0, 0, nil, nil, false
		}
		mod = mod[1 : len(mod)-1]
	} else {
		name = rest
	}
	// name holds no tab: the first ends it.
	if len(name) == 0 || hasSpace(name) {
		return 0, 0, nil, nil, false
	}
	return addr, line[17], name, mod, true
}

// hexDigit is the value of each hex digit, -1 for other bytes.
var hexDigit = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = int8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = int8(c - 'a' + 10)
		t[c-'a'+'A'] = int8(c - 'a' + 10)
	}
	return t
}()

// symbol adds a well-formed line's symbol to the builder.
func (b *builder) symbol(addr uint64, typ byte, name, mod []byte) {
	b.parsed++
	if addr != 0 {
		b.nonzero++
	}
	if (typ != 't' && typ != 'T') || addr == 0 || (mod == nil && b.modulesOnly) {
		return
	}
	p := &b.vmlinux
	var mi uint32
	if mod != nil {
		p = &b.modules
		idx, ok := b.modIndex[string(mod)]
		if !ok {
			if b.modIndex == nil {
				b.modIndex = make(map[string]uint32)
			}
			idx = uint32(len(b.modNames))
			b.modNames = append(b.modNames, string(mod))
			b.modIndex[string(mod)] = idx
		}
		mi = idx
	}
	if mi >= entryGlobal {
		// Two billion modules: not a kernel's list.
		b.skipped++
		return
	}
	if typ == 'T' {
		mi |= entryGlobal
	}
	if !p.add(entry{addr: addr, mod: mi}, name) {
		b.skipped++
	}
}

// finish sorts the part's symbols by address, keeps one symbol per address
// (the first listed, unless a later one is global and it is not) and packs
// them into a symtab, whose names it front-codes. With withMods, the
// symtab's mods hold each symbol's module name index.
func (p *part) finish(withMods bool) *symtab {
	chunks := p.entries
	if !p.sorted {
		entries := make([]entry, 0, p.nEntries)
		for i, c := range chunks {
			entries = append(entries, c...)
			chunks[i] = nil
		}
		// A stable sort keeps the listed order among equal addresses.
		slices.SortStableFunc(entries, func(a, b entry) int {
			switch {
			case a.addr < b.addr:
				return -1
			case a.addr > b.addr:
				return 1
			}
			return 0
		})
		chunks = [][]entry{entries}
	}
	// Keep one symbol per address, compacting the chunks in place: the
	// write position never passes the read position.
	var last *entry
	wc, wj, kept := 0, 0, 0
	for _, c := range chunks {
		for _, e := range c {
			if last != nil && last.addr == e.addr {
				if e.global() && !last.global() {
					*last = e
				}
				continue
			}
			if wj == len(chunks[wc]) {
				wc, wj = wc+1, 0
			}
			chunks[wc][wj] = e
			last = &chunks[wc][wj]
			wj++
			kept++
		}
	}
	// Offsets from the first address when all fit in 32 bits, else full
	// addresses.
	s := &symtab{}
	if kept > 0 && last.addr-chunks[0][0].addr <= math.MaxUint32 {
		s.base = chunks[0][0].addr
		s.offs = make([]uint32, kept)
	} else {
		s.addrs = make([]uint64, kept)
	}
	if withMods {
		s.mods = make([]uint32, kept)
	}
	s.blockOffs = make([]uint32, 0, (kept+nameBlock-1)/nameBlock+1)
	// Kernel names code to about 40 % of their bytes: the estimate
	// saves most of the growth steps, and the result is copied to its
	// size.
	data := make([]byte, 0, p.nameBytes()/2)
	var block [nameBlock][]byte
	code := func(n int) {
		s.blockOffs = append(s.blockOffs, uint32(len(data)))
		var prev []byte
		for j, name := range block[:n] {
			padding := j+1 < n && len(name) == len(pfxPrefix)+len(block[j+1]) &&
				string(name[:len(pfxPrefix)]) == pfxPrefix && bytes.Equal(name[len(pfxPrefix):], block[j+1])
			data = appendName(data, prev, name, padding)
			if !padding {
				prev = name
			}
		}
	}
	i := 0
	for _, c := range chunks {
		for _, e := range c[:min(len(c), kept-i)] {
			if s.offs != nil {
				s.offs[i] = uint32(e.addr - s.base)
			} else {
				s.addrs[i] = e.addr
			}
			if withMods {
				s.mods[i] = e.mod &^ entryGlobal
			}
			chunk := p.names[e.nameOff/nameChunk][e.nameOff%nameChunk:]
			n, w := binary.Uvarint(chunk)
			block[i%nameBlock] = chunk[w : w+int(n)]
			i++
			if i%nameBlock == 0 {
				code(nameBlock)
			}
		}
	}
	if i%nameBlock != 0 {
		code(i % nameBlock)
	}
	if len(data) > 1<<32-1 {
		// Names are at most 4 GiB, and code to at most a few bytes more
		// each.
		panic("kallsyms: coded names exceed 4 GiB")
	}
	s.blockOffs = append(s.blockOffs, uint32(len(data)))
	s.data = bytes.Clone(data)
	*p = part{}
	return s
}

// nameBytes returns how many bytes the part's names fill.
func (p *part) nameBytes() int {
	n := 0
	for _, c := range p.names {
		n += len(c)
	}
	return n
}

// hasSpace reports whether b holds a blank (see isSpace). It is
// bytes.ContainsAny(b, " \t\n\r") without building a set on every call.
func hasSpace(b []byte) bool {
	for _, c := range b {
		// Blanks are below '!'; names are mostly letters.
		if c <= ' ' && isSpace(c) {
			return true
		}
	}
	return false
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// parseHex parses 1 to 16 hex digits.
func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}
