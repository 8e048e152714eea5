package symbolizer

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/gopclntab"
	"github.com/stackline-dev/stackline/trace"
)

// Limits on what a .gopclntab may ask for.
const (
	maxGoInlineDepth = 64      // inlined frames reported for one address
	maxGoInlTreeLen  = 1 << 16 // entries in one function's inline tree
)

// goTable names the functions of a Go binary from its .gopclntab, which it
// keeps as read (the runtime's own compact format), and the inline trees
// of the binary's read-only data (go:func.*), read in place when the file
// can be mapped and copied out of it otherwise.
type goTable struct {
	tab *gopclntab.Table
	// mapped says the table's data is mapped from the file, not held in
	// the heap.
	mapped bool

	// goFunc, when not nil, is the binary's data from go:func.* to the
	// end of its section, mapped from the file (goFuncMem is the
	// mapping): inline tree entries are read there, entSize bytes each,
	// with the name offset at nameAt and the parent PC at parentAt.
	goFunc, goFuncMem []byte
	// tabMem is the mapping of .gopclntab when mapped.
	tabMem                    []byte
	order                     binary.ByteOrder
	entSize, nameAt, parentAt int

	// Otherwise the trees are copied: function inlFuncs[i] has the inline
	// tree inl[inlStart[i]:inlStart[i+1]] (or up to the end of inl for the
	// last), stored as nameOff, parentPc pairs.
	inlFuncs []uint32
	inlStart []uint32
	inl      []int32
}

// inlEntry returns entry ix of the inline tree of function i (f).
func (t *goTable) inlEntry(i int, f *gopclntab.Func, ix int32) (nameOff, parentPC int32, ok bool) {
	if ix < 0 {
		return 0, 0, false
	}
	if t.goFunc != nil {
		off, ok := t.tab.FuncData(f, gopclntab.FuncDataInlTree)
		if !ok || ix >= maxGoInlTreeLen {
			return 0, 0, false
		}
		at := uint64(off) + uint64(ix)*uint64(t.entSize)
		if at+uint64(t.entSize) > uint64(len(t.goFunc)) {
			return 0, 0, false
		}
		e := t.goFunc[at : at+uint64(t.entSize)]
		return int32(t.order.Uint32(e[t.nameAt:])), int32(t.order.Uint32(e[t.parentAt:])), true
	}
	tree := t.inlTree(i)
	if 2*int(ix)+1 >= len(tree) {
		return 0, 0, false
	}
	return tree[2*ix], tree[2*ix+1], true
}

// hasInlTree reports whether function i (f) has an inline tree.
func (t *goTable) hasInlTree(i int, f *gopclntab.Func) bool {
	if t.goFunc != nil {
		_, ok := t.tab.FuncData(f, gopclntab.FuncDataInlTree)
		return ok
	}
	return len(t.inlTree(i)) > 0
}

// parseGoTable checks the header of a .gopclntab. It takes ownership of
// data, which must not be modified afterwards.
func parseGoTable(data []byte, order binary.ByteOrder) (*goTable, error) {
	tab, err := gopclntab.Parse(data, order)
	if err != nil {
		return nil, err
	}
	return &goTable{tab: tab}, nil
}

// textRange returns the addresses the table's functions cover.
func (t *goTable) textRange() (lo, hi uint64) { return t.tab.TextRange() }

// fileLine returns the source position of pc in function f.
func (t *goTable) fileLine(f *gopclntab.Func, pc uint64) (string, int64) {
	line := t.tab.PCValue(f.Entry, f.PCLn, pc)
	file := t.tab.FileName(f, t.tab.PCValue(f.Entry, f.PCFile, pc))
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
	i, ok := t.tab.Find(pc)
	if !ok {
		return buf
	}
	f, ok := t.tab.Func(i)
	if !ok {
		return buf
	}
	hasTree := t.hasInlTree(i, &f)
	for range maxGoInlineDepth {
		file, line := t.fileLine(&f, pc)
		if hasTree {
			ix := t.tab.PCValue(f.Entry, t.tab.PCData(&f, gopclntab.PCDataInlTreeIndex), pc)
			if nameOff, parentPC, ok := t.inlEntry(i, &f, ix); ok {
				// Copies: a name must not keep the table alive (or
				// point into a mapping that is gone).
				name := strings.Clone(t.tab.Name(nameOff))
				buf = append(buf, trace.Line{Function: name, File: strings.Clone(file), Line: line})
				next := f.Entry + uint64(int64(parentPC))
				if next == pc {
					break
				}
				pc = next
				continue
			}
		}
		name := t.tab.Name(f.NameOff)
		if name == "" {
			break
		}
		return append(buf, trace.Line{Function: strings.Clone(name), File: strings.Clone(file), Line: line})
	}
	return buf
}

