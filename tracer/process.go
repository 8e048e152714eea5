package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/procmaps"
	"github.com/stackline-dev/stackline/tracer/procmeta"
)

// mapping is an executable mapping of a process.
type mapping struct {
	start, end, offset uint64
	// key identifies the mapped file; zero for anonymous and special
	// mappings.
	key fileKey
	// path is the mapped path as the process sees it, or a special name.
	path string
	// fi is the file's identity as the sync that read the mapping found
	// it (nil when not identified): the process's frames are named even
	// when the file cache has evicted it since.
	fi *fileInfo
}

// fileKey identifies a file on this host by device and inode, as
// /proc/PID/maps shows them.
type fileKey struct {
	dev   uint64
	inode uint64
}

// process is what the tracer knows of one process.
type process struct {
	pid            uint32
	mappings       []mapping // executable ones, sorted by start
	executablePath string
	name           string
	// lastRead is when the mappings were last read; rereads on unknown
	// addresses are rate-limited from it.
	lastRead time.Time
	// gone is set when /proc/PID could not be read: the process exited
	// before the tracer saw its first trace.
	gone bool
	// synced is when the mappings were last given to eBPF, with the
	// unwind tables in tables (one reference each); numMappings of them
	// are in eBPF under generation gen (see putMappings).
	synced      time.Time
	tables      []*unwindTable
	gen         uint32
	numMappings int
	// waiting are the files it maps whose tables were not built when
	// its mappings were given to eBPF (counted in tableStore.unbuilt):
	// each is built when a sample of a process reaches it, then the
	// mappings are given again.
	waiting []trace.FileID
	// interp is the interpreter the process runs, once found.
	interp interpreter.Instance
	// exitedK is when it exited (CLOCK_MONOTONIC ns), once its exit
	// record was read or it was found gone.
	exitedK uint64
	// meta is what the traces of the process carry besides its
	// executable and name: read from /proc once (metaRead) after the
	// first read of its mappings, completed with its runtime at each
	// sync. It is shared with the reporter, so it is replaced, never
	// changed.
	meta     *trace.ProcessMeta
	metaRead bool
	// interpRuntime is the process.runtime.name of interp.
	interpRuntime string
	// interpRetries counts attaches put off because the runtime was not
	// initialised yet (a VM starting).
	interpRetries int
	// givenK is when (CLOCK_MONOTONIC ns) the process's entry or its
	// interpreter was last written to eBPF, 0 before; droppedK says the
	// eBPF side deleted both since, at the exit or exec whose record
	// was read (see noteDropped).
	givenK   uint64
	droppedK bool
}

// dropMargin is how long before the stamp of an exit or exec record the
// eBPF side may have deleted the process's entries (the same program
// deletes them, then stamps the record, in microseconds): entries written
// later than that before the stamp may have been written after the
// delete.
const dropMargin = 10 * time.Millisecond

// noteDropped records that the process exited or exec'd at ktime
// (CLOCK_MONOTONIC ns, its record's stamp), which deleted its entries in
// eBPF: unless they were written again since, they need no delete.
func (proc *process) noteDropped(ktime uint64) {
	if proc.givenK != 0 && proc.givenK+uint64(dropMargin) < ktime {
		proc.droppedK = true
	}
}

// given records that the process's entries were written to eBPF now.
func (proc *process) given() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// Unknown: the next exit or exec deletes them.
		proc.givenK = 0
		return
	}
	proc.givenK = uint64(ts.Nano())
	proc.droppedK = false
}

// procFS reads the parts of /proc the tracer needs, under a configurable
// root so tests can point it at fixtures.
type procFS struct {
	root string
	// meta reads the processes' cgroup and environment; it is owned by
	// the Run goroutine, as procFS is.
	meta *procmeta.Reader
	// maps reads the processes' executable mappings, owned like meta;
	// found holds those of a read until it is complete.
	maps  *procmaps.Reader
	found *[]mapping
	log   *slog.Logger
	// prefix is what path puts before "/PID" (root, clean, or "" for
	// "/"), valid when quick: set by newProcFS.
	prefix string
	quick  bool
}

