package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/e2e/collector"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
)

// The resource attributes the Collector tests set and expect back.
const (
	collectorHostName    = "collector-e2e.stackline.test"
	collectorServiceName = "stackline-collector-e2e"
)

// TestCollectorGRPC sends to a real OpenTelemetry Collector over OTLP/gRPC
// and checks what its file exporter wrote.
func TestCollectorGRPC(t *testing.T) {
	testCollector(t, func(c *collector.Collector) ([]string, []string) {
		return []string{"--collection-agent", c.GRPCAddr, "--disable-tls"}, nil
	})
}

// TestCollectorHTTP sends to the Collector's OTLP/HTTP receiver, the
// endpoint given by --collection-agent as an http:// URL.
func TestCollectorHTTP(t *testing.T) {
	testCollector(t, func(c *collector.Collector) ([]string, []string) {
		return []string{"--collection-agent", "http://" + c.HTTPAddr}, nil
	})
}

// TestCollectorHTTPEnv sends to the Collector's OTLP/HTTP receiver, the
// endpoint and protocol given by the OTEL_EXPORTER_OTLP_* variables.
func TestCollectorHTTPEnv(t *testing.T) {
	testCollector(t, func(c *collector.Collector) ([]string, []string) {
		return nil, []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + c.HTTPAddr,
			"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		}
	})
}

