package tracer

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/kallsyms"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// TestRecordWait checks the wait for records in Go's poller with the real
// programs: it returns at its deadline when nothing wakes the reader, at
// once when interrupted (before or during the wait), when the kernel wakes
// the reader for an urgent record (a process the tracer does not know
// asking for its mappings), and when an urgent record came before the
// wait was armed (urgentSince); that urgent records sent while it is not
// waiting wake no one but are seen by the next wait; and that closing it
// ends a wait.
func TestRecordWait(t *testing.T) {
	testenv.RequireBPF(t)
	kern, err := kallsyms.Load(kallsyms.Options{})
	if err != nil {
		t.Fatal(err)
	}
	syms, err := symbolizer.New(symbolizer.Options{CacheSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{SamplesPerSecond: 97, MaxStackDepth: 64, RingBufferSize: 1 << 20, FileCacheSize: 16,
		Reporter: &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}},
		Kernel:   kern, Symbolizer: syms})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var rec ringbuf.Record
	empty := func() {
		t.Helper()
		for tr.reader.AvailableBytes() > 0 {
			if err := tr.reader.ReadInto(&rec); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				t.Fatal(err)
			}
		}
	}

	// Quiet: no sampling, nothing urgent.
	tr.stopSampling()
	time.Sleep(10 * time.Millisecond)
	empty()
	start := time.Now()
	if err := tr.wait.wait(start.Add(50*time.Millisecond), nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("quiet wait: %v, want the deadline", err)
	}
	if d := time.Since(start); d < 45*time.Millisecond {
		t.Fatalf("quiet wait returned after %v, before its deadline", d)
	}
	tr.wait.interrupt()
	start = time.Now()
	if err := tr.wait.wait(start.Add(10*time.Second), nil); !errors.Is(err, errInterrupted) {
		t.Fatalf("wait after interrupt: %v", err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		tr.wait.interrupt()
	}()
	if err := tr.wait.wait(start.Add(10*time.Second), nil); !errors.Is(err, errInterrupted) {
		t.Fatalf("interrupted wait: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("interrupted wait returned after %v", d)
	}
	if err := tr.wait.wait(time.Now().Add(20*time.Millisecond), func() bool { return true }); err != nil {
		t.Fatalf("wait ready at once: %v", err)
	}

	// A busy process the tracer has not read asks for its mappings: an
	// urgent record, which wakes the reader.
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	seen := tr.wait.urgentSent()
	for _, fd := range tr.events {
		if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	if err := tr.wait.wait(start.Add(10*time.Second), nil); err != nil {
		t.Fatalf("wait with a process asking for its mappings: %v, want a wake-up", err)
	}
	t.Logf("woken after %v", time.Since(start))
	if tr.reader.AvailableBytes() == 0 {
		t.Fatal("woken with no record in the ring buffer")
	}
	// A wait armed after the wake-up sees it was not read.
	if !tr.urgentSince(seen) {
		t.Fatal("urgentSince: the urgent record is not seen")
	}
	if err := tr.wait.wait(time.Now().Add(10*time.Second), func() bool { return tr.urgentSince(seen) }); err != nil {
		t.Fatalf("wait armed after a wake-up: %v", err)
	}

	// Not waiting: the process asks again (every SYNC_INTERVAL_NS, the
	// tracer not reading it), and its urgent records wake no one but are
	// counted, so that the next wait does not sleep.
	empty()
	seen = tr.wait.urgentSent()
	time.Sleep(300 * time.Millisecond)
	if tr.wait.urgentSent() == seen {
		t.Fatal("no urgent record counted in 300 ms")
	}
	if n := countWakeups(t, tr, &rec); n != 0 {
		t.Fatalf("%d wake-up records sent while the reader was not waiting", n)
	}
	start = time.Now()
	if err := tr.wait.wait(start.Add(10*time.Second), func() bool { return tr.urgentSince(seen) }); err != nil || time.Since(start) > time.Second {
		t.Fatalf("wait after urgent records came unread: %v after %v, want to return at once", err, time.Since(start))
	}
	// Waiting: the next urgent record wakes the reader, with one wake-up
	// record after it.
	seen = tr.wait.urgentSent()
	start = time.Now()
	if err := tr.wait.wait(start.Add(10*time.Second), func() bool { return tr.urgentSince(seen) }); err != nil {
		t.Fatalf("wait for the next urgent record: %v", err)
	}
	t.Logf("woken again after %v", time.Since(start))
	if n := countWakeups(t, tr, &rec); n == 0 {
		t.Fatal("woken without a wake-up record")
	}
	if tr.wait.armed.Load() != 0 {
		t.Fatal("the reader is armed after its wait")
	}

	// Closed during a wait: it returns, and the reader's state is let go.
	tr.stopSampling()
	time.Sleep(10 * time.Millisecond)
	empty()
	closed := make(chan error, 1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		closed <- tr.wait.close()
	}()
	if err := tr.wait.wait(time.Now().Add(10*time.Second), func() bool { return false }); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("wait closed: %v, want os.ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if n := tr.wait.urgentSent(); n != 0 {
		t.Fatalf("urgentSent after close: %d", n)
	}
}

// countWakeups reads the records in tr's ring buffer and returns how many
// only woke the reader.
func countWakeups(t *testing.T, tr *Tracer, rec *ringbuf.Record) int {
	t.Helper()
	n := 0
	for tr.reader.AvailableBytes() > 0 {
		if err := tr.reader.ReadInto(rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			t.Fatal(err)
		}
		if len(rec.RawSample) >= 4 && binary.LittleEndian.Uint32(rec.RawSample) == recordWakeup {
			n++
		}
	}
	return n
}
