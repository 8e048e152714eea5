package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// unwinderMaps are what the tracer writes into the eBPF unwinder's maps:
// the processes and their mappings, the unwind tables, the files' tables
// for processes not synced yet, and the interpreters. Only the Run
// goroutine writes them. Deleting what is not there is no error.
type unwinderMaps interface {
	putProcess(pid uint32, info progs.StacklineProcessInfo) error
	deleteProcess(pid uint32) error
	putMappings(keys []progs.StacklineMappingKey, entries []progs.StacklineExecMapping) error
	deleteMappings(keys []progs.StacklineMappingKey) error
	putInterpreter(pid uint32, v *progs.StacklineInterpProc) error
	deleteInterpreter(pid uint32) error
	// putTable loads rows as table key and returns the bytes the kernel
	// charges for them.
	putTable(key uint64, rows []uint64) (uint64, error)
	deleteTable(key uint64) error
	putFileTable(file fileKey, v progs.StacklineFileTable) error
	deleteFileTable(file fileKey) error
}

// bpfMaps are the loaded eBPF maps.
type bpfMaps struct {
	objs *progs.StacklineObjects
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

func (m bpfMaps) putTable(key uint64, rows []uint64) (uint64, error) {
	inner, err := newInnerArray(fmt.Sprintf("unwind_%x", key>>40), rowBytes, rows)
	if err != nil {
		return 0, err
	}
	defer inner.Close()
	if err := m.objs.UnwindTables.Put(key, inner); err != nil {
		return 0, fmt.Errorf("insert unwind table: %w", err)
	}
	return mapMemlock(inner, uint64(len(rows))*rowBytes), nil
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