// testCollector runs the agent against the workloads for 10 s, sending to a
// Collector at the endpoint target gives (flags and environment), and
// checks what reached the Collector's file exporter: every request
// self-contained, the samples the agent exported, the workloads' call
// chains and frame types, and the resource attributes.
func testCollector(t *testing.T, target func(*collector.Collector) (args, env []string)) {
	testenv.RequireBPF(t)
	otelcol := collector.Binary(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	w := startWorkloads(t, dir)
	col := collector.Start(t, otelcol, dir)
	metricsAddr := freeAddr(t)

	args, env := target(col)
	var before agentCounters
	out := runAgentWith(t, bin, agentRun{
		d: 10 * time.Second,
		args: append(args,
			"--samples-per-second", "49", "--reporter-interval", "2s",
			"--host-name", collectorHostName, "--service-name", collectorServiceName,
			"--metrics-address", metricsAddr),
		env: env,
		beforeStop: func() {
			var err error
			if before, err = scrapeCounters(metricsAddr); err != nil {
				t.Errorf("agent metrics: %v", err)
			}
		},
	})
	after, err := parseStopped(out)
	if err != nil {
		t.Fatal(err)
	}
	reqs, log := col.Stop(t)
	if len(reqs) < 3 {
		t.Fatalf("the Collector wrote %d requests in 10s at a 2s interval\nCollector log:\n%s", len(reqs), log)
	}

	// Every reference resolves: stack -> location -> mapping and function
	// -> string, attributes -> string.
	for i, req := range reqs {
		if err := otlpcheck.Validate(req); err != nil {
			t.Errorf("request %d as the Collector wrote it: %v", i, err)
		}
	}

	// The samples: the file holds the sample records the debug exporter
	// counted on the same pipeline, and the samples the agent exported.
	records, samples := 0, 0
	types := map[string]int{}
	// A sample delivered twice shows as a repeated (pid, tid, timestamp).
	type stamp struct {
		pid, tid string
		ns       uint64
	}
	seen, repeated := map[stamp]bool{}, 0
	for i, req := range reqs {
		reqSamples := 0
		for _, rp := range req.ResourceProfiles {
			pid := otlpcheck.ResourceAttr(rp, "process.pid")
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					for _, s := range p.Samples {
						tid, err := otlpcheck.SampleAttr(req, s, "thread.id")
						if err != nil {
							t.Fatalf("sample of pid %s: %v", pid, err)
						}
						for _, ns := range s.TimestampsUnixNano {
							if seen[stamp{pid, tid, ns}] {
								repeated++
							}
							seen[stamp{pid, tid, ns}] = true
						}
						records++
						reqSamples += int(otlpcheck.SampleCount(s))
						samples += int(otlpcheck.SampleCount(s))
						frames, err := otlpcheck.Frames(req, s)
						if err != nil {
							t.Fatalf("sample of pid %s: %v", pid, err)
						}
						for _, f := range frames {
							types[f.Type]++
						}
					}
				}
			}
		}
		p := req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0]
		t.Logf("request %d: %d samples, time %d duration %d", i, reqSamples, p.TimeUnixNano, p.DurationNano)
	}
	if repeated > 0 {
		t.Errorf("%d sample timestamps arrived more than once", repeated)
		for i := range reqs {
			for j := i + 1; j < len(reqs); j++ {
				if proto.Equal(reqs[i], reqs[j]) {
					t.Errorf("request %d repeats request %d: the agent sent one export twice", j, i)
				}
			}
		}
	}
	debugRecords, batches := collector.DebugSampleRecords(log)
	t.Logf("Collector: %d requests, %d sample records (debug exporter: %d in %d batches), %d samples; agent before SIGTERM: %d traces, %d samples exported; at exit: %d traces",
		len(reqs), records, debugRecords, batches, samples, before.traces, before.exported, after.traces)
	if batches != len(reqs) || debugRecords != records {
		t.Errorf("the file exporter wrote %d requests with %d sample records; the debug exporter logged %d batches with %d",
			len(reqs), records, batches, debugRecords)
	}
	if after.exportErrors != 0 {
		t.Errorf("the agent counted %d export errors", after.exportErrors)
	}
	// All samples exported before SIGTERM reached the Collector, and at
	// least 90% of the traces the agent had read from eBPF by then (the
	// final flush exports the rest); none were invented.
	if samples < before.exported {
		t.Errorf("the Collector got %d samples; the agent had exported %d before SIGTERM", samples, before.exported)
	}
	if float64(samples) < 0.9*float64(before.traces) {
		t.Errorf("the Collector got %d samples, want >= 90%% of the %d traces the agent had read before SIGTERM", samples, before.traces)
	}
	if samples > after.traces {
		t.Errorf("the Collector got %d samples; the agent read only %d traces", samples, after.traces)
	}

	// Frame types: all four kinds of frame the workloads produce, and no
	// frame without one.
	t.Logf("frames by profile.frame.type: %v", types)
	for _, typ := range []string{"kernel", "native", "go", "cpython"} {
		if types[typ] < 10 {
			t.Errorf("%d frames of type %s, want >= 10", types[typ], typ)
		}
	}
	if types[""] > 0 {
		t.Errorf("%d frames lack profile.frame.type", types[""])
	}

	// The workloads' call chains, named.
	checkNativeChains(t, reqs, w)
	pyChain := []string{"inner", "middle", "outer", "<module>"}
	pyTotal, pyFull := typedChainCount(reqs, w.python.Process.Pid, "cpython", pyChain)
	t.Logf("Python workload: %d samples, %d with %v", pyTotal, pyFull, pyChain)
	if pyTotal < 100 || float64(pyFull) < 0.9*float64(pyTotal) {
		t.Errorf("Python workload: %d of %d samples with the Python chain %v, want >= 90%% of at least 100", pyFull, pyTotal, pyChain)
	}

	// Resource attributes: every resource names its process (an integer
	// pid), host, OS and service; the workloads' resources are there, with
	// their executables' names and runtimes, their service named by
	// --service-name, the Python workload's by its environment (other
	// processes may name theirs in their environment too).
	services := map[string]string{itoa(w.python.Process.Pid): pythonService}
	for _, c := range []*exec.Cmd{w.chainC, w.syscallC, w.goChain} {
		services[itoa(c.Process.Pid)] = collectorServiceName
	}
	byPid := map[string]map[string]string{} // pid -> key -> value, merged over requests
	for i, req := range reqs {
		for j, rp := range req.ResourceProfiles {
			attrs := map[string]string{}
			for _, kv := range rp.GetResource().GetAttributes() {
				attrs[kv.Key] = otlpcheck.FormatValue(kv.Value)
				if kv.Key == semconv.PID && kv.Value.GetValue() != nil {
					if _, ok := kv.Value.GetValue().(*commonpb.AnyValue_IntValue); !ok {
						t.Errorf("request %d resource %d: process.pid %v is not an int value", i, j, kv.Value)
					}
				}
			}
			pid := attrs[semconv.PID]
			if pid == "" {
				t.Errorf("request %d resource %d: no process.pid", i, j)
			}
			if got := attrs[semconv.HostName]; got != collectorHostName {
				t.Errorf("request %d resource %d (pid %s): host.name %q, want %q", i, j, pid, got, collectorHostName)
			}
			if got := attrs[semconv.OSType]; got != semconv.OSLinux {
				t.Errorf("request %d resource %d (pid %s): os.type %q, want %q", i, j, pid, got, semconv.OSLinux)
			}
			got, want := attrs[semconv.ServiceName], services[pid]
			if got == "" || want != "" && got != want {
				t.Errorf("request %d resource %d (pid %s): service.name %q, want %q", i, j, pid, got, want)
			}
			for _, sp := range rp.ScopeProfiles {
				if sp.GetScope().GetName() == "" {
					t.Errorf("request %d resource %d (pid %s): scope without a name", i, j, pid)
				}
			}
			if byPid[pid] == nil {
				byPid[pid] = map[string]string{}
			}
			for k, v := range attrs {
				byPid[pid][k] = v
			}
		}
	}
	for _, c := range []struct {
		name, exe, runtime string
		pid                int
	}{
		{"C chain", "workload", "", w.chainC.Process.Pid},
		{"C syscall", "workload", "", w.syscallC.Process.Pid},
		{"Go", "goworkload", semconv.RuntimeGo, w.goChain.Process.Pid},
		{"Python", "", semconv.RuntimeCPython, w.python.Process.Pid},
	} {
		attrs := byPid[itoa(c.pid)]
		if attrs == nil {
			t.Errorf("no resource with the %s workload's process.pid %d", c.name, c.pid)
			continue
		}
		if c.exe != "" && attrs[semconv.ExeName] != c.exe {
			t.Errorf("%s workload: process.executable.name %q, want %q", c.name, attrs[semconv.ExeName], c.exe)
		}
		if c.runtime != "" && attrs[semconv.RuntimeName] != c.runtime {
			t.Errorf("%s workload: process.runtime.name %q, want %q", c.name, attrs[semconv.RuntimeName], c.runtime)
		}
	}
}

