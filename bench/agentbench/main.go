// Command agentbench runs the real stackline agent as root against an
// in-process OTLP receiver under a fixed workload mix, samples the agent's
// memory and CPU from /proc every second, writes the figures to a JSON file
// and fails when a figure is over its budget.
//
// Workload mix: a C CPU burner built without frame pointers, a Go burner, a
// Python burner, and a loop that starts short-lived processes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/bench"
	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

type options struct {
	duration   time.Duration
	rate       int
	shortLived int
	out        string
	budgets    string
	agentArgs  string
	// heapProfile, when set, receives the agent's heap profile.
	heapProfile string
	// cpuProfile, when set, receives the agent's CPU profile.
	cpuProfile string
}

func run() error {
	var o options
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long the agent runs (at least 60s for a result to commit)")
	flag.IntVar(&o.rate, "samples-per-second", 19, "the agent's sampling rate")
	flag.IntVar(&o.shortLived, "short-lived", 100, "short-lived processes started per second")
	flag.StringVar(&o.out, "out", "bench/results.json", "where to write the results")
	flag.StringVar(&o.budgets, "budgets", "bench/budgets.json", "budgets to check; empty checks none")
	flag.StringVar(&o.agentArgs, "agent-args", "", "extra flags for the agent, space-separated")
	flag.StringVar(&o.heapProfile, "heap-profile", "", "save the agent's Go heap profile at the end of the run to this file")
	flag.StringVar(&o.cpuProfile, "cpu-profile", "", "save the agent's Go CPU profile, taken from 5 s after start to the end of the run, to this file")
	flag.Parse()
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root to load eBPF programs")
	}
	var budgets bench.Budgets
	if o.budgets != "" {
		var err error
		if budgets, err = bench.LoadBudgets(o.budgets); err != nil {
			return err
		}
	}

	dir, err := os.MkdirTemp("", "agentbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	agentBin := filepath.Join(dir, "stackline")
	if err := sh("go", "build", "-o", agentBin, "./cmd/stackline"); err != nil {
		return err
	}
	stopWorkloads, err := startWorkloads(ctx, dir, o.shortLived)
	if err != nil {
		return err
	}
	defer stopWorkloads()

	rcv, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer rcv.Stop()
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}

	args := append([]string{
		"--collection-agent", rcv.Addr(), "--disable-tls",
		"--samples-per-second", strconv.Itoa(o.rate),
		"--metrics-address", metricsAddr, "--log-level", "warn"},
		strings.Fields(o.agentArgs)...)
	agent := exec.Command(agentBin, args...)
	agent.Stdout, agent.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := agent.Start(); err != nil {
		return err
	}
	defer agent.Process.Kill()
	pid := agent.Process.Pid

	cpuProfileDone := make(chan error, 1)
	if o.cpuProfile != "" {
		go func() {
			time.Sleep(5 * time.Second)
			secs := int((o.duration - 6*time.Second).Seconds())
			cpuProfileDone <- saveProfile(metricsAddr, "profile?seconds="+strconv.Itoa(max(secs, 1)), o.cpuProfile)
		}()
	}

	var rss []float64
	tick := time.NewTicker(time.Second)
	for time.Since(start) < o.duration {
		<-tick.C
		st, err := readStatus(pid)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		rss = append(rss, st["VmRSS"])
	}
	tick.Stop()
	st, err := readStatus(pid)
	if err != nil {
		return err
	}
	cpu, err := cpuSeconds(pid)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	metrics, err := scrape(metricsAddr)
	if err != nil {
		return err
	}
	if o.heapProfile != "" {
		if err := saveProfile(metricsAddr, "heap", o.heapProfile); err != nil {
			return err
		}
	}
	if o.cpuProfile != "" {
		if err := <-cpuProfileDone; err != nil {
			return err
		}
	}
	agent.Process.Signal(syscall.SIGTERM)
	if err := agent.Wait(); err != nil {
		return fmt.Errorf("agent exited: %w", err)
	}

	reqs := rcv.Requests()
	var samples, raw, wire int
	for i, req := range reqs {
		if err := otlpcheck.Validate(req); err != nil {
			return fmt.Errorf("request %d is not self-contained: %w", i, err)
		}
		raw += proto.Size(req)
		for _, rp := range req.ResourceProfiles {
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					for _, s := range p.Samples {
						samples += int(otlpcheck.SampleCount(s))
					}
				}
			}
		}
	}
	for _, n := range rcv.WireBytes() {
		wire += n
	}
	if samples == 0 {
		return fmt.Errorf("no samples received")
	}
	half := slices.Clone(rss[len(rss)/2:])
	slices.Sort(half)
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	r := bench.Results{
		SteadyRSSMB:        half[len(half)/2] / 1024,
		PeakRSSMB:          st["VmHWM"] / 1024,
		RSSAnonMB:          st["RssAnon"] / 1024,
		RSSFileMB:          st["RssFile"] / 1024,
		CPUPercent:         100 * cpu / elapsed.Seconds(),
		SamplesPerSecond:   float64(samples) / elapsed.Seconds(),
		WireBytesPerSample: float64(wire) / float64(samples),
		BytesPerSample:     float64(raw) / float64(samples),
		FirstSampleSeconds: metrics["stackline_first_sample_seconds"],
		GoHeapInUseMB:      metrics["go_memstats_heap_inuse_bytes"] / (1 << 20),
		BPFMapMB:           metrics["stackline_bpf_map_bytes"] / (1 << 20),
		LostTraces:         metrics["stackline_lost_traces_total"],
		DurationSeconds:    elapsed.Seconds(),
		ConfiguredRate:     o.rate,
		CPUs:               runtime.NumCPU(),
		ShortLivedPerSec:   float64(o.shortLived),
		Exports:            len(reqs),
		Date:               time.Now().UTC().Format(time.RFC3339),
		Kernel:             strings.TrimSpace(string(kernel)),
		GoVersion:          runtime.Version(),
		Commit:             strings.TrimSpace(string(commit)),
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Print(bench.Table(r, budgets))
	if v := bench.Compare(r, budgets); len(v) > 0 {
		for _, x := range v {
			fmt.Fprintln(os.Stderr, "OVER BUDGET:", x)
		}
		return fmt.Errorf("%d figure(s) over budget", len(v))
	}
	return nil
}

