// Package procmeta reads what a process's /proc entry says about where it
// runs and what it is called, for the resource its samples are exported
// under: the container and Kubernetes pod its cgroup names
// (/proc/PID/cgroup) and the OpenTelemetry service name its environment
// sets (/proc/PID/environ).
//
// Every read is bounded (MaxCgroupBytes, MaxEnvironBytes) and goes through
// one buffer a Reader owns, so reading a process costs two small reads and
// no allocation beyond the strings found.
package procmeta

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Bounds of the reads of one process.
const (
	// MaxCgroupBytes bounds the read of /proc/PID/cgroup: a line per
	// cgroup v1 hierarchy, each path a few hundred bytes at most.
	MaxCgroupBytes = 8 << 10
	// MaxEnvironBytes bounds the read of /proc/PID/environ: variables
	// past the first 64 KiB of a process's environment are not seen.
	MaxEnvironBytes = 64 << 10
)

// Meta is what is known of one process.
type Meta struct {
	Container
	// ServiceName is the service name the process's environment sets
	// (OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES), or "".
	ServiceName string
}

// Reader reads processes' metadata under a proc root. It is not safe for
// concurrent use: it reuses one buffer.
type Reader struct {
	root string
	buf  []byte
}

// NewReader returns a Reader of the processes under procRoot (where proc
// is mounted, e.g. "/proc").
func NewReader(procRoot string) *Reader {
	return &Reader{root: procRoot, buf: make([]byte, max(MaxCgroupBytes, MaxEnvironBytes))}
}

// Read reads pid's metadata. Each part that cannot be read is left empty
// and its error joined into the one returned; a process that exited
// meanwhile yields errors wrapping fs.ErrNotExist (or ESRCH).
func (r *Reader) Read(pid uint32) (Meta, error) {
	var m Meta
	dir := filepath.Join(r.root, strconv.FormatUint(uint64(pid), 10))
	data, errCgroup := r.read(filepath.Join(dir, "cgroup"), MaxCgroupBytes)
	if errCgroup == nil {
		m.Container = ParseCgroup(completeLines(data))
	}
	data, errEnviron := r.read(filepath.Join(dir, "environ"), MaxEnvironBytes)
	if errEnviron == nil {
		// ServiceName ignores an entry cut short by the bound.
		m.ServiceName = ServiceName(data)
	}
	return m, errors.Join(errCgroup, errEnviron)
}

// read reads up to limit bytes of the file at path into r's buffer. The
// file is opened without os.File: not trying it with the network poller
// saves three system calls of the few a read takes.
func (r *Reader) read(path string, limit int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("procmeta: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	n := 0
	for n < limit {
		m, err := unix.Read(fd, r.buf[n:limit])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("procmeta: read %s: %w", path, err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	return r.buf[:n], nil
}

// completeLines returns the lines of data that were read whole: data that
// fills the read's bound is cut after its last newline, since a line cut
// short could name a wrong cgroup.
func completeLines(data []byte) []byte {
	if len(data) < MaxCgroupBytes {
		return data
	}
	for i := len(data) - 1; i >= 0; i-- {
		if data[i] == '\n' {
			return data[:i+1]
		}
	}
	return nil
}
