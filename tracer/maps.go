package tracer

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// unwinderMaps are what the tracer writes into the eBPF unwinder's maps:
// the processes and their mappings, the unwind tables, the files' tables
// for processes not synced yet, and the interpreters. Only the Run
// goroutine writes them; newTable, which makes a table no eBPF program
// sees until putTable enters it, is called by the build workers too.
// Deleting what is not there is no error.
type unwinderMaps interface {
	putProcess(pid uint32, info progs.StacklineProcessInfo) error
	deleteProcess(pid uint32) error
	putMappings(keys []progs.StacklineMappingKey, entries []progs.StacklineExecMapping) error
	deleteMappings(keys []progs.StacklineMappingKey) error
	putInterpreter(pid uint32, v *progs.StacklineInterpProc) error
	deleteInterpreter(pid uint32) error
	// newTable makes a table of n rows for key and has fill write the
	// packed rows into it. The table is not in unwind_tables yet.
	newTable(key uint64, n int, fill func(rows []uint64) error) (rowTable, error)
	// putTable enters tab, made by newTable, as table key; the caller
	// still closes tab.
	putTable(key uint64, tab rowTable) error
	deleteTable(key uint64) error
	putFileTable(file fileKey, v progs.StacklineFileTable) error
	deleteFileTable(file fileKey) error
}

// rowTable is a table of packed rows made by unwinderMaps.newTable, held
// until it is entered in unwind_tables (which holds it from then on) or
// dropped.
type rowTable interface {
	// size is what the kernel charges for the table, in bytes.
	size() uint64
	// read has fn read the first n rows of the table, in place.
	read(n int, fn func(rows []uint64)) error
	// write has fn write rows off to off+n of the table, in place,
	// where eBPF programs may be reading them.
	write(off, n int, fn func(rows []uint64) error) error
	// clone returns a handle of its own on the same table.
	clone() (rowTable, error)
	close() error
}

// bpfMaps are the loaded eBPF maps.
type bpfMaps struct {
	objs *progs.StacklineObjects
	// tableSpec is the inner map template of unwind_tables, from the
	// object: every table is created with its type, sizes and flags,
	// which the kernel requires of an inner map.
	tableSpec *ebpf.MapSpec
}

// newBPFMaps returns the maps of objs, loaded from spec.
func newBPFMaps(spec *ebpf.CollectionSpec, objs *progs.StacklineObjects) (bpfMaps, error) {
	outer := spec.Maps[progs.StacklineMapUnwindTables]
	if outer == nil || outer.InnerMap == nil {
		return bpfMaps{}, errors.New("no inner map template for unwind_tables")
	}
	inner := outer.InnerMap
	if inner.Type != ebpf.Array || inner.ValueSize != rowBytes || inner.Flags&unix.BPF_F_MMAPABLE == 0 {
		return bpfMaps{}, fmt.Errorf("inner map template of unwind_tables: %v of %d-byte values, flags %#x: want an mmapable array of %d-byte rows",
			inner.Type, inner.ValueSize, inner.Flags, rowBytes)
	}
	return bpfMaps{objs: objs, tableSpec: inner.Copy()}, nil
}

// ignoreMissing drops the error of deleting a key that is not there.
func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

func (m bpfMaps) putProcess(pid uint32, info progs.StacklineProcessInfo) error {
	return m.objs.Processes.Put(pid, info)
}

func (m bpfMaps) deleteProcess(pid uint32) error {
	return ignoreMissing(m.objs.Processes.Delete(pid))
}

func (m bpfMaps) putMappings(keys []progs.StacklineMappingKey, entries []progs.StacklineExecMapping) error {
	_, err := m.objs.ProcessMappings.BatchUpdate(keys, entries, nil)
	return err
}

func (m bpfMaps) deleteMappings(keys []progs.StacklineMappingKey) error {
	_, err := m.objs.ProcessMappings.BatchDelete(keys, nil)
	return ignoreMissing(err)
}

func (m bpfMaps) putInterpreter(pid uint32, v *progs.StacklineInterpProc) error {
	return m.objs.InterpProcs.Put(pid, v)
}

func (m bpfMaps) deleteInterpreter(pid uint32) error {
	return ignoreMissing(m.objs.InterpProcs.Delete(pid))
}

