package symbolizer

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/stackline-dev/stackline/trace"
)

// Magic numbers of the .gopclntab layouts this package reads.
const (
	goMagic116 = 0xfffffffa // Go 1.16 and 1.17
	goMagic118 = 0xfffffff0 // Go 1.18 and 1.19
	goMagic120 = 0xfffffff1 // Go 1.20 and later
)

// Indexes of the runtime's per-function tables (internal/abi).
const (
	goPCDataInlTreeIndex = 2
	goFuncDataInlTree    = 3
)

// Limits on what a .gopclntab may ask for.
const (
	maxGoInlineDepth = 64      // inlined frames reported for one address
	maxGoInlTreeLen  = 1 << 16 // entries in one function's inline tree
	maxGoNoptrdata   = 64 << 20
)

// goTable names the functions of a Go binary from its .gopclntab, which it
// keeps as read (the runtime's own compact format), plus the inline trees
// it copied out of the binary's read-only data.
type goTable struct {
	data    string // the whole .gopclntab; the other strings are parts of it
	order   binary.ByteOrder
	magic   uint32
	ptrSize int
	quantum uint64
	nfunc   int
	text    uint64 // address that 1.18+ function entries are relative to
	// mapped says data is mapped from the file, not held in the heap.
	mapped bool

	funcnames, cutab, filetab, pctab, pcln string

	// Function inlFuncs[i] has the inline tree inl[inlStart[i]:inlStart[i+1]]
	// (or up to the end of inl for the last), stored as nameOff, parentPc
	// pairs.
	inlFuncs []uint32
	inlStart []uint32
	inl      []int32
}

// goFunc is one function's _func record, decoded.
type goFunc struct {
	entry                 uint64
	nameOff               int32
	pcfile, pcln, cuOff   uint32
	npcdata, nfuncdata    uint32
	pcdataOff, fdataOff   int // offsets of the pcdata and funcdata arrays in pcln
	pcdataSize, fdataSize int
}

// parseGoTable checks the header of a .gopclntab. It takes ownership of
// data, which must not be modified afterwards.
func parseGoTable(data []byte, order binary.ByteOrder) (*goTable, error) {
	if len(data) < 16 {
		return nil, errors.New("gopclntab: too short")
	}
	t := &goTable{order: order, magic: order.Uint32(data)}
	if data[4] != 0 || data[5] != 0 {
		return nil, errors.New("gopclntab: bad header")
	}
	t.quantum = uint64(data[6])
	t.ptrSize = int(data[7])
	if t.quantum != 1 && t.quantum != 2 && t.quantum != 4 || t.ptrSize != 4 && t.ptrSize != 8 {
		return nil, fmt.Errorf("gopclntab: bad quantum %d or pointer size %d", t.quantum, t.ptrSize)
	}
	var nwords int
	switch t.magic {
	case goMagic118, goMagic120:
		nwords = 8
	case goMagic116:
		nwords = 7
	default:
		return nil, fmt.Errorf("gopclntab: unsupported magic %#x", t.magic)
	}
	if len(data) < 8+nwords*t.ptrSize {
		return nil, errors.New("gopclntab: truncated header")
	}
	w := make([]uint64, nwords)
	for i := range w {
		w[i] = t.word(data[8+i*t.ptrSize:])
	}
	nfunc := w[0]
	if t.magic == goMagic116 {
		w = append(w[:2], append([]uint64{0}, w[2:]...)...)
	}
	t.text = w[2]
	offs := w[3:8] // funcnames, cutab, filetab, pctab, pcln
	for i, o := range offs {
		if o > uint64(len(data)) || i > 0 && o < offs[i-1] {
			return nil, errors.New("gopclntab: table offsets out of order or range")
		}
	}
	entSize := uint64(8)
	if t.magic == goMagic116 {
		entSize = 2 * uint64(t.ptrSize)
	}
	if nfunc == 0 || nfunc > (uint64(len(data))-offs[4])/entSize-1 {
		return nil, fmt.Errorf("gopclntab: %d functions do not fit", nfunc)
	}
	t.nfunc = int(nfunc)
	s := unsafe.String(unsafe.SliceData(data), len(data))
	t.data = s
	t.funcnames = s[offs[0]:offs[1]]
	t.cutab = s[offs[1]:offs[2]]
	t.filetab = s[offs[2]:offs[3]]
	t.pctab = s[offs[3]:offs[4]]
	t.pcln = s[offs[4]:]
	return t, nil
}

func (t *goTable) word(b []byte) uint64 {
	if t.ptrSize == 4 {
		return uint64(t.order.Uint32(b))
	}
	return t.order.Uint64(b)
}