// newProcFS returns a procFS of the proc file system mounted at root, which
// logs what it could not read of a process to log at debug level.
func newProcFS(root string, log *slog.Logger) procFS {
	p := procFS{root: root, meta: procmeta.NewReader(root), maps: &procmaps.Reader{}, found: new([]mapping), log: log}
	if root == "/" {
		p.quick = true
	} else if root != "" && filepath.Clean(root) == root {
		p.prefix, p.quick = root, true
	}
	return p
}

// path returns the path of pid's directory, or of rest under it, as
// filepath.Join would. Names of one element under a clean root (the
// common case: "maps", "root") are joined without Join's allocations and
// cleaning.
func (p procFS) path(pid uint32, rest ...string) string {
	if !p.quick {
		return p.join(pid, rest)
	}
	n := len(p.prefix) + 1 + 10
	for _, r := range rest {
		if r == "" || r == "." || r == ".." || strings.IndexByte(r, '/') >= 0 {
			return p.join(pid, rest)
		}
		n += 1 + len(r)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(p.prefix)
	b.WriteByte('/')
	var digits [10]byte
	b.Write(strconv.AppendUint(digits[:0], uint64(pid), 10))
	for _, r := range rest {
		b.WriteByte('/')
		b.WriteString(r)
	}
	return b.String()
}

// join is path in full, through filepath.Join.
func (p procFS) join(pid uint32, rest []string) string {
	return filepath.Join(append([]string{p.root, strconv.FormatUint(uint64(pid), 10)}, rest...)...)
}

// readProcess reads a process's executable mappings, executable path and
// name. A process that has exited yields an error wrapping fs.ErrNotExist
// and leaves proc as it was: its records still in the ring buffer are
// named with what was read while it lived.
func (p procFS) readProcess(proc *process) error {
	mappings, err := p.readMaps(p.path(proc.pid, "maps"))
	if err != nil {
		return fmt.Errorf("process %d: %w", proc.pid, err)
	}
	if len(mappings) == 0 {
		// A main thread that called pthread_exit leaves a zombie
		// leader whose maps are empty while the other threads run:
		// theirs are the process's.
		mappings = p.liveThreadMaps(proc.pid)
	}
	if len(mappings) == 0 && len(proc.mappings) > 0 {
		// A zombie: it has exited, its maps are empty.
		return fmt.Errorf("process %d has exited: %w", proc.pid, fs.ErrNotExist)
	}
	proc.mappings = mappings
	slices.SortFunc(proc.mappings, func(a, b mapping) int {
		if a.start < b.start {
			return -1
		}
		if a.start > b.start {
			return 1
		}
		return 0
	})
	// Kernel threads have no executable; readlink fails with ENOENT.
	var buf [unix.PathMax + 16]byte
	if n, err := unix.Readlink(p.path(proc.pid, "exe"), buf[:]); err == nil && n < len(buf) {
		proc.executablePath = procmaps.TrimDeleted(string(buf[:n]))
	}
	if comm, err := readSmall(p.path(proc.pid, "comm"), buf[:]); err == nil {
		proc.name = string(bytes.TrimSpace(comm))
	}
	if !proc.metaRead && proc.executablePath != "" {
		p.readMeta(proc)
	}
	return nil
}

// readSmall reads the start of a small file (a /proc file of one line)
// into buf, in one read, without os.File: not trying it with the network
// poller saves three system calls.
func readSmall(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		return buf[:n], nil
	}
}

// readMeta reads what proc's cgroup and environment say of it, once (and
// again after an exec, which makes proc anew). What cannot be read, as of
// a process that exits meanwhile, is left out of its metadata and logged;
// its samples are reported all the same. Kernel threads have neither.
func (p procFS) readMeta(proc *process) {
	proc.metaRead = true
	found, err := p.meta.Read(proc.pid)
	if err != nil {
		p.log.Debug("read process metadata", "pid", proc.pid, "error", err)
	}
	m := trace.ProcessMeta{ContainerID: found.ID, PodUID: found.PodUID, ServiceName: found.ServiceName}
	if proc.meta != nil {
		m.RuntimeName = proc.meta.RuntimeName
	}
	proc.meta = &m
}

