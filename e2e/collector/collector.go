// Package collector runs a real OpenTelemetry Collector for stackline's
// end-to-end tests and decodes what it received.
//
// The Collector is built by build.sh from builder-config.yaml (the OTLP
// receiver, the debug and OTLP exporters, and contrib's file exporter); CI
// builds it before the tests and passes its path in $STACKLINE_OTELCOL.
// [Start] runs it with the OTLP receiver on free loopback ports and the file
// exporter writing OTLP JSON to a file; [Collector.Stop] stops it and
// returns the requests that file holds, decoded by [Decode].
package collector

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
)

// EnvBinary names the environment variable that holds the path of the
// Collector binary build.sh built.
const EnvBinary = "STACKLINE_OTELCOL"

// FeatureGates are the Collector feature gates the profiles pipeline needs.
const FeatureGates = "service.profilesSupport"

// Binary returns the Collector binary's path: $STACKLINE_OTELCOL, or, when
// that is unset, the binary build.sh builds (or finds in its cache). When
// STACKLINE_REQUIRE_BPF=1 (CI) the variable must be set: the test fails
// rather than spend minutes building.
func Binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(EnvBinary); bin != "" {
		if fi, err := os.Stat(bin); err != nil {
			t.Fatalf("$%s: %v", EnvBinary, err)
		} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("$%s=%s is not an executable file", EnvBinary, bin)
		}
		return bin
	}
	if os.Getenv("STACKLINE_REQUIRE_BPF") == "1" {
		t.Fatalf("$%s is not set: CI must build the Collector with e2e/collector/build.sh and export its path (see .ci/run)", EnvBinary)
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate build.sh")
	}
	script := filepath.Join(filepath.Dir(file), "build.sh")
	t.Logf("$%s is not set: building the Collector with %s (minutes when not cached)", EnvBinary, script)
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// Collector is a running Collector.
type Collector struct {
	// GRPCAddr and HTTPAddr are the host:port of the OTLP receiver's gRPC
	// and HTTP servers.
	GRPCAddr, HTTPAddr string

	out  string // the file exporter's output file
	cmd  *exec.Cmd
	log  *bytes.Buffer // stdout and stderr; read only after cmd.Wait
	done chan error    // cmd.Wait's result
	// exited is set once the result was taken from done.
	exited bool
}

// wait waits for the Collector to exit, killing it when kill is set, and
// returns cmd.Wait's result.
func (c *Collector) wait(kill bool) error {
	if kill {
		c.cmd.Process.Kill()
	}
	err := <-c.done
	c.exited = true
	return err
}

// config is the Collector configuration Start writes: the OTLP receiver on
// the given endpoints, one profiles pipeline to the file exporter (OTLP
// JSON, one request per line) and the debug exporter (counts in the log),
// and no internal telemetry server (it would bind a fixed port).
const config = `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
exporters:
  file:
    path: %q
    format: json
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    profiles:
      receivers: [otlp]
      exporters: [file, debug]
`

// Start runs the Collector bin with a configuration written to dir and
// waits until its receiver accepts connections. The Collector is killed
// when the test ends unless [Collector.Stop] stopped it.
func Start(t testing.TB, bin, dir string) *Collector {
	t.Helper()
	// Free ports are found by binding port 0 and closing; another process
	// may take one in between, so a Collector that fails to start is tried
	// again on new ports.
	var errs []error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := start(t, bin, dir, attempt)
		if err == nil {
			return c
		}
		errs = append(errs, err)
	}
	t.Fatalf("starting the Collector: %v", errors.Join(errs...))
	return nil
}

func start(t testing.TB, bin, dir string, attempt int) (*Collector, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	c := &Collector{
		GRPCAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		out:      filepath.Join(dir, fmt.Sprintf("otelcol-%d.jsonl", attempt)),
		log:      new(bytes.Buffer),
		done:     make(chan error, 1),
	}
	cfg := filepath.Join(dir, fmt.Sprintf("otelcol-%d.yaml", attempt))
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, c.GRPCAddr, c.HTTPAddr, c.out), 0o644); err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin, "--config", cfg, "--feature-gates="+FeatureGates)
	c.cmd.Stdout = c.log
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if !c.exited {
			c.wait(true)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range []string{c.GRPCAddr, c.HTTPAddr} {
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case err := <-c.done:
				c.exited = true
				return nil, fmt.Errorf("the Collector exited (%v):\n%s", err, c.log)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				c.wait(true)
				return nil, fmt.Errorf("the Collector did not listen on %s within 30s:\n%s", addr, c.log)
			}
		}
	}
	return c, nil
}

// freePorts returns n loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Stop stops the Collector with SIGTERM, which makes the file exporter
// flush, and returns the requests it wrote, decoded by [Decode], with the
// Collector's log. It fails the test when the Collector does not exit
// cleanly or its output cannot be decoded.
func (c *Collector) Stop(t testing.TB) ([]*collectorpb.ExportProfilesServiceRequest, string) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.exited = true
		if err != nil {
			t.Fatalf("the Collector: %v\n%s", err, c.log)
		}
	case <-time.After(30 * time.Second):
		c.wait(true)
		t.Fatalf("the Collector did not stop within 30s of SIGTERM\n%s", c.log)
	}
	log := c.log.String()
	f, err := os.Open(c.out)
	if err != nil {
		t.Fatalf("the file exporter's output: %v\nCollector log:\n%s", err, log)
	}
	defer f.Close()
	reqs, err := Decode(f)
	if err != nil {
		t.Fatalf("decoding %s: %v", c.out, err)
	}
	return reqs, log
}

// debugRecords matches the debug exporter's line for one batch of
// profiles (at verbosity basic).
var debugRecords = regexp.MustCompile(`"sample records": (\d+)`)

// DebugSampleRecords returns the number of sample records the debug
// exporter logged in log, a Collector log Stop returned, and the number of
// batches it logged them in.
func DebugSampleRecords(log string) (records, batches int) {
	for _, m := range debugRecords.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		records += n
		batches++
	}
	return records, batches
}