// u32 reads a uint32 at off in s; false when out of range.
func (t *goTable) u32(s string, off int) (uint32, bool) {
	if off < 0 || off > len(s)-4 {
		return 0, false
	}
	return t.order.Uint32(unsafe.Slice(unsafe.StringData(s[off:]), 4)), true
}

// entry returns the entry address of function i (i ≤ nfunc; nfunc is the
// end of the last function) and the offset of its _func in pcln.
func (t *goTable) entry(i int) (entry uint64, funcOff uint64) {
	if t.magic == goMagic116 {
		off := i * 2 * t.ptrSize
		b := unsafe.Slice(unsafe.StringData(t.pcln[off:]), 2*t.ptrSize)
		return t.word(b), t.word(b[t.ptrSize:])
	}
	e, _ := t.u32(t.pcln, i*8)
	f, _ := t.u32(t.pcln, i*8+4)
	return t.text + uint64(e), uint64(f)
}

// textRange returns the addresses the table's functions cover.
func (t *goTable) textRange() (lo, hi uint64) {
	lo, _ = t.entry(0)
	hi, _ = t.entry(t.nfunc)
	return lo, hi
}

// find returns the index of the function containing pc.
func (t *goTable) find(pc uint64) (int, bool) {
	lo, hi := t.textRange()
	if pc < lo || pc >= hi {
		return 0, false
	}
	i, j := 0, t.nfunc
	for i < j {
		m := int(uint(i+j) >> 1)
		if e, _ := t.entry(m); e <= pc {
			i = m + 1
		} else {
			j = m
		}
	}
	return i - 1, i > 0
}

// fn decodes the _func record of function i.
func (t *goTable) fn(i int) (goFunc, bool) {
	entry, off := t.entry(i)
	if off >= uint64(len(t.pcln)) {
		return goFunc{}, false
	}
	base := 4
	if t.magic == goMagic116 {
		base = t.ptrSize
	}
	hdr := base + 36
	if t.magic == goMagic120 {
		hdr += 4 // startLine
	}
	rec := t.pcln[off:]
	if len(rec) < hdr {
		return goFunc{}, false
	}
	u := func(o int) uint32 { v, _ := t.u32(rec, o); return v }
	f := goFunc{
		entry:     entry,
		nameOff:   int32(u(base)),
		pcfile:    u(base + 16),
		pcln:      u(base + 20),
		npcdata:   u(base + 24),
		cuOff:     u(base + 28),
		nfuncdata: uint32(rec[hdr-1]),
		pcdataOff: int(off) + hdr,
	}
	if f.npcdata > 1<<10 {
		return goFunc{}, false
	}
	f.pcdataSize = 4
	f.fdataOff = f.pcdataOff + 4*int(f.npcdata)
	f.fdataSize = 4
	if t.magic == goMagic116 {
		f.fdataOff = (f.fdataOff + t.ptrSize - 1) &^ (t.ptrSize - 1)
		f.fdataSize = t.ptrSize
	}
	return f, true
}

// pcdata returns the pctab offset of the function's table k, 0 if none.
func (t *goTable) pcdata(f *goFunc, k uint32) uint32 {
	if k >= f.npcdata {
		return 0
	}
	v, _ := t.u32(t.pcln, f.pcdataOff+4*int(k))
	return v
}

// funcdata returns the go:func.* offset of the function's data k (1.18+).
func (t *goTable) funcdata(f *goFunc, k uint32) (uint32, bool) {
	if k >= f.nfuncdata || t.magic == goMagic116 {
		return 0, false
	}
	v, ok := t.u32(t.pcln, f.fdataOff+4*int(k))
	return v, ok && v != ^uint32(0)
}

// pcvalue evaluates the pc-value table at off for pc, as the runtime's
// pcvalue does; -1 when the table has no value there.
func (t *goTable) pcvalue(entry uint64, off uint32, pc uint64) int32 {
	if off == 0 || off >= uint32(len(t.pctab)) {
		return -1
	}
	p := t.pctab[off:]
	cur, val := entry, int32(-1)
	for first := true; ; first = false {
		uv, n := uvarint(p)
		if n <= 0 || uv == 0 && !first {
			return -1
		}
		p = p[n:]
		val += int32(-(uv & 1) ^ (uv >> 1))
		pcd, n := uvarint(p)
		if n <= 0 {
			return -1
		}
		p = p[n:]
		cur += uint64(pcd) * t.quantum
		if pc < cur {
			return val
		}
	}
}