// loadInlineTrees makes the inline trees of the binary's go:func.* data
// readable: mapped from fh, when it is not nil and the data's section can
// be mapped, else copied out.
func (t *goTable) loadInlineTrees(ef *elf.File, fh *os.File, md *gopclntab.Moduledata) {
	magic := t.tab.Magic()
	if magic == gopclntab.Magic116 || md == nil || md.GoFunc == 0 {
		return // 1.16 funcdata are absolute pointers; not supported
	}
	entSize, nameAt, parentAt := 16, 4, 8
	if magic == gopclntab.Magic118 {
		entSize, nameAt, parentAt = 20, 12, 16
	}
	for _, s := range ef.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type != elf.SHT_PROGBITS || md.GoFunc < s.Addr || md.GoFunc-s.Addr >= s.Size {
			continue
		}
		if data, mem, err := mapSection(fh, s); err == nil {
			t.goFunc, t.goFuncMem = data[md.GoFunc-s.Addr:], mem
			t.order, t.entSize, t.nameAt, t.parentAt = ef.ByteOrder, entSize, nameAt, parentAt
			unix.Madvise(mem, unix.MADV_RANDOM)
			return
		}
		break
	}
	r := newVaddrReader(ef)
	// treeLen returns the length of function i's inline tree, and where
	// it is in go:func.*.
	treeLen := func(i int) (n int, off uint32, ok bool) {
		f, ok := t.tab.Func(i)
		if !ok {
			return 0, 0, false
		}
		off, ok = t.tab.FuncData(&f, gopclntab.FuncDataInlTree)
		if !ok {
			return 0, 0, false
		}
		n = int(t.tab.MaxValue(t.tab.PCData(&f, gopclntab.PCDataInlTreeIndex))) + 1
		if n <= 0 || n > maxGoInlTreeLen {
			return 0, 0, false
		}
		return n, off, true
	}
	// Sized first, so that the trees are allocated once rather than grown
	// by appending.
	funcs, entries := 0, 0
	for i := range t.tab.NumFuncs() {
		if n, _, ok := treeLen(i); ok {
			funcs++
			entries += 2 * n
		}
	}
	t.inlFuncs = make([]uint32, 0, funcs)
	t.inlStart = make([]uint32, 0, funcs)
	t.inl = make([]int32, 0, entries)
	buf := make([]byte, 0, 4096)
	for i := range t.tab.NumFuncs() {
		n, off, ok := treeLen(i)
		if !ok {
			continue
		}
		size := n * entSize
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if err := r.readAt(buf, md.GoFunc+uint64(off)); err != nil {
			continue
		}
		t.inlFuncs = append(t.inlFuncs, uint32(i))
		t.inlStart = append(t.inlStart, uint32(len(t.inl)))
		for k := range n {
			e := buf[k*entSize:]
			t.inl = append(t.inl, int32(ef.ByteOrder.Uint32(e[nameAt:])), int32(ef.ByteOrder.Uint32(e[parentAt:])))
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
	n := int(unsafe.Sizeof(*t)) + int(unsafe.Sizeof(*t.tab)) + 4*cap(t.inlFuncs) + 4*cap(t.inlStart) + 4*cap(t.inl)
	if !t.mapped {
		n += t.tab.Size()
	}
	return n
}

// mappedBytes returns the bytes of the file the table maps.
func (t *goTable) mappedBytes() int {
	n := len(t.goFuncMem)
	if t.mapped {
		n += t.tab.Size()
	}
	return n
}
