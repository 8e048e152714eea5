package symbolizer

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// Sections the symbolizer reads in place (symbol and string tables, DWARF
// sections) are mapped read-only from the open file rather than copied
// into the heap: they cost page cache, shared with every process that
// maps the file, and only the pages that are touched count toward this
// process's resident memory.
//
// A mapping outlives a truncation of its file, and touching one of its
// pages past the new end of the file raises SIGBUS. Three things keep that
// from killing the agent: only regular files are mapped, and only
// sections that the file's size covers when mapped; every read of a kept
// mapping (File.Lookup) and every parse of a transient one runs with
// debug.SetPanicOnFault, so that a fault becomes a recovered panic and the
// frame stays unnamed; and files are replaced, in practice, by renaming a
// new file over the old one, which leaves the mapped inode intact.
// Rewriting a mapped library in place crashes the processes that run it,
// so it is rare.
//
// A mapping also keeps its file, and the file's mount, in use for as long
// as the table that holds it lives: a container's root file system cannot
// be unmounted (without MNT_DETACH) while a cached table maps one of its
// files. Tables are unmapped when the cache evicts them, or when the caller
// tells the Symbolizer to forget a file no process maps any more, and the
// table is then collected.

// mapSection maps the contents of sec from the open file fh. data is the
// section's bytes and mem the mapping to pass to unix.Munmap.
func mapSection(fh *os.File, sec *elf.Section) (data, mem []byte, err error) {
	if fh == nil {
		return nil, nil, errors.New("not an open file")
	}
	if sec.Type == elf.SHT_NOBITS || sec.Size == 0 || compressed(sec) {
		return nil, nil, errors.New("section has no mappable data")
	}
	page := uint64(os.Getpagesize())
	off := sec.Offset &^ (page - 1)
	delta := sec.Offset - off
	if sec.Size > 1<<40 || sec.Offset > 1<<62 {
		return nil, nil, errors.New("section out of range")
	}
	fi, err := fh.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("stat: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, errors.New("not a regular file")
	}
	if uint64(fi.Size()) < sec.Offset+sec.Size {
		return nil, nil, errors.New("section extends past the end of the file")
	}
	mem, err = unix.Mmap(int(fh.Fd()), int64(off), int(delta+sec.Size), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	return mem[delta : delta+sec.Size], mem, nil
}

// sectionData returns the contents of sec, mapped from fh when possible
// (mem is then the mapping, for unix.Munmap), else read into the heap.
func sectionData(fh *os.File, sec *elf.Section) (data, mem []byte, err error) {
	if data, mem, err := mapSection(fh, sec); err == nil {
		return data, mem, nil
	}
	data, err = sec.Data()
	return data, nil, err
}

// unmap releases mappings made by mapSection; nil ones are skipped.
func unmap(mems ...[]byte) {
	for _, m := range mems {
		if m != nil {
			unix.Munmap(m)
		}
	}
}

// dropPages tells the kernel that the pages of mem that loading touched
// are not needed any more (they are clean file pages: a later read faults
// in, from the page cache, only the page it needs) and that later reads
// are random, so that no read-around maps their neighbours.
func dropPages(mem []byte) {
	unix.Madvise(mem, unix.MADV_DONTNEED)
	unix.Madvise(mem, unix.MADV_RANDOM)
}

// faultError is the run-time error a memory fault becomes under
// debug.SetPanicOnFault.
type faultError interface {
	error
	Addr() uintptr
}

// catchFault, deferred after debug.SetPanicOnFault(true), turns a fault
// while reading a mapping into *err and re-raises any other panic.
func catchFault(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if fe, ok := r.(faultError); ok {
		*err = fmt.Errorf("fault reading a mapped file at %#x (truncated under us?): %w", fe.Addr(), fe)
		return
	}
	panic(r)
}

// withFaults runs fn with faults on mappings turned into an error.
func withFaults(fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer catchFault(&err)
	fn()
	return nil
}
