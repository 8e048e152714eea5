package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// mixOptions configure the workload mix.
type mixOptions struct {
	// javaHome holds the JDK whose javac compiles the Java burner and whose
	// java runs it.
	javaHome string
	// execsPerSecond is the rate of the /bin/true loop while churning.
	execsPerSecond int
	// buildsPerSecond is the most compiler runs the build loop starts per
	// second while churning; a compiler that takes longer delays the next.
	buildsPerSecond float64
}

// mix is the benchmark's fixed workload: long-running CPU burners (C without
// frame pointers, Go, Python, a JVM, node; at nice 10) and, while churning, a loop of
// short-lived /bin/true processes and a build loop of short-lived compiler
// processes. Every process it starts runs in a process group of its own,
// killed as a whole when the mix stops, and dies with the benchmark
// (SIGKILL on parent death) if the benchmark itself is killed.
type mix struct {
	opts    mixOptions
	dir     string
	burners []*exec.Cmd
	// buildCmds are the build loop's commands, run one after another in
	// turn.
	buildCmds [][]string

	mu          sync.Mutex
	stopChurnFn func()
	churnStart  time.Time
	churnTime   time.Duration

	execs, builds atomic.Int64
}

// groupAttr makes a child the leader of a process group of its own (so the
// whole group, e.g. gcc with its cc1 and as, can be killed at once) and kills
// it when the benchmark dies.
func groupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills c's process group, reaps c, and waits (up to 5 s) until no
// process of the group is left: the other members (e.g. the helpers a pyenv
// shim forks before it execs Python) die asynchronously and are reaped by
// their new parent.
func killGroup(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	c.Wait()
	awaitGroupGone(c.Process.Pid)
}

// awaitGroupGone kills what is left of process group pgid until none of it
// is left, for at most 5 s.
func awaitGroupGone(pgid int) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if syscall.Kill(-pgid, syscall.SIGKILL) == syscall.ESRCH {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "agentbench: process group %d still has processes 5 s after SIGKILL\n", pgid)
}

const pythonBurner = `
def leaf(n):
    s = 0
    for i in range(n):
        s += i * i
    return s
def middle():
    return leaf(100000)
def outer():
    while True:
        middle()
outer()
`

// javaBurner burns CPU in three nested methods and allocates a little on
// every call, so the JVM's JIT and garbage collector run as in a service.
const javaBurner = `public class Burner {
    static long leaf(int n) {
        long[] scratch = new long[64];
        long s = 0;
        for (int i = 0; i < n; i++) {
            s += (long) i * i ^ (s >>> 3);
            scratch[i & 63] = s;
        }
        return s + scratch[7];
    }
    static long middle() {
        return leaf(200000);
    }
    public static void main(String[] args) {
        long total = 0;
        while (true) {
            total += middle();
            if (total == 42) {
                System.out.println(total);
            }
        }
    }
}
`

const nodeBurner = `
function leaf(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s = (s + i * i) % 1000003;
  return s;
}
function middle() { return leaf(100000); }
function outer() { let t = 0; for (;;) t += middle(); }
outer();
`

// buildUnit is the C file the build loop compiles: a few functions, so the
// compiler does real work for a few tens of milliseconds.
const buildUnit = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item { char name[32]; int weight; struct item *next; };

static int cmp(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	return x->weight - y->weight ?: strcmp(x->name, y->name);
}

int sort_items(struct item *items, int n)
{
	qsort(items, n, sizeof *items, cmp);
	int total = 0;
	for (int i = 0; i < n; i++) {
		total += items[i].weight;
		if (i + 1 < n)
			items[i].next = &items[i + 1];
	}
	return total;
}

void print_items(const struct item *it)
{
	for (; it; it = it->next)
		printf("%s %d\n", it->name, it->weight);
}
`

// buildPkg is the Go package `go vet` checks in the build loop.
const buildPkg = `package unit

import (
	"fmt"
	"sort"
	"strings"
)

// Item is a named weight.
type Item struct {
	Name   string
	Weight int
}

// Sorted returns the items by weight, then name, and their total weight.
func Sorted(items []Item) ([]Item, int) {
	out := append([]Item(nil), items...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Weight != out[j].Weight {
			return out[i].Weight < out[j].Weight
		}
		return strings.Compare(out[i].Name, out[j].Name) < 0
	})
	total := 0
	for _, it := range out {
		total += it.Weight
	}
	return out, total
}

