package kallsyms

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/support/ebpf/ksymname"
)

// kernelNamer runs the kernel namer (support/ebpf/ksymname), a syscall
// program that formats kernel addresses with the kernel's "%pS" into an
// mmapped array element: Go writes the addresses and reads the names
// without copies through the bpf syscall. It is not safe for concurrent
// use.
type kernelNamer struct {
	prog *ebpf.Program
	m    *ebpf.Map
	mem  []byte
	b    *ksymname.KsymnameKsymBatch
	// imageStart and imageEnd bound the kernel image's code, as
	// the program found them at the first run.
	imageStart, imageEnd uint64
	runs                 uint64
	// mapBytes is the kernel memory of the batch map, as the kernel
	// charges it.
	mapBytes uint64
}

// newKernelNamer loads the kernel namer and runs it once, to learn the
// kernel image's bounds and to check that the kernel names an address of
// the image. It fails on kernels without syscall programs, bpf_snprintf's
// "%pS" or bpf_kallsyms_lookup_name (before 5.16), without CAP_BPF and
// CAP_PERFMON, or when kernel addresses are hidden from this process.
func newKernelNamer() (_ *kernelNamer, err error) {
	spec, err := ksymname.LoadKsymname()
	if err != nil {
		return nil, fmt.Errorf("kernel namer: %w", err)
	}
	var objs ksymname.KsymnameObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("kernel namer: load: %w", err)
	}
	n := &kernelNamer{prog: objs.NameAddresses, m: objs.Batch}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	size := int(unsafe.Sizeof(ksymname.KsymnameKsymBatch{}))
	page := os.Getpagesize()
	n.mem, err = unix.Mmap(n.m.FD(), 0, (size+page-1)/page*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		n.mem = nil
		return nil, fmt.Errorf("kernel namer: map its batch: %w", err)
	}
	// The kernel maps an array's values from a page boundary.
	n.b = (*ksymname.KsymnameKsymBatch)(unsafe.Pointer(unsafe.SliceData(n.mem)))
	if err := n.run(0); err != nil {
		return nil, err
	}
	n.imageStart, n.imageEnd = n.b.ImageStart, n.b.ImageEnd
	if info, err := n.m.Info(); err == nil {
		n.mapBytes, _ = info.Memlock()
	}
	if n.imageStart == 0 || n.imageEnd <= n.imageStart {
		return nil, errors.New("kernel namer: the kernel image's bounds are hidden (kernel.kptr_restrict, or missing CAP_SYSLOG)")
	}
	// The image's first function must be named.
	n.b.Addrs[0] = n.imageStart
	if err := n.run(1); err != nil {
		return nil, err
	}
	if _, ok := parseSymbol(n.output(0)); !ok {
		return nil, fmt.Errorf("kernel namer: the kernel named its image's start %#x %q", n.imageStart, n.output(0))
	}
	return n, nil
}

// run names the first count addresses of the batch.
func (n *kernelNamer) run(count int) error {
	n.b.Count = uint32(count)
	n.runs++
	ret, err := n.prog.Run(&ebpf.RunOptions{})
	if err != nil {
		return fmt.Errorf("kernel namer: run: %w", err)
	}
	if ret != 0 {
		return fmt.Errorf("kernel namer: run returned %d", ret)
	}
	return nil
}

// output returns the kernel's output for address i of the last run, or
// nil when it failed or was cut.
func (n *kernelNamer) output(i int) []byte {
	l := int(n.b.Lens[i])
	if l <= 1 || l > len(n.b.Names[i]) {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&n.b.Names[i][0])), l-1)
}

// inImage reports whether addr lies in the kernel image.
func (n *kernelNamer) inImage(addr uint64) bool {
	return addr >= n.imageStart && addr < n.imageEnd
}

func (n *kernelNamer) close() error {
	var err error
	if n.mem != nil {
		err = unix.Munmap(n.mem)
		n.mem, n.b = nil, nil
	}
	return errors.Join(err, n.prog.Close(), n.m.Close())
}

// formatted is a symbol as the kernel's "%pS" prints it.
type formatted struct {
	name   []byte
	offset uint64
	size   uint64
	module []byte // nil for none
}

// parseSymbol parses the output of the kernel's "%pS" for an address:
//
//	name+0xoffset/0xsize
//	name+0xoffset/0xsize [module]
//
// The module's brackets may hold more after a space (a build ID), and
// anything after them is ignored. An address that no symbol covers is
// printed as the address in hex ("0xffffffffc0001234"), which parseSymbol
// reports as false, as it does any output not of this form. The output
// comes from the kernel, but is checked as untrusted all the same: names
// must be printable and have no spaces, the offset must lie in the size
// (or the size be unknown, 0), and a module's name must be one.
func parseSymbol(out []byte) (formatted, bool) {
	sym, rest, _ := bytes.Cut(out, []byte{' '})
	slash := bytes.LastIndexByte(sym, '/')
	if slash < 0 {
		return formatted{}, false
	}
	plus := bytes.LastIndexByte(sym[:slash], '+')
	if plus <= 0 {
		return formatted{}, false
	}
	f := formatted{name: sym[:plus]}
	var ok bool
	if f.offset, ok = parseKernelHex(sym[plus+1 : slash]); !ok {
		return formatted{}, false
	}
	if f.size, ok = parseKernelHex(sym[slash+1:]); !ok {
		return formatted{}, false
	}
	if f.size != 0 && f.offset >= f.size {
		return formatted{}, false
	}
	for _, c := range f.name {
		if c <= ' ' || c >= 0x7f {
			return formatted{}, false
		}
	}
	if len(rest) == 0 {
		return f, true
	}
	if rest[0] != '[' {
		return formatted{}, false
	}
	end := bytes.IndexAny(rest, " ]")
	if end < 0 {
		return formatted{}, false
	}
	f.module = rest[1:end]
	if !validModuleName(string(f.module)) {
		return formatted{}, false
	}
	return f, true
}

// parseKernelHex parses a number as the kernel's "%#lx" prints it: "0x"
// and hex digits, or "0".
func parseKernelHex(b []byte) (uint64, bool) {
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	if len(b) < 3 || b[0] != '0' || b[1] != 'x' {
		return 0, false
	}
	return parseHex(b[2:])
}
