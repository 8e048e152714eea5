package testenv

import (
	"syscall"
	"testing"
	"time"
)

// ProcessCPU returns the user and system CPU time the test process has
// used. Benchmarks report it per operation: on a loaded machine it is a
// steadier measure of the work than the elapsed time, and it includes the
// garbage collector's work that allocations cause.
func ProcessCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
