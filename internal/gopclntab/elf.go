package gopclntab

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// maxModuledataSection bounds the sections searched for the moduledata.
const maxModuledataSection = 64 << 20

// Moduledata is what this package reads of the runtime's moduledata.
type Moduledata struct {
	// Text is the address function entries are relative to (Go 1.18 and
	// later), 0 when unknown.
	Text uint64
	// GoFunc is the address of go:func.*, which FuncData offsets are
	// relative to, 0 when unknown.
	GoFunc uint64
}

// FindModuledata finds runtime.firstmoduledata in ef, the binary whose
// .gopclntab, loaded at pclntabAddr, t reads. The moduledata starts with
// the address of the .gopclntab and then the function name slice; Go 1.26
// puts it in .go.module, earlier releases in .noptrdata. Go 1.16 and 1.17
// are not supported.
func (t *Table) FindModuledata(ef *elf.File, pclntabAddr uint64) (*Moduledata, error) {
	if t.magic == Magic116 {
		return nil, errors.New("gopclntab: moduledata of Go 1.16 not supported")
	}
	// Word indexes of moduledata.text and .gofunc; Go 1.20 added covctrs.
	textIdx, gofuncIdx := 22, 40
	if t.magic == Magic118 {
		gofuncIdx = 38
	}
	ps := t.ptrSize
	funcnames := pclntabAddr + uint64(t.funcnamesOff)
	for _, name := range []string{".go.module", ".noptrdata", ".data"} {
		sec := ef.Section(name)
		if sec == nil || sec.Type != elf.SHT_PROGBITS || sec.Size > maxModuledataSection || Compressed(sec) {
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
			md := &Moduledata{Text: t.word(data[off+textIdx*ps:]), GoFunc: t.word(data[off+gofuncIdx*ps:])}
			if !inSection(ef, md.GoFunc) {
				md.GoFunc = 0
			}
			if !inSection(ef, md.Text) {
				md.Text = 0
			}
			return md, nil
		}
	}
	return nil, errors.New("gopclntab: moduledata not found")
}

// ResolveText sets the address that function entries are relative to:
// from the moduledata (which may be nil) when it has one, else from the
// header unless the linker left it unrelocated, else the start of .text.
func (t *Table) ResolveText(ef *elf.File, md *Moduledata) {
	switch {
	case t.magic == Magic116:
		// Entries are absolute.
	case md != nil && md.Text != 0:
		t.text = md.Text
	case t.text != 0:
	default:
		if s := ef.Section(".text"); s != nil {
			t.text = s.Addr
		}
	}
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

// Compressed reports whether debug/elf would decompress the section.
func Compressed(s *elf.Section) bool {
	return s.Flags&elf.SHF_COMPRESSED != 0 || strings.HasPrefix(s.Name, ".zdebug")
}

// MapSection maps a section of f read-only, for a large table read
// sparsely (such as .gopclntab) that should cost reclaimable page cache
// rather than heap. It returns the section's bytes and the whole mapping,
// which the caller unmaps with unix.Munmap, or an error when f is nil, the
// section is not stored in the file as is (or not whole: the file is
// shorter), or mmap fails; the caller then reads the section instead.
func MapSection(f *os.File, sec *elf.Section) (data, mapping []byte, err error) {
	if f == nil || sec.Type == elf.SHT_NOBITS || sec.Size == 0 || Compressed(sec) {
		return nil, nil, errors.New("section cannot be mapped")
	}
	page := uint64(os.Getpagesize())
	off := sec.Offset &^ (page - 1)
	delta := sec.Offset - off
	if sec.Size > 1<<40 || off > 1<<62 {
		return nil, nil, errors.New("section out of range")
	}
	// Touching a mapped page past the end of the file raises SIGBUS.
	if fi, err := f.Stat(); err != nil || uint64(fi.Size()) < sec.Offset+sec.Size {
		return nil, nil, errors.New("section extends past the end of the file")
	}
	mapping, err = unix.Mmap(int(f.Fd()), int64(off), int(delta+sec.Size), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap section: %w", err)
	}
	return mapping[delta : delta+sec.Size], mapping, nil
}