// String formats an item.
func (i Item) String() string { return fmt.Sprintf("%s %d", i.Name, i.Weight) }
`

// startMix builds the burners in dir and starts them; churn starts
// separately (startChurn). On error nothing it started is left running.
func startMix(dir string, o mixOptions) (*mix, error) {
	m := &mix{opts: o, dir: dir}
	javac := filepath.Join(o.javaHome, "bin", "javac")
	java := filepath.Join(o.javaHome, "bin", "java")
	for _, p := range []string{javac, java} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("the JVM burner needs a JDK (Debian: openjdk-17-jdk-headless): %w", err)
		}
	}
	node, err := lookPath("node", "nodejs")
	if err != nil {
		return nil, fmt.Errorf("the node burner needs node (Debian: nodejs): %w", err)
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		return nil, err
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return nil, err
	}

	cBin := filepath.Join(dir, "burner")
	if err := sh("gcc", "-O2", "-fomit-frame-pointer", "-o", cBin, "e2e/testdata/workload.c"); err != nil {
		return nil, err
	}
	goBin := filepath.Join(dir, "goburner")
	if err := sh("go", "build", "-o", goBin, "./e2e/testdata/goworkload"); err != nil {
		return nil, err
	}
	javaDir := filepath.Join(dir, "java")
	if err := writeFiles(javaDir, map[string]string{"Burner.java": javaBurner}); err != nil {
		return nil, err
	}
	// -XX:-UsePerfData: no /tmp/hsperfdata file left behind by a killed JVM.
	if err := sh(javac, "-J-XX:-UsePerfData", "-d", javaDir, filepath.Join(javaDir, "Burner.java")); err != nil {
		return nil, err
	}
	nodeFile := filepath.Join(dir, "burner.js")
	buildDir := filepath.Join(dir, "build")
	if err := writeFiles(dir, map[string]string{"burner.js": nodeBurner}); err != nil {
		return nil, err
	}
	goPkg := filepath.Join(buildDir, "gopkg")
	if err := writeFiles(buildDir, map[string]string{"unit.c": buildUnit}); err != nil {
		return nil, err
	}
	if err := writeFiles(goPkg, map[string]string{
		"go.mod":  "module example.com/unit\n\ngo 1.21\n",
		"unit.go": buildPkg,
	}); err != nil {
		return nil, err
	}
	// Three C compiles (gcc, cc1, as: three short-lived processes each) to
	// one go vet (the go command and the vet tool: large Go binaries).
	obj := filepath.Join(buildDir, "unit.o")
	cc := []string{"gcc", "-O2", "-c", "-o", obj, filepath.Join(buildDir, "unit.c")}
	m.buildCmds = [][]string{cc, cc, cc, {goCmd, "vet", "-C", goPkg, "."}}

	for _, args := range [][]string{
		{cBin, "chain"},
		{goBin},
		{python, "-c", pythonBurner},
		{java, "-XX:-UsePerfData", "-XX:+UseSerialGC", "-Xmx64m", "-cp", javaDir, "Burner"},
		{node, nodeFile},
	} {
		// Niced (before exec, so every thread inherits it): the burners
		// fill the CPUs but do not slow the churn loops down, whose rates
		// then hold from run to run.
		c := exec.Command("nice", append([]string{"-n", "10"}, args...)...)
		c.SysProcAttr = groupAttr()
		if err := c.Start(); err != nil {
			m.stop()
			return nil, fmt.Errorf("start %s: %w", args[0], err)
		}
		m.burners = append(m.burners, c)
	}
	return m, nil
}

// startChurn starts the /bin/true loop and the build loop; they run until
// stopChurn or stop.
func (m *mix) startChurn(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopChurnFn != nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		m.execLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		m.buildLoop(ctx)
	}()
	m.churnStart = time.Now()
	m.stopChurnFn = func() { cancel(); wg.Wait() }
}

// stopChurn stops the churn loops and waits for their last processes.
func (m *mix) stopChurn() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopChurnFn == nil {
		return
	}
	m.stopChurnFn()
	m.stopChurnFn = nil
	m.churnTime += time.Since(m.churnStart)
}

// stop stops the churn and kills every burner's process group.
func (m *mix) stop() {
	m.stopChurn()
	for _, c := range m.burners {
		killGroup(c)
	}
	m.burners = nil
}

// rates returns the /bin/true processes and the compiler runs started per
// second of churn.
func (m *mix) rates() (execs, builds float64) {
	m.mu.Lock()
	d := m.churnTime
	if m.stopChurnFn != nil {
		d += time.Since(m.churnStart)
	}
	m.mu.Unlock()
	if d <= 0 {
		return 0, 0
	}
	return float64(m.execs.Load()) / d.Seconds(), float64(m.builds.Load()) / d.Seconds()
}

func (m *mix) execLoop(ctx context.Context) {
	if m.opts.execsPerSecond <= 0 {
		return
	}
	// Processes are reaped concurrently, and each tick starts as many as
	// the rate asks for since the loop began (a busy machine delays ticks),
	// so the rate holds; at most maxInFlight run at once.
	const maxInFlight = 64
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(time.Second / time.Duration(m.opts.execsPerSecond))
	defer t.Stop()
	begin, started := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := int(time.Since(begin).Seconds() * float64(m.opts.execsPerSecond))
	burst:
		for ; started < due; started++ {
			select {
			case slots <- struct{}{}:
			default:
				started = due // maxInFlight still running: give up the backlog
				break burst
			}
			c := exec.Command("/bin/true")
			if c.Start() != nil {
				<-slots
				continue
			}
			m.execs.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Wait()
				<-slots
			}()
		}
	}
}

func (m *mix) buildLoop(ctx context.Context) {
	if m.opts.buildsPerSecond <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / m.opts.buildsPerSecond))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		args := m.buildCmds[i%len(m.buildCmds)]
		c := exec.CommandContext(ctx, args[0], args[1:]...)
		c.SysProcAttr = groupAttr()
		c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
		out, err := c.CombinedOutput()
		if c.Process != nil && ctx.Err() != nil {
			awaitGroupGone(c.Process.Pid) // killed: its cc1 or vet may be dying still
		}
		switch {
		case err == nil:
			m.builds.Add(1)
		case ctx.Err() == nil:
			// A failing compiler is a broken benchmark, not a figure: say
			// so and keep the loop's pace.
			fmt.Fprintf(os.Stderr, "agentbench: build loop: %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// lookPath returns the first of names found on PATH.
func lookPath(names ...string) (string, error) {
	var errs []error
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err == nil {
			return p, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// writeFiles creates dir and writes files into it.
func writeFiles(dir string, files map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}
