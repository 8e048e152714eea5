package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// recordWait waits for the kernel to wake the ring buffer's reader in Go's
// network poller, not in a system call.
//
// The ring buffer's reader (cilium/ebpf's ringbuf.Reader) waits in its own
// epoll_wait: a goroutine blocked in a system call keeps the runtime's
// sysmon thread polling every few tens of microseconds to a few
// milliseconds, since not every P is idle. Waiting in the network poller
// instead parks the Run goroutine like any goroutine waiting for a socket:
// between reads an idle agent has no thread awake at all, and records are
// then read from the ring buffer without waiting (the reader's deadline is
// in the past).
//
// The map's file descriptor is duplicated, made non-blocking and given to
// the poller, which reports it readable whenever the kernel wakes the
// ring buffer's readers: an urgent record or a filling buffer (see
// submit_record in support/ebpf/maps.h). Records sent without a wake-up
// wait for the deadline, as with the reader's own wait.
//
// Urgent records wake the reader only while it waits: it arms the wait in
// the eBPF map reader_state, mapped here, and the first urgent record
// disarms it and wakes it. Those sent meanwhile are counted there, so
// that the reader reads them before it waits again (see urgentSince).
type recordWait struct {
	f  *os.File
	rc syscall.RawConn
	// mu guards state against close: Run may be in a wait when the
	// tracer is closed.
	mu sync.Mutex
	// state is reader_state's value, mapped: armed, then the count of
	// urgent records; nil once closed.
	state []byte
	// armed and urgent are its two fields.
	armed, urgent *atomic.Uint64
	// interrupted says interrupt was called since the last wait
	// returned; closing that close was.
	interrupted, closing atomic.Bool
}

// errInterrupted is what wait returns after interrupt.
var errInterrupted = errors.New("wait for records interrupted")

// newRecordWait returns a wait on the ring buffer map records, whose
// reader's state is the mmapable array state (reader_state).
func newRecordWait(records, state *ebpf.Map) (*recordWait, error) {
	fd, err := unix.FcntlInt(uintptr(records.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate the ring buffer's descriptor: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ring buffer descriptor: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ring buffer")
	// A file the poller does not hold takes no deadline.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer descriptor not pollable: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer descriptor: %w", err)
	}
	mem, err := unix.Mmap(state.FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("map the reader's state: %w", err)
	}
	w := &recordWait{f: f, rc: rc, state: mem}
	// The kernel maps an array's value page-aligned.
	w.armed = (*atomic.Uint64)(unsafe.Pointer(&mem[0]))
	w.urgent = (*atomic.Uint64)(unsafe.Pointer(&mem[8]))
	return w, nil
}

// wait returns nil once the kernel wakes the ring buffer's readers, or
// when ready (called once the wait is armed, in the poller and for urgent
// records, so that a wake-up from then on is not missed) reports true;
// os.ErrDeadlineExceeded at deadline; errInterrupted once interrupt was
// called (before the wait, too); and an error wrapping os.ErrClosed once
// closed. One goroutine waits at a time. Urgent records sent after wait
// returns wake no one until the next wait is armed.
func (w *recordWait) wait(deadline time.Time, ready func() bool) error {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return err
	}
	// Reset after the deadline is set: an interrupt from now on sets a
	// deadline in the past after this one.
	if w.interrupted.Swap(false) {
		return errInterrupted
	}
	armed := false
	err := w.rc.Read(func(uintptr) bool {
		if armed {
			return true // woken by the poller
		}
		armed = true
		// Armed before ready reads the count of urgent records (a
		// full barrier: see wake_reader in support/ebpf/maps.h).
		w.setArmed(1)
		return ready != nil && ready()
	})
	w.setArmed(0)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded):
		if w.interrupted.Swap(false) {
			return errInterrupted
		}
	case w.closed():
		// The poller's own error for a file closed under the wait.
		return fmt.Errorf("wait for records: %w", os.ErrClosed)
	}
	return err
}

// closed reports whether close was called.
func (w *recordWait) closed() bool {
	return w.closing.Load()
}

// setArmed sets the armed field of the reader's state to v.
func (w *recordWait) setArmed(v uint64) {
	w.mu.Lock()
	if w.state != nil {
		w.armed.Store(v)
	}
	w.mu.Unlock()
}

// urgentSent returns how many urgent records eBPF has sent (0 once
// closed).
func (w *recordWait) urgentSent() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == nil {
		return 0
	}
	return w.urgent.Load()
}

// interrupt makes the wait under way, or the next one, return at once. It
// may be called from any goroutine.
func (w *recordWait) interrupt() {
	w.interrupted.Store(true)
	w.f.SetReadDeadline(time.Unix(0, 1))
}

// close releases the descriptor and the state; a wait under way returns.
func (w *recordWait) close() error {
	w.closing.Store(true)
	err := w.f.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != nil {
		err = errors.Join(err, unix.Munmap(w.state))
		w.state, w.armed, w.urgent = nil, nil, nil
	}
	return err
}

// urgentSince reports whether records were sent that would have woken
// the reader (or did) since the count of urgent records was seen
// (urgentSent): an urgent record, or a quarter of the buffer waiting. It
// is checked once a wait is armed, for the records that came while Run
// was busy: they woke no one.
func (t *Tracer) urgentSince(seen uint64) bool {
	if t.wait.urgentSent() != seen {
		return true
	}
	return t.reader.AvailableBytes() >= t.cfg.RingBufferSize/4
}
