package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// threadSlacks returns the timer slack of each thread of this process.
func threadSlacks(t *testing.T) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", task.Name(), "timerslack_ns"))
		if err != nil {
			continue // exited
		}
		out[task.Name()] = strings.TrimSpace(string(b))
	}
	return out
}

// TestSetTimerSlack sets the slack of this process's threads and checks
// that every thread has it, those started afterwards too, and that bad
// arguments are refused. Setting other threads' slack needs CAP_SYS_NICE
// (root).
func TestSetTimerSlack(t *testing.T) {
	testenv.RequireBPF(t)
	t.Cleanup(func() {
		// 0 restores each thread's default.
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			os.WriteFile(filepath.Join("/proc", task.Name(), "timerslack_ns"), []byte("0"), 0)
		}
	})
	n, err := setTimerSlack("/proc", "/proc/self/task", 3*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no thread set")
	}
	// Threads the runtime starts now, for goroutines locked to theirs
	// while others block, inherit the slack.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-release
		}()
	}
	time.Sleep(50 * time.Millisecond)
	slacks := threadSlacks(t)
	close(release)
	wg.Wait()
	t.Logf("%d threads set; now %d threads", n, len(slacks))
	if len(slacks) <= n {
		t.Logf("no thread was started after the slack was set")
	}
	for tid, s := range slacks {
		if s != "3000000" {
			t.Errorf("thread %s: timer slack %s ns, want 3000000", tid, s)
		}
	}

	if _, err := setTimerSlack("/proc", "/proc/self/task", 0); err == nil {
		t.Error("a slack of 0 was accepted")
	}
	if _, err := setTimerSlack("/proc", filepath.Join(t.TempDir(), "none"), time.Millisecond); err == nil {
		t.Error("a missing task directory was accepted")
	}
}