// typedChainCount returns how many samples of pid there are and how many of
// them have, among their frames of type typ, exactly chain, leaf first.
func typedChainCount(reqs []*collectorpb.ExportProfilesServiceRequest, pid int, typ string, chain []string) (total, full int) {
	return countSamples(reqs, pid, func(frames []otlpcheck.Frame) bool {
		var got []string
		for _, f := range frames {
			if f.Type == typ {
				got = append(got, f.Name)
			}
		}
		return slices.Equal(got, chain)
	})
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// agentCounters are counters the agent reports about its samples.
type agentCounters struct {
	// traces counts the traces read from eBPF (one per sample of a
	// busy CPU that was not lost), exported those that went out in an
	// export.
	traces, exported, exportErrors int
}

// scrapeCounters reads the agent's sample counters from its metrics.
func scrapeCounters(addr string) (agentCounters, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return agentCounters{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return agentCounters{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseCounters(resp.Body)
}

// parseCounters reads the sample counters from Prometheus text.
func parseCounters(r io.Reader) (agentCounters, error) {
	want := map[string]*int{}
	var c agentCounters
	want["stackline_traces_total"] = &c.traces
	want["stackline_samples_exported_total"] = &c.exported
	want["stackline_export_errors_total"] = &c.exportErrors
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		p := want[name]
		if !ok || p == nil {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return c, fmt.Errorf("metric %s: %w", name, err)
		}
		*p = int(v)
		found++
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if found != len(want) {
		return c, fmt.Errorf("%d of the %d sample counters in the metrics", found, len(want))
	}
	return c, nil
}

// stoppedLine matches the agent's last log line.
var stoppedLine = regexp.MustCompile(`msg=stopped .*\btraces=(\d+) .*\bexport_errors=(\d+)`)

// parseStopped reads the counters of the agent's "stopped" log line.
func parseStopped(out string) (agentCounters, error) {
	m := stoppedLine.FindStringSubmatch(out)
	if m == nil {
		return agentCounters{}, fmt.Errorf("no \"stopped\" line with traces and export_errors in the agent's output")
	}
	var c agentCounters
	c.traces, _ = strconv.Atoi(m[1])
	c.exportErrors, _ = strconv.Atoi(m[2])
	return c, nil
}
