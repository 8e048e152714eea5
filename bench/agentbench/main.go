// Command agentbench runs the real stackline agent as root against an
// in-process OTLP receiver under a fixed workload mix, samples the agent's
// memory and CPU from /proc every second, writes the figures to a JSON file
// and fails when a figure is over its budget.
//
// Workload mix (workloads.go): CPU burners in C without frame pointers, Go,
// Python, Java (a JVM) and node, a loop that starts short-lived /bin/true
// processes, and a build loop of short-lived compilers (gcc -c, go vet).
//
// With -soak it runs a soak instead: the burners alone first (the baseline),
// then the churn loops, then the burners alone again; it reads the agent's
// gauges every few seconds and checks that RSS stays flat after warm-up and
// that tables, maps and caches return to their baseline once the churn
// stops, and writes a JSON report and a Markdown one beside it.
//
// With -page the agent also serves its live flame graph (--http), and a
// client follows it as an open page does: it holds the update stream open
// and fetches the last 15 minutes' graph at each interval; what it
// fetched and what the page's store holds are printed at the end.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/bench"
	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
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
	builds     float64
	javaHome   string
	out        string
	budgets    string
	agentArgs  string
	// offCPU runs the agent with --off-cpu (its default threshold and
	// fraction unless agentArgs says otherwise).
	offCPU bool
	// heapProfile, when set, receives the agent's heap profile.
	heapProfile string
	// cpuProfile, when set, receives the agent's CPU profile.
	cpuProfile string
	// soak runs the soak instead of the benchmark; soakInterval is how
	// often it reads the agent's gauges.
	soak         bool
	soakInterval time.Duration
	// page runs the agent with --http and follows the flame graph page
	// as an open page does.
	page bool
	// requests, when set, is a directory each export received is
	// written to, as a binary ExportProfilesServiceRequest.
	requests string
}

// startupWindow is when the startup figures are read.
const startupWindow = 10 * time.Second

const mixNames = "c(no frame pointers),go,python,jvm,node,exec-loop,build-loop(gcc -c,go vet)"

