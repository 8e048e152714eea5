package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

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
type recordWait struct {
	f  *os.File
	rc syscall.RawConn
	// interrupted says interrupt was called since the last wait
	// returned.
	interrupted atomic.Bool
	// monoBase is CLOCK_MONOTONIC at timeBase (see now).
	monoBase uint64
	timeBase time.Time
}

// errInterrupted is what wait returns after interrupt.
var errInterrupted = errors.New("wait for records interrupted")

// newRecordWait returns a wait on the ring buffer map records.
func newRecordWait(records *ebpf.Map) (*recordWait, error) {
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
	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		f.Close()
		return nil, fmt.Errorf("read the monotonic clock: %w", err)
	}
	return &recordWait{f: f, rc: rc, monoBase: uint64(mono.Nano()), timeBase: time.Now()}, nil
}

// now returns CLOCK_MONOTONIC in ns, the eBPF programs' clock, from Go's
// monotonic clock (the same clock, read without a system call).
func (w *recordWait) now() uint64 {
	return w.monoBase + uint64(time.Since(w.timeBase))
}

// wait returns nil once the kernel wakes the ring buffer's readers, or
// when ready (called once the wait is armed, so that a wake-up from then
// on is not missed) reports true; os.ErrDeadlineExceeded at deadline;
// errInterrupted once interrupt was called (before the wait, too); and an
// error wrapping os.ErrClosed once closed. One goroutine waits at a time.
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
		return ready != nil && ready()
	})
	if errors.Is(err, os.ErrDeadlineExceeded) && w.interrupted.Swap(false) {
		return errInterrupted
	}
	return err
}

// interrupt makes the wait under way, or the next one, return at once. It
// may be called from any goroutine.
func (w *recordWait) interrupt() {
	w.interrupted.Store(true)
	w.f.SetReadDeadline(time.Unix(0, 1))
}

// close releases the descriptor; a wait under way returns.
func (w *recordWait) close() error {
	return w.f.Close()
}

// wokenSince reports whether the kernel woke the ring buffer's readers,
// or would have, since ktime (CLOCK_MONOTONIC ns): an urgent record sent
// since (eBPF notes each CPU's last such wake-up in last_wakeup) or a
// quarter of the buffer waiting. It is checked once a wait is armed, for
// the wake-ups that came while Run was busy: the poller reports those to
// no one.
func (t *Tracer) wokenSince(ktime uint64) bool {
	switch avail := t.reader.AvailableBytes(); {
	case avail == 0:
		// Nothing to read (what woke the reader was read): no need
		// to ask the kernel.
		return false
	case avail >= t.cfg.RingBufferSize/4:
		return true
	}
	if err := t.objs.LastWakeup.Lookup(uint32(0), &t.lastWakeups); err != nil {
		t.log.Debug("read last wake-ups", "error", err)
		return false
	}
	for _, at := range t.lastWakeups {
		if at >= ktime {
			return true
		}
	}
	return false
}
