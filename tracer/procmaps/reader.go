package procmaps

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reader reads the executable mappings of processes, reusing its buffers
// from one read to the next. It is not safe for concurrent use.
//
// On kernels since 6.11 it asks the kernel for the executable mappings
// only (the PROCMAP_QUERY ioctl of /proc/PID/maps), which neither formats
// the process's other mappings as text nor has them parsed back; on older
// kernels it parses the text.
type Reader struct {
	// text is the buffer of the maps text.
	text []byte
	// name receives a mapping's path from PROCMAP_QUERY.
	name []byte
	// found holds the mappings of a query until it is complete.
	found []Mapping
	// noQuery is set once the kernel turned PROCMAP_QUERY down.
	noQuery bool
}

// procmapQuery is struct procmap_query of the kernel's
// include/uapi/linux/fs.h.
type procmapQuery struct {
	size        uint64
	queryFlags  uint64
	queryAddr   uint64
	vmaStart    uint64
	vmaEnd      uint64
	vmaFlags    uint64
	vmaPageSize uint64
	vmaOffset   uint64
	inode       uint64
	devMajor    uint32
	devMinor    uint32
	vmaNameSize uint32
	buildIDSize uint32
	vmaNameAddr uint64
	buildIDAddr uint64
}

// Flags of procmapQuery (enum procmap_query_flags).
const (
	queryReadable        = 0x01
	queryWritable        = 0x02
	queryExecutable      = 0x04
	queryShared          = 0x08
	queryCoveringOrNext  = 0x10
	procfsIoctlMagic     = 'f'
	procmapQueryNr       = 17
	iocReadWrite         = 3
	procmapQueryIoctlReq = iocReadWrite<<30 | uint(unsafe.Sizeof(procmapQuery{}))<<16 | procfsIoctlMagic<<8 | procmapQueryNr
)

// nameBytes bounds a mapping's path as PROCMAP_QUERY returns it: PATH_MAX
// and " (deleted)".
const nameBytes = 4096 + 16

// Executable calls fn for each executable mapping of the maps file at path
// (/proc/PID/maps, /proc/PID/task/TID/maps), in address order. A process
// without memory (exited, or a kernel thread) has none. The gate page of
// the legacy vsyscall interface ([vsyscall]), which is no mapping of the
// process's own, is not always among them.
func (r *Reader) Executable(path string, fn func(Mapping)) error {
	// The file is opened without os.File: not trying it with the
	// network poller saves three system calls of the few a read takes.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("read maps: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	if !r.noQuery {
		r.found = r.found[:0]
		err := r.query(fd, func(m Mapping) { r.found = append(r.found, m) })
		switch {
		case err == nil:
			for _, m := range r.found {
				fn(m)
			}
			clear(r.found) // the paths
			return nil
		case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EINVAL):
			// A kernel before 6.11, or one that does not know this
			// version of the query.
			r.noQuery = true
		}
		// Else (a name too long to return, say) the text has it all.
	}
	if r.text == nil {
		r.text = make([]byte, 16<<10)
	}
	return parse(fdReader(fd), r.text, func(perms [4]byte) bool { return perms[2] == 'x' }, fn)
}

// fdReader reads a file descriptor.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// query asks the kernel for the executable mappings of the maps file f one
// at a time, each with its path.
func (r *Reader) query(fd int, fn func(Mapping)) error {
	if r.name == nil {
		r.name = make([]byte, nameBytes)
	}
	var addr uint64
	for {
		q := procmapQuery{
			size:        uint64(unsafe.Sizeof(procmapQuery{})),
			queryFlags:  queryExecutable | queryCoveringOrNext,
			queryAddr:   addr,
			vmaNameSize: uint32(len(r.name)),
			vmaNameAddr: uint64(uintptr(unsafe.Pointer(&r.name[0]))),
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(procmapQueryIoctlReq), uintptr(unsafe.Pointer(&q)))
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.ENOENT:
			return nil // past the last one
		case unix.ESRCH:
			return nil // no memory: exited, or a kernel thread
		default:
			return fmt.Errorf("PROCMAP_QUERY: %w", errno)
		}
		m := Mapping{Start: q.vmaStart, End: q.vmaEnd, Offset: q.vmaOffset, Major: q.devMajor, Minor: q.devMinor, Inode: q.inode,
			Perms: [4]byte{'-', '-', '-', 'p'}}
		if q.vmaFlags&queryReadable != 0 {
			m.Perms[0] = 'r'
		}
		if q.vmaFlags&queryWritable != 0 {
			m.Perms[1] = 'w'
		}
		if q.vmaFlags&queryExecutable != 0 {
			m.Perms[2] = 'x'
		}
		if q.vmaFlags&queryShared != 0 {
			m.Perms[3] = 's'
		}
		if n := int(q.vmaNameSize); n > 1 && n <= len(r.name) {
			m.Path = string(r.name[:n-1]) // without the terminating zero
		}
		if m.End <= addr {
			return fmt.Errorf("PROCMAP_QUERY: mapping %#x-%#x does not follow %#x", m.Start, m.End, addr)
		}
		fn(m)
		addr = m.End
	}
}