func sh(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v: %w\n%s", name, args, err, out)
	}
	return nil
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

// startWorkloads starts the burners and the short-lived process loop; the
// returned function stops them.
func startWorkloads(ctx context.Context, dir string, perSecond int) (func(), error) {
	cBin := filepath.Join(dir, "burner")
	if err := sh("gcc", "-O2", "-fomit-frame-pointer", "-o", cBin, "e2e/testdata/workload.c"); err != nil {
		return nil, err
	}
	goBin := filepath.Join(dir, "goburner")
	if err := sh("go", "build", "-o", goBin, "./e2e/testdata/goworkload"); err != nil {
		return nil, err
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	for _, args := range [][]string{{cBin, "chain"}, {goBin}, {python, "-c", pythonBurner}} {
		c := exec.Command(args[0], args[1:]...)
		if err := c.Start(); err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, c)
	}
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if perSecond <= 0 {
			return
		}
		t := time.NewTicker(time.Second / time.Duration(perSecond))
		defer t.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-t.C:
				exec.Command("/bin/true").Run()
			}
		}
	}()
	return func() { cancel(); <-done; stop() }, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// readStatus returns the kB fields of /proc/PID/status.
func readStatus(pid int) (map[string]float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 2 && fields[1] == "kB" {
			n, _ := strconv.ParseFloat(fields[0], 64)
			out[k] = n
		}
	}
	return out, sc.Err()
}

// cpuSeconds returns the user+system CPU time of pid.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100, nil // USER_HZ
}

// scrape reads the agent's Prometheus metrics (text format, no labels used).
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// saveProfile saves the agent's /debug/pprof/<which> to path.
func saveProfile(addr, which, path string) error {
	resp, err := http.Get("http://" + addr + "/debug/pprof/" + which)
	if err != nil {
		return fmt.Errorf("%s profile: %w", which, err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("%s profile: %w", which, err)
	}
	return f.Close()
}
