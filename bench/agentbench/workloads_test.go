package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procs returns the pid → (parent, process group) of every process.
func procs(t *testing.T) map[int][2]int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int][2]int)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		out[pid] = [2]int{ppid, pgrp}
	}
	return out
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// TestMixStops starts the whole mix with its churn, then stops it: every
// burner, every compiler and every short-lived process is gone, whole
// process groups included (gcc's cc1 and as, the JVM's threads).
func TestMixStops(t *testing.T) {
	t.Chdir("../..") // the mix builds e2e/testdata from the repository root
	m, err := startMix(t.TempDir(), mixOptions{
		javaHome:        "/usr/lib/jvm/java-17-openjdk-amd64",
		execsPerSecond:  20,
		buildsPerSecond: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()
	m.startChurn(context.Background())
	// The churn runs: short-lived processes and at least one compiler run
	// (slow on a loaded machine).
	for deadline := time.Now().Add(30 * time.Second); m.execs.Load() < 10 || m.builds.Load() < 1; {
		if time.Now().After(deadline) {
			t.Fatalf("churn: %d execs, %d compiler runs in 30 s", m.execs.Load(), m.builds.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}

	groups := make(map[int]bool)
	for _, c := range m.burners {
		groups[c.Process.Pid] = true
	}
	if len(groups) != 5 {
		t.Fatalf("%d burners, want 5", len(groups))
	}
	running := 0
	for pid, pp := range procs(t) {
		if groups[pp[1]] {
			running++
			// Every burner leads its own group.
			if pp[1] == pid && pp[0] != os.Getpid() {
				t.Errorf("group leader %d is not our child", pid)
			}
		}
	}
	if running < 5 {
		t.Fatalf("%d processes in the burners' groups, want ≥ 5", running)
	}
	m.stop()
	for pid, pp := range procs(t) {
		if groups[pp[1]] {
			t.Errorf("process %d (%s, parent %d) of a burner's group %d still runs", pid, cmdline(pid), pp[0], pp[1])
		}
		if pp[0] == os.Getpid() {
			t.Errorf("child %d (%s) still runs", pid, cmdline(pid))
		}
	}
}