// setRuntime records proc's process.runtime.name.
func (proc *process) setRuntime(name string) {
	switch {
	case proc.meta == nil && name != "":
		proc.meta = &trace.ProcessMeta{RuntimeName: name}
	case proc.meta != nil && proc.meta.RuntimeName != name:
		m := *proc.meta
		m.RuntimeName = name
		proc.meta = &m
	}
}

// keptMappings bounds the buffer in which procFS.readMaps collects a
// process's mappings, kept from one read to the next.
const keptMappings = 256

// readMaps reads the executable mappings of a maps file. They are
// collected in p's buffer, then copied out in one allocation of their
// number: the slice lives as long as the process, and growing it by
// appends cost several.
func (p procFS) readMaps(path string) ([]mapping, error) {
	found := (*p.found)[:0]
	err := p.maps.Executable(path, func(m procmaps.Mapping) {
		mm := mapping{start: m.Start, end: m.End, offset: m.Offset, path: m.Path}
		if m.IsFile() {
			mm.key = fileKey{dev: uint64(m.Major)<<32 | uint64(m.Minor), inode: m.Inode}
		}
		found = append(found, mm)
	})
	var mappings []mapping
	if len(found) > 0 {
		mappings = slices.Clone(found)
	}
	clear(found) // the paths
	if cap(found) > keptMappings {
		found = nil
	}
	*p.found = found[:0]
	return mappings, err
}

// liveThreadMaps returns the executable mappings of pid read through one of
// its threads other than the leader, or none.
func (p procFS) liveThreadMaps(pid uint32) []mapping {
	tasks, err := os.ReadDir(p.path(pid, "task"))
	if err != nil || len(tasks) < 2 {
		return nil
	}
	for _, task := range tasks {
		if task.Name() == strconv.FormatUint(uint64(pid), 10) {
			continue
		}
		if m, err := p.readMaps(p.path(pid, "task", task.Name(), "maps")); err == nil && len(m) > 0 {
			return m
		}
	}
	return nil
}

// openMapped opens the file behind a mapping of pid the way the process
// sees it: through /proc/PID/map_files (the exact mapped file, even when
// deleted or in another mount namespace), else through /proc/PID/root.
func (p procFS) openMapped(pid uint32, m *mapping) (*os.File, error) {
	f, err := os.Open(p.path(pid, "map_files", fmt.Sprintf("%x-%x", m.start, m.end)))
	if err == nil {
		return f, nil
	}
	path := procmaps.TrimDeleted(m.path)
	f, err2 := os.Open(p.path(pid, "root", path))
	if err2 != nil {
		return nil, fmt.Errorf("open %s of process %d: %w", m.path, pid, errors.Join(err, err2))
	}
	return f, nil
}

// isExecutable reports whether m maps proc's executable.
func (proc *process) isExecutable(m *mapping) bool {
	return proc.executablePath != "" && strings.TrimSuffix(m.path, " (deleted)") == proc.executablePath
}

// find returns the mapping containing addr, or nil.
func (proc *process) find(addr uint64) *mapping {
	i, _ := slices.BinarySearchFunc(proc.mappings, addr, func(m mapping, a uint64) int {
		if m.end <= a {
			return -1
		}
		if m.start > a {
			return 1
		}
		return 0
	})
	if i < len(proc.mappings) && proc.mappings[i].start <= addr && addr < proc.mappings[i].end {
		return &proc.mappings[i]
	}
	return nil
}

// findFile returns a mapping of file key, or nil.
func (proc *process) findFile(key fileKey) *mapping {
	for i := range proc.mappings {
		if proc.mappings[i].key == key {
			return &proc.mappings[i]
		}
	}
	return nil
}

// isNotExist reports whether err means the process is gone.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, os.ErrNotExist)
}
