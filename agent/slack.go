package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// threadSlack is the timer slack the agent's threads run with once its
// start is done (see setTimerSlack).
//
// The Go runtime's monitor thread (sysmon) sleeps 20 µs at a time while
// any goroutine runs after a system call woke it, for up to a millisecond
// before it backs off: most of the agent's context switches in its steady
// state (about 80 of 100 a second in the benchmark's mix) are its, each
// woken for nothing the agent needs that soon. With a slack of 1 ms the
// kernel may let each of those sleeps run up to 1 ms late, and does when
// nothing else wakes the CPU, so a short burst of the agent's work wakes
// it once or twice rather than tens of times. Every timer of the agent
// (reads of the ring buffer every second, exports, trims) tolerates a
// millisecond; what the monitor does for a program of one P (handing the
// P of a goroutine blocked in a system call to another, preempting one
// that runs over 10 ms) is then up to a millisecond later.
const threadSlack = time.Millisecond

// setTimerSlack sets the timer slack of each thread of this process to d,
// as prctl(PR_SET_TIMERSLACK) sets the caller's: threads created
// afterwards inherit it from the thread that creates them. The threads are
// the entries of taskDir (/proc/self/task), each set through procRoot's
// PID directory of its thread ID, /proc/TID/timerslack_ns (the file is
// not in the task directories). Setting another thread's needs
// CAP_SYS_NICE. It returns how many threads it set; a thread that exits
// meanwhile is not an error.
func setTimerSlack(procRoot, taskDir string, d time.Duration) (int, error) {
	if d <= 0 {
		return 0, fmt.Errorf("timer slack %v: must be positive", d)
	}
	tasks, err := os.ReadDir(taskDir)
	if err != nil {
		return 0, fmt.Errorf("list threads: %w", err)
	}
	value := []byte(strconv.FormatInt(d.Nanoseconds(), 10))
	n := 0
	for _, t := range tasks {
		err := os.WriteFile(filepath.Join(procRoot, t.Name(), "timerslack_ns"), value, 0)
		switch {
		case err == nil:
			n++
		case errors.Is(err, os.ErrNotExist):
			// The thread exited.
		default:
			return n, fmt.Errorf("set the timer slack of thread %s: %w", t.Name(), err)
		}
	}
	return n, nil
}
