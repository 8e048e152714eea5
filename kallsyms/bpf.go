package kallsyms

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"unsafe"

	"github.com/cilium/ebpf"
)

// ProgramLister lists the BPF programs loaded in the kernel. A Table calls
// it only while it re-reads (never concurrently with itself), and asks for
// each program ID once for as long as the program stays loaded.
type ProgramLister interface {
	// ProgramIDs returns the IDs of the loaded programs.
	ProgramIDs() ([]uint32, error)
	// Program describes a loaded program. It returns an error for which
	// errors.Is(err, os.ErrNotExist) holds when the program is gone.
	Program(id uint32) (BPFProgram, error)
}

// BPFProgram is a loaded BPF program and the kernel text its JIT made.
type BPFProgram struct {
	// ID is the program's ID.
	ID uint32
	// Name is the program's name (the full BTF name when the kernel's
	// 15-byte copy is truncated).
	Name string
	// Tag is the program's tag, the hex hash of its instructions.
	Tag string
	// Funcs are the program's JIT'ed functions, the main program first
	// and then its subprograms. A program that is not JIT'ed has none.
	Funcs []BPFFunc
}

// BPFFunc is one JIT'ed function of a BPF program.
type BPFFunc struct {
	// Addr is the function's start address.
	Addr uint64
	// Size is the length of its machine code in bytes.
	Size uint64
	// Name is the function's name from BTF, or "" to use the program's
	// name.
	Name string
}

// SymbolName returns the name of function i of the program, in the form
// the kernel uses in /proc/kallsyms: bpf_prog_TAG_NAME, or bpf_prog_TAG
// for a nameless program. For the main program (i == 0) it is the
// kernel's name. The kernel gives each subprogram a tag of its own, which
// the bpf syscall does not report, so subprograms are named with the
// program's tag and their BTF name, or the program's name and "_funcI"
// without BTF.
func (p *BPFProgram) SymbolName(i int) string {
	name := p.Name
	if i > 0 {
		if i < len(p.Funcs) && p.Funcs[i].Name != "" {
			name = p.Funcs[i].Name
		} else {
			name += "_func" + strconv.Itoa(i)
		}
	}
	if name == "" {
		return "bpf_prog_" + p.Tag
	}
	return "bpf_prog_" + p.Tag + "_" + name
}

// SyscallPrograms lists BPF programs with the bpf(2) syscall. Listing them
// needs CAP_SYS_ADMIN, and their addresses are hidden unless the caller
// may see kernel pointers. The zero value is ready to use.
type SyscallPrograms struct{}

// ProgramIDs returns the IDs of all loaded programs.
func (SyscallPrograms) ProgramIDs() ([]uint32, error) {
	var ids []uint32
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids, nil
		}
		if err != nil {
			return ids, fmt.Errorf("kallsyms: list BPF programs: %w", err)
		}
		ids = append(ids, uint32(next))
		id = next
	}
}

// Program describes the program with the given ID.
func (SyscallPrograms) Program(id uint32) (BPFProgram, error) {
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return BPFProgram{}, fmt.Errorf("kallsyms: BPF program %d: %w", id, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return BPFProgram{}, fmt.Errorf("kallsyms: BPF program %d: %w", id, err)
	}
	p := BPFProgram{ID: id, Name: info.Name, Tag: info.Tag}
	addrs, _ := info.JitedKsymAddrs()
	lens, _ := info.JitedFuncLens()
	if len(addrs) == 0 || len(addrs) != len(lens) {
		// Not JIT'ed, or the addresses are hidden.
		return p, nil
	}
	var names []string
	if len(addrs) > 1 {
		// Subprograms are named from BTF, when the program has it.
		if fis, err := info.FuncInfos(); err == nil && len(fis) == len(addrs) {
			for _, fi := range fis {
				if fi.Func == nil {
					names = nil
					break
				}
				names = append(names, fi.Func.Name)
			}
		}
	}
	for i, a := range addrs {
		f := BPFFunc{Addr: uint64(a), Size: uint64(lens[i])}
		if i > 0 && i < len(names) {
			f.Name = names[i]
		}
		p.Funcs = append(p.Funcs, f)
	}
	return p, nil
}

// bpfFunc is one named range of the BPF part.
type bpfFunc struct {
	start, end uint64
	name, key  string
}

// bpfPart holds the JIT'ed functions of the listed BPF programs, sorted by
// address, with their exact extents.
type bpfPart struct {
	funcs []bpfFunc
	progs map[uint32]BPFProgram
}

func newBPFPart(progs map[uint32]BPFProgram) *bpfPart {
	p := &bpfPart{progs: progs}
	for _, prog := range progs {
		for i, f := range prog.Funcs {
			if f.Addr == 0 || f.Size == 0 || f.Addr+f.Size < f.Addr {
				continue
			}
			name := prog.SymbolName(i)
			p.funcs = append(p.funcs, bpfFunc{start: f.Addr, end: f.Addr + f.Size, name: name, key: bpfModule + ":" + name})
		}
	}
	slices.SortFunc(p.funcs, func(a, b bpfFunc) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	return p
}

func (p *bpfPart) lookup(addr uint64) (Symbol, bool) {
	if p == nil {
		return Symbol{}, false
	}
	// Find the last function starting at or before addr.
	lo, hi := 0, len(p.funcs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.funcs[m].start <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 || addr >= p.funcs[lo-1].end {
		return Symbol{}, false
	}
	f := &p.funcs[lo-1]
	return Symbol{
		Name:       f.name,
		Offset:     addr - f.start,
		Module:     bpfModule,
		ModuleKey:  f.key,
		ModuleBase: f.start,
	}, true
}

func (p *bpfPart) len() int {
	if p == nil {
		return 0
	}
	return len(p.funcs)
}

func (p *bpfPart) bytes() int {
	if p == nil {
		return 0
	}
	n := int(unsafe.Sizeof(*p)) + cap(p.funcs)*int(unsafe.Sizeof(bpfFunc{}))
	for _, f := range p.funcs {
		n += len(f.name) + len(f.key)
	}
	for _, prog := range p.progs {
		n += int(unsafe.Sizeof(prog)) + 8 + len(prog.Name) + len(prog.Tag) + cap(prog.Funcs)*int(unsafe.Sizeof(BPFFunc{}))
	}
	return n
}

// bpfModule is the Module of symbols in BPF programs, as in /proc/kallsyms.
const bpfModule = "bpf"