// maxValue returns the largest value of the pc-value table at off.
func (t *goTable) maxValue(off uint32) int32 {
	best := int32(-1)
	if off == 0 || off >= uint32(len(t.pctab)) {
		return best
	}
	p := t.pctab[off:]
	val := int32(-1)
	for first := true; ; first = false {
		uv, n := uvarint(p)
		if n <= 0 || uv == 0 && !first {
			return best
		}
		p = p[n:]
		val += int32(-(uv & 1) ^ (uv >> 1))
		best = max(best, val)
		if _, n = uvarint(p); n <= 0 {
			return best
		}
		p = p[n:]
	}
}

// uvarint decodes a uint32 varint from s.
func uvarint(s string) (uint32, int) {
	var v uint32
	for i := 0; i < len(s) && i < 5; i++ {
		b := s[i]
		v |= uint32(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

func cstring(s string, off int) string {
	if off < 0 || off >= len(s) {
		return ""
	}
	s = s[off:]
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return ""
}

// fileLine returns the source position of pc in function f.
func (t *goTable) fileLine(f *goFunc, pc uint64) (string, int64) {
	line := t.pcvalue(f.entry, f.pcln, pc)
	fileno := t.pcvalue(f.entry, f.pcfile, pc)
	if fileno < 0 {
		return "", max(int64(line), 0)
	}
	var file string
	if foff, ok := t.u32(t.cutab, 4*(int(f.cuOff)+int(fileno))); ok && foff != ^uint32(0) {
		file = cstring(t.filetab, int(foff))
	}
	return file, max(int64(line), 0)
}

// inlTree returns the inline tree of function i as nameOff, parentPc pairs.
func (t *goTable) inlTree(i int) []int32 {
	lo, hi := 0, len(t.inlFuncs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.inlFuncs[m] < uint32(i) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(t.inlFuncs) || t.inlFuncs[lo] != uint32(i) {
		return nil
	}
	end := uint32(len(t.inl))
	if lo+1 < len(t.inlStart) {
		end = t.inlStart[lo+1]
	}
	return t.inl[t.inlStart[lo]:end]
}

// lookup appends the frames at pc, innermost first; it returns buf
// unchanged when no function covers pc.
func (t *goTable) lookup(pc uint64, buf []trace.Line) []trace.Line {
	i, ok := t.find(pc)
	if !ok {
		return buf
	}
	f, ok := t.fn(i)
	if !ok {
		return buf
	}
	tree := t.inlTree(i)
	for range maxGoInlineDepth {
		file, line := t.fileLine(&f, pc)
		if len(tree) > 0 {
			ix := t.pcvalue(f.entry, t.pcdata(&f, goPCDataInlTreeIndex), pc)
			if ix >= 0 && 2*int(ix)+1 < len(tree) {
				// Copies: a name must not keep the table alive (or
				// point into a mapping that is gone).
				name := strings.Clone(cstring(t.funcnames, int(tree[2*ix])))
				buf = append(buf, trace.Line{Function: name, File: strings.Clone(file), Line: line})
				next := f.entry + uint64(int64(tree[2*ix+1]))
				if next == pc {
					break
				}
				pc = next
				continue
			}
		}
		name := cstring(t.funcnames, int(f.nameOff))
		if name == "" {
			break
		}
		return append(buf, trace.Line{Function: strings.Clone(name), File: strings.Clone(file), Line: line})
	}
	return buf
}

// moduledata is what this package reads of the runtime's moduledata.
type moduledata struct {
	text, gofunc uint64
}

// setText sets the address that function entries are relative to: from
// the moduledata when found, else from the header unless the linker left
// it unrelocated, else the start of .text.
func (t *goTable) setText(ef *elf.File, md *moduledata) {
	switch {
	case t.magic == goMagic116:
		t.text = 0 // entries are absolute
	case md != nil && md.text != 0:
		t.text = md.text
	case t.text != 0:
	default:
		if s := ef.Section(".text"); s != nil {
			t.text = s.Addr
		}
	}
}

// loadInlineTrees copies the inline trees of all functions out of the
// binary's go:func.* data.
func (t *goTable) loadInlineTrees(ef *elf.File, md *moduledata) {
	if t.magic == goMagic116 || md == nil || md.gofunc == 0 {
		return // 1.16 funcdata are absolute pointers; not supported
	}
	r := newVaddrReader(ef)
	entSize, nameAt, parentAt := 16, 4, 8
	if t.magic == goMagic118 {
		entSize, nameAt, parentAt = 20, 12, 16
	}
	buf := make([]byte, 0, 4096)
	for i := range t.nfunc {
		f, ok := t.fn(i)
		if !ok {
			continue
		}
		off, ok := t.funcdata(&f, goFuncDataInlTree)
		if !ok {
			continue
		}
		n := int(t.maxValue(t.pcdata(&f, goPCDataInlTreeIndex))) + 1
		if n <= 0 || n > maxGoInlTreeLen {
			continue
		}
		size := n * entSize
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if err := r.readAt(buf, md.gofunc+uint64(off)); err != nil {
			continue
		}
		t.inlFuncs = append(t.inlFuncs, uint32(i))
		t.inlStart = append(t.inlStart, uint32(len(t.inl)))
		for k := range n {
			e := buf[k*entSize:]
			t.inl = append(t.inl, int32(t.order.Uint32(e[nameAt:])), int32(t.order.Uint32(e[parentAt:])))
		}
	}
	t.inlFuncs = clipped(t.inlFuncs)
	t.inlStart = clipped(t.inlStart)
	t.inl = clipped(t.inl)
}

func clipped[S ~[]E, E any](s S) S {
	if cap(s) == len(s) {
		return s
	}
	return append(S(nil), s...)
}

// findModuledata finds runtime.firstmoduledata, which starts with the
// address of the .gopclntab and then the funcnametab slice; Go 1.26 puts
// it in .go.module, earlier releases in .noptrdata.
func (t *goTable) findModuledata(ef *elf.File, pclntabAddr uint64) (*moduledata, error) {
	if t.magic == goMagic116 {
		return nil, errors.New("gopclntab: moduledata of Go 1.16 not supported")
	}
	// Word indexes of moduledata.text and .gofunc; Go 1.20 added covctrs.
	textIdx, gofuncIdx := 22, 40
	if t.magic == goMagic118 {
		gofuncIdx = 38
	}
	ps := t.ptrSize
	funcnames := pclntabAddr + uint64(len(t.data)-len(t.cutab)-len(t.filetab)-len(t.pctab)-len(t.pcln)-len(t.funcnames))
	for _, name := range []string{".go.module", ".noptrdata", ".data"} {
		sec := ef.Section(name)
		if sec == nil || sec.Type != elf.SHT_PROGBITS || sec.Size > maxGoNoptrdata || compressed(sec) {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			return nil, fmt.Errorf("gopclntab: read %s: %w", name, err)
		}
		for off := 0; off+(gofuncIdx+1)*ps <= len(data); off += ps {
			if t.word(data[off:]) != pclntabAddr || t.word(data[off+ps:]) != funcnames {
				continue
			}
			md := &moduledata{text: t.word(data[off+textIdx*ps:]), gofunc: t.word(data[off+gofuncIdx*ps:])}
			if !inSection(ef, md.gofunc) {
				md.gofunc = 0
			}
			if !inSection(ef, md.text) {
				md.text = 0
			}
			return md, nil
		}
	}
	return nil, errors.New("gopclntab: moduledata not found")
}

// inSection reports whether addr lies in a loaded section with contents.
func inSection(ef *elf.File, addr uint64) bool {
	for _, s := range ef.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Type == elf.SHT_PROGBITS && addr >= s.Addr && addr-s.Addr < s.Size {
			return true
		}
	}
	return false
}

// vaddrReader reads a file's loaded sections by virtual address through a
// small window, so scattered small reads cost few system calls.
type vaddrReader struct {
	ef     *elf.File
	win    []byte
	winAt  uint64
	winLen int
}

func newVaddrReader(ef *elf.File) *vaddrReader {
	return &vaddrReader{ef: ef, win: make([]byte, 64<<10)}
}

func (r *vaddrReader) readAt(p []byte, addr uint64) error {
	if addr >= r.winAt && addr+uint64(len(p)) <= r.winAt+uint64(r.winLen) && addr+uint64(len(p)) >= addr {
		copy(p, r.win[addr-r.winAt:])
		return nil
	}
	for _, s := range r.ef.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type != elf.SHT_PROGBITS || compressed(s) || addr < s.Addr || addr-s.Addr >= s.Size {
			continue
		}
		off := addr - s.Addr
		if uint64(len(p)) > s.Size-off {
			return errors.New("read past the end of a section")
		}
		if len(p) > len(r.win) {
			_, err := s.ReadAt(p, int64(off))
			return err
		}
		n := min(uint64(len(r.win)), s.Size-off)
		if _, err := s.ReadAt(r.win[:n], int64(off)); err != nil {
			r.winLen = 0
			return err
		}
		r.winAt, r.winLen = addr, int(n)
		copy(p, r.win)
		return nil
	}
	return fmt.Errorf("address %#x is in no section", addr)
}

// bytes returns the heap bytes the table holds.
func (t *goTable) bytes() int {
	n := int(unsafe.Sizeof(*t)) + 4*cap(t.inlFuncs) + 4*cap(t.inlStart) + 4*cap(t.inl)
	if !t.mapped {
		n += len(t.data)
	}
	return n
}