func run() error {
	var o options
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long the agent runs (at least 60s for a result to commit)")
	flag.IntVar(&o.rate, "samples-per-second", 19, "the agent's sampling rate")
	flag.IntVar(&o.shortLived, "short-lived", 100, "short-lived /bin/true processes started per second")
	flag.Float64Var(&o.builds, "builds-per-second", 2, "compiler runs the build loop starts per second at most (one at a time)")
	flag.StringVar(&o.javaHome, "java-home", "/usr/lib/jvm/java-17-openjdk-amd64", "JDK that compiles and runs the Java burner")
	flag.StringVar(&o.out, "out", "bench/results.json", "where to write the results (with -soak, the report; its Markdown goes beside it)")
	flag.StringVar(&o.budgets, "budgets", "bench/budgets.json", "budgets to check; empty checks none")
	flag.StringVar(&o.agentArgs, "agent-args", "", "extra flags for the agent, space-separated")
	flag.BoolVar(&o.offCPU, "off-cpu", false, "run the agent with --off-cpu (off-CPU profiling) too")
	flag.StringVar(&o.heapProfile, "heap-profile", "", "save the agent's Go heap profile at the end of the run to this file")
	flag.StringVar(&o.cpuProfile, "cpu-profile", "", "save the agent's Go CPU profile, taken from 5 s after start to the end of the run, to this file")
	flag.BoolVar(&o.soak, "soak", false, "run the soak (baseline, churn, quiet) and check RSS, tables, maps and caches instead of budgets")
	flag.DurationVar(&o.soakInterval, "soak-interval", 10*time.Second, "with -soak, how often the agent's gauges are read")
	flag.BoolVar(&o.page, "page", false, "run the agent with --http and follow its flame graph page as an open page does (the update stream, the last 15 minutes' graph at each interval)")
	flag.StringVar(&o.requests, "requests", "", "write each export received to this directory (req-NNN.pb, binary protobuf), e.g. to replay it")
	flag.Parse()
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root to load eBPF programs")
	}
	var budgets bench.Budgets
	if o.budgets != "" && !o.soak {
		var err error
		if budgets, err = bench.LoadBudgets(o.budgets); err != nil {
			return err
		}
	}
	// Interrupted, the run still stops everything it started (the
	// deferred calls below).
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	dir, err := os.MkdirTemp("", "agentbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	agentBin := filepath.Join(dir, "stackline")
	if err := sh("go", "build", "-o", agentBin, "./cmd/stackline"); err != nil {
		return err
	}
	m, err := startMix(dir, mixOptions{javaHome: o.javaHome, execsPerSecond: o.shortLived, buildsPerSecond: o.builds})
	if err != nil {
		return err
	}
	defer m.stop()
	var plan []bench.SoakPhase
	if o.soak {
		plan = bench.SoakPlan(o.duration)
	} else {
		m.startChurn(ctx)
	}

	rcv, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer rcv.Stop()
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}

	if o.offCPU {
		o.agentArgs = strings.TrimSpace("--off-cpu " + o.agentArgs)
	}
	args := append([]string{
		"--collection-agent", rcv.Addr(), "--disable-tls",
		"--samples-per-second", strconv.Itoa(o.rate),
		"--metrics-address", metricsAddr, "--log-level", "warn"},
		strings.Fields(o.agentArgs)...)
	var page *pageClient
	if o.page {
		pageAddr, err := freeAddr()
		if err != nil {
			return err
		}
		args = append(args, "--http", pageAddr)
		page = followPage(pageAddr)
		defer page.stop()
	}
	// The eBPF programs' run time, which runs in the context of the
	// sampled and switching tasks, not the agent's: counted by the kernel
	// while this is held.
	if st, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench: eBPF run time not measured:", err)
	} else {
		defer st.Close()
	}
	ctxt0, err := contextSwitches()
	if err != nil {
		return err
	}
	agent := exec.Command(agentBin, args...)
	agent.Stdout, agent.Stderr = os.Stderr, os.Stderr
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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

	var (
		rss          []float64 // VmRSS every second, kB
		rssFile      []float64 // RssFile every second, kB
		startupHWM   float64   // kB
		startupAlloc float64   // bytes
		startupRead  bool
		// At startupAt: the agent's CPU seconds, GC cycles and its
		// threads' voluntary context switches.
		startupAt      time.Duration
		startupCPU     float64
		startupGC      float64
		startupWakeups uint64
		samples        []bench.SoakSample
		baseline       map[string]float64
		phase          string
		lastGauges     time.Time
	)
	readStartup := func() error {
		st, err := readStatus(pid)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		mt, err := scrape(metricsAddr)
		if err != nil {
			return err
		}
		startupHWM, startupAlloc, startupRead = st["VmHWM"], mt.values["go_memstats_alloc_bytes_total"], true
		startupGC = mt.values["go_gc_duration_seconds_count"]
		startupAt = time.Since(start)
		if startupCPU, err = cpuSeconds(pid); err != nil {
			return err
		}
		startupWakeups, err = threadWakeups(pid)
		return err
	}
	tick := time.NewTicker(time.Second)
	for time.Since(start) < o.duration {
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted: %w", ctx.Err())
		case <-tick.C:
		}
		now := time.Since(start)
		st, err := readStatus(pid)
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		rss = append(rss, st["VmRSS"])
		rssFile = append(rssFile, st["RssFile"])
		if !startupRead && now >= startupWindow {
			if err := readStartup(); err != nil {
				return err
			}
		}
		if !o.soak {
			continue
		}
		s := bench.SoakSample{Seconds: now.Seconds(), RSSMB: st["VmRSS"] / 1024,
			RSSAnonMB: st["RssAnon"] / 1024, RSSFileMB: st["RssFile"] / 1024}
		next := bench.PhaseAt(plan, s.Seconds)
		if next != phase || time.Since(lastGauges) >= o.soakInterval {
			mt, err := scrape(metricsAddr)
			if err != nil {
				return err
			}
			if s.Gauges, _, err = soakGauges(metricsAddr, mt); err != nil {
				return err
			}
			lastGauges = time.Now()
		}
		// A reading at a phase switch was taken before it: it belongs to
		// the phase that ends.
		s.Phase = cmp.Or(phase, next)
		if next != phase {
			switch next {
			case bench.PhaseWarmUp:
				baseline = s.Gauges
				m.startChurn(ctx)
			case bench.PhaseQuiet:
				m.stopChurn()
			}
			fmt.Fprintf(os.Stderr, "agentbench: %3.0f s: %s (RSS %.1f MB)\n", s.Seconds, next, s.RSSMB)
			phase = next
		}
		samples = append(samples, s)
	}
	tick.Stop()
	if !startupRead {
		if err := readStartup(); err != nil {
			return err
		}
	}
	st, err := readStatus(pid)
	if err != nil {
		return err
	}
	cpu, err := cpuSeconds(pid)
	if err != nil {
		return err
	}
	wakeups, err := threadWakeups(pid)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	metrics, err := scrape(metricsAddr)
	if err != nil {
		return err
	}
	steady := (elapsed - startupAt).Seconds()
	var (
		endGauges map[string]float64
		unmapped  []string
	)
	if o.soak {
		if endGauges, unmapped, err = soakGauges(metricsAddr, metrics); err != nil {
			return err
		}
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
	if page != nil {
		page.stop()
		fmt.Fprintf(os.Stderr, "agentbench: %s; the page holds %.0f intervals, %.0f stacks, %.1f MB (estimated)\n", page.summary(),
			metrics.values["stackline_page_intervals"], metrics.values["stackline_page_stacks"], metrics.values["stackline_page_bytes"]/(1<<20))
	}
	bpfTime, offCPUTime, err := bpfRunTime(pid)
	if err != nil {
		return err
	}
	ctxt1, err := contextSwitches()
	if err != nil {
		return err
	}
	execRate, buildRate := m.rates()
	m.stop()
	agent.Process.Signal(syscall.SIGTERM)
	if err := agent.Wait(); err != nil {
		return fmt.Errorf("agent exited: %w", err)
	}

	reqs := rcv.Requests()
	var nsamples, nwaits, raw, wire int
	for i, req := range reqs {
		if err := otlpcheck.Validate(req); err != nil {
			return fmt.Errorf("request %d is not self-contained: %w", i, err)
		}
		raw += proto.Size(req)
		if o.requests != "" {
			if err := saveRequest(o.requests, i, req); err != nil {
				return err
			}
		}
		for _, rp := range req.ResourceProfiles {
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					offCPU := req.Dictionary.StringTable[p.GetSampleType().GetTypeStrindex()] == semconv.SampleTypeOffCPU
					for _, s := range p.Samples {
						if offCPU {
							// One timestamp per wait; values are
							// nanoseconds.
							nwaits += len(s.TimestampsUnixNano)
						} else {
							nsamples += int(otlpcheck.SampleCount(s))
						}
					}
				}
			}
		}
	}
	for _, n := range rcv.WireBytes() {
		wire += n
	}
	if nsamples == 0 {
		return fmt.Errorf("no samples received")
	}
	half := slices.Clone(rss[len(rss)/2:])
	slices.Sort(half)
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	r := bench.Results{
		SteadyRSSMB:           half[len(half)/2] / 1024,
		PeakRSSMB:             st["VmHWM"] / 1024,
		StartupPeakRSSMB:      startupHWM / 1024,
		StartupAllocMB:        startupAlloc / (1 << 20),
		SteadyCPUPercent:      100 * (cpu - startupCPU) / steady,
		SteadyAllocMBPerMin:   (metrics.values["go_memstats_alloc_bytes_total"] - startupAlloc) / (1 << 20) / steady * 60,
		SteadyGCPerMin:        (metrics.values["go_gc_duration_seconds_count"] - startupGC) / steady * 60,
		SteadyWakeupsPerSec:   float64(wakeups-startupWakeups) / steady,
		GCPercent:             metrics.values["go_gc_gogc_percent"],
		RSSAnonMB:             st["RssAnon"] / 1024,
		RSSFileMB:             st["RssFile"] / 1024,
		CPUPercent:            100 * cpu / elapsed.Seconds(),
		SamplesPerSecond:      float64(nsamples) / elapsed.Seconds(),
		WireBytesPerSample:    float64(wire) / float64(nsamples+nwaits),
		BytesPerSample:        float64(raw) / float64(nsamples+nwaits),
		FirstSampleSeconds:    metrics.values["stackline_first_sample_seconds"],
		GoHeapInUseMB:         metrics.values["go_memstats_heap_inuse_bytes"] / (1 << 20),
		BPFMapMB:              metrics.values["stackline_bpf_map_bytes"] / (1 << 20),
		LostTraces:            metrics.values["stackline_lost_traces_total"],
		OffCPUWaitsPerSecond:  float64(nwaits) / elapsed.Seconds(),
		BPFCPUPercent:         100 * bpfTime.Seconds() / elapsed.Seconds(),
		OffCPUBPFCPUPercent:   100 * offCPUTime.Seconds() / elapsed.Seconds(),
		LostOffCPUTraces:      metrics.values["stackline_lost_off_cpu_traces_total"],
		AgentArgs:             o.agentArgs,
		ContextSwitchesPerSec: float64(ctxt1-ctxt0) / elapsed.Seconds(),
		DurationSeconds:       elapsed.Seconds(),
		ConfiguredRate:        o.rate,
		CPUs:                  runtime.NumCPU(),
		ShortLivedPerSec:      float64(o.shortLived),
		Mix:                   mixNames,
		ExecsPerSec:           execRate,
		BuildsPerSec:          buildRate,
		Exports:               len(reqs),
		RSSEachSecondMB:       megabytes(rss),
		RSSFileEachSecondMB:   megabytes(rssFile),
		Date:                  time.Now().UTC().Format(time.RFC3339),
		Kernel:                strings.TrimSpace(string(kernel)),
		GoVersion:             runtime.Version(),
		Commit:                strings.TrimSpace(string(commit)),
	}
	if o.soak {
		rep := bench.SoakReport{
			Results: r, Phases: plan, Samples: samples,
			Baseline: baseline, End: endGauges, Unmapped: unmapped,
		}
		rep.Check()
		return writeSoak(o.out, rep)
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

// soakGauges returns the gauges of mt and, from the agent's
// /debug/unwind-tables, the count and bytes of tables no process maps, and
// the largest of those.
func soakGauges(addr string, mt metrics) (map[string]float64, []string, error) {
	g := mt.gauges()
	resp, err := http.Get("http://" + addr + "/debug/unwind-tables")
	if err != nil {
		return nil, nil, fmt.Errorf("unwind tables: %w", err)
	}
	defer resp.Body.Close()
	var tables []struct {
		File      string  `json:"file"`
		Bytes     float64 `json:"bytes"`
		Processes int     `json:"processes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tables); err != nil {
		return nil, nil, fmt.Errorf("unwind tables: %w", err)
	}
	g[bench.GaugeIdleTables], g[bench.GaugeIdleTableBytes] = 0, 0
	var unmapped []string
	for _, t := range tables { // largest first
		if t.Processes == 0 && t.Bytes > 0 {
			g[bench.GaugeIdleTables]++
			g[bench.GaugeIdleTableBytes] += t.Bytes
			if len(unmapped) < 10 {
				unmapped = append(unmapped, fmt.Sprintf("%s %.0f kB", t.File, t.Bytes/1024))
			}
		}
	}
	return g, unmapped, nil
}

// writeSoak writes the soak report as JSON to path and as Markdown beside
// it, prints the Markdown, and fails when a check failed.
func writeSoak(path string, rep bench.SoakReport) error {
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	md := rep.Markdown()
	if err := os.WriteFile(strings.TrimSuffix(path, ".json")+".md", []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	if !rep.Passed() {
		return fmt.Errorf("soak checks failed (report: %s)", path)
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

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// megabytes returns kB figures in MB, rounded to a tenth.
func megabytes(kb []float64) []float64 {
	out := make([]float64, len(kb))
	for i, v := range kb {
		out[i] = math.Round(v/102.4) / 10
	}
	return out
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

// threadWakeups returns the voluntary context switches of pid's threads
// (/proc/PID/task/*/status), of those alive now.
func threadWakeups(pid int) (uint64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				c, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("/proc/%d/task/%s/status: %w", pid, t.Name(), err)
				}
				n += c
			}
		}
	}
	return n, nil
}

// contextSwitches returns the host's context switches since boot
// (/proc/stat ctxt).
func contextSwitches() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "ctxt "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("/proc/stat: no ctxt line")
}

// bpfRunTime returns the run time of the eBPF programs process pid holds
// (all, and the off-CPU ones), as the kernel counted it since they were
// loaded while run-time statistics were on.
func bpfRunTime(pid int) (all, offCPU time.Duration, err error) {
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	if err != nil {
		return 0, 0, err
	}
	seen := make(map[uint64]bool)
	for _, fd := range fds {
		b, err := os.ReadFile(fd)
		if err != nil {
			continue // closed meanwhile
		}
		for line := range strings.Lines(string(b)) {
			v, ok := strings.CutPrefix(line, "prog_id:")
			if !ok {
				continue
			}
			id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil || seen[id] {
				continue
			}
			seen[id] = true
			p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
			if err != nil {
				return 0, 0, fmt.Errorf("eBPF program %d: %w", id, err)
			}
			info, ierr := p.Info()
			st, serr := p.Stats()
			p.Close()
			if ierr != nil || serr != nil {
				return 0, 0, fmt.Errorf("eBPF program %d: %w", id, errors.Join(ierr, serr))
			}
			all += st.Runtime
			if strings.HasPrefix(info.Name, "offcpu_") {
				offCPU += st.Runtime
			}
		}
	}
	return all, offCPU, nil
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

// metrics are the agent's Prometheus metrics without labels, by name, and
// the names declared as gauges.
type metrics struct {
	values  map[string]float64
	isGauge map[string]bool
}

// gauges returns the agent's own gauges (its processes, tables, maps and
// caches) and the Go heap in use.
func (m metrics) gauges() map[string]float64 {
	out := make(map[string]float64)
	for k, v := range m.values {
		if (m.isGauge[k] && strings.HasPrefix(k, "stackline_")) || k == "go_memstats_heap_inuse_bytes" {
			out[k] = v
		}
	}
	return out
}

// scrape reads the agent's Prometheus metrics (text format, no labels used).
func scrape(addr string) (metrics, error) {
	m := metrics{values: make(map[string]float64), isGauge: make(map[string]bool)}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return m, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(rest, " "); ok && typ == "gauge" {
				m.isGauge[name] = true
			}
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m.values[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("scrape metrics: %w", err)
	}
	return m, nil
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

// saveRequest writes export i to dir as req-NNN.pb.
func saveRequest(dir string, i int, req proto.Message) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding request %d: %w", i, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("req-%03d.pb", i)), b, 0o644)
}