// newTable creates an array map of n rows (at least one) with the flags
// of the inner map template and fills it through a mapping of its memory
// (BPF_F_MMAPABLE): fill writes the rows where the eBPF unwinder reads
// them, with no copy in between and no system call per row. The mapping
// is gone when newTable returns: the map keeps its memory in the kernel,
// and this process does not hold it too (it would count in its RSS).
func (m bpfMaps) newTable(key uint64, n int, fill func(rows []uint64) error) (rowTable, error) {
	inner, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: fmt.Sprintf("unwind_%x", key>>40),
		Type: m.tableSpec.Type, KeySize: m.tableSpec.KeySize, ValueSize: m.tableSpec.ValueSize,
		MaxEntries: uint32(max(n, 1)),
		// Without the template's BTF: the kernel would load a copy
		// of it for each table.
		Flags: m.tableSpec.Flags,
	})
	if err != nil {
		return nil, fmt.Errorf("create unwind table of %d rows: %w", n, err)
	}
	if err := fillMapped(inner, n, fill); err != nil {
		inner.Close()
		return nil, fmt.Errorf("fill unwind table of %d rows: %w", n, err)
	}
	return mapTable{inner, mapMemlock(inner, uint64(n)*rowBytes)}, nil
}

// fillMapped maps the first n 8-byte values of the mmapable array m into
// this process, has fill write them, and unmaps them.
func fillMapped(m *ebpf.Map, n int, fill func(rows []uint64) error) error {
	return withMapped(m, 0, n, unix.PROT_READ|unix.PROT_WRITE, fill)
}

// withMapped maps the 8-byte values off to off+n of the mmapable array m
// into this process with protection prot (only the pages that hold
// them), calls fn with them, and unmaps them.
func withMapped(m *ebpf.Map, off, n int, prot int, fn func(rows []uint64) error) error {
	if n == 0 {
		return fn(nil)
	}
	page := os.Getpagesize()
	from := off * rowBytes / page * page
	to := (off+n)*rowBytes + page - 1
	to -= to % page
	mem, err := unix.Mmap(m.FD(), int64(from), to-from, prot, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the array's memory: %w", err)
	}
	// The kernel maps an array's values page-aligned, 8 bytes each.
	rows := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(mem))), len(mem)/rowBytes)[off-from/rowBytes:][:n]
	err = fn(rows)
	if uerr := unix.Munmap(mem); uerr != nil && err == nil {
		err = fmt.Errorf("unmap the array's memory: %w", uerr)
	}
	return err
}

// mapTable is a table in an inner map of its own.
type mapTable struct {
	m *ebpf.Map
	// memlock is what the kernel charges for m.
	memlock uint64
}

func (t mapTable) size() uint64 { return t.memlock }
func (t mapTable) close() error { return t.m.Close() }

func (t mapTable) read(n int, fn func(rows []uint64)) error {
	if n > int(t.m.MaxEntries()) {
		return fmt.Errorf("read %d rows of a table of %d", n, t.m.MaxEntries())
	}
	return withMapped(t.m, 0, n, unix.PROT_READ, func(rows []uint64) error {
		fn(rows)
		return nil
	})
}

func (t mapTable) write(off, n int, fn func(rows []uint64) error) error {
	if off < 0 || n < 0 || off+n > int(t.m.MaxEntries()) {
		return fmt.Errorf("write rows %d to %d of a table of %d", off, off+n, t.m.MaxEntries())
	}
	return withMapped(t.m, off, n, unix.PROT_READ|unix.PROT_WRITE, fn)
}

func (t mapTable) clone() (rowTable, error) {
	m, err := t.m.Clone()
	if err != nil {
		return nil, err
	}
	return mapTable{m, t.memlock}, nil
}

func (m bpfMaps) putTable(key uint64, tab rowTable) error {
	mt, ok := tab.(mapTable)
	if !ok {
		return fmt.Errorf("insert unwind table: %T is not an eBPF map", tab)
	}
	if err := m.objs.UnwindTables.Put(key, mt.m); err != nil {
		return fmt.Errorf("insert unwind table: %w", err)
	}
	return nil
}

func (m bpfMaps) deleteTable(key uint64) error {
	return ignoreMissing(m.objs.UnwindTables.Delete(key))
}

func (m bpfMaps) putFileTable(file fileKey, v progs.StacklineFileTable) error {
	return m.objs.FileTables.Put(progs.StacklineFileKey{Dev: file.dev, Inode: file.inode}, v)
}

func (m bpfMaps) deleteFileTable(file fileKey) error {
	return ignoreMissing(m.objs.FileTables.Delete(progs.StacklineFileKey{Dev: file.dev, Inode: file.inode}))
}
