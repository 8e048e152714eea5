package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stackline-dev/stackline/agent"
	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/tracer"
)

// object is one Kubernetes object of a manifest, as parsed YAML.
type object map[string]any

// path follows keys (map) and indexes (list) and returns what is there, or
// nil.
func (o object) path(keys ...any) any {
	var v any = map[string]any(o)
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func (o object) str(keys ...any) string {
	s, _ := o.path(keys...).(string)
	return s
}

func (o object) list(keys ...any) []any {
	l, _ := o.path(keys...).([]any)
	return l
}

func (o object) sub(keys ...any) object {
	m, _ := o.path(keys...).(map[string]any)
	return object(m)
}

// manifests parses every YAML file of deploy/kubernetes, by file name.
func manifests(t *testing.T) map[string][]object {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string][]object{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o == nil {
				continue
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], normalize(o).(map[string]any))
		}
	}
	return out
}

// normalize makes every map of a decoded tree a map[string]any (yaml
// decodes nested maps into the type of the outermost one).
func normalize(v any) any {
	switch v := v.(type) {
	case object:
		return normalize(map[string]any(v))
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = normalize(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = normalize(e)
		}
		return l
	}
	return v
}

// find returns the object of the given kind and name, failing the test when
// there is not exactly one.
func find(t *testing.T, all map[string][]object, kind, name string) object {
	t.Helper()
	var found []object
	for _, objs := range all {
		for _, o := range objs {
			if o.str("kind") == kind && o.str("metadata", "name") == name {
				found = append(found, o)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects %s/%s, want 1", len(found), kind, name)
	}
	return found[0]
}

func container(t *testing.T, workload object, name string) object {
	t.Helper()
	for _, c := range workload.list("spec", "template", "spec", "containers") {
		if c, ok := c.(map[string]any); ok && c["name"] == name {
			return c
		}
	}
	t.Fatalf("%s has no container %s", workload.str("metadata", "name"), name)
	return nil
}

func strs(l []any) []string {
	var out []string
	for _, v := range l {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

// TestManifestsWellFormed: every object has a kind, a name and (except
// cluster-scoped kinds) the stackline namespace, and kustomization.yaml
// lists every manifest.
func TestManifestsWellFormed(t *testing.T) {
	all := manifests(t)
	clusterScoped := map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "Kustomization": true}
	var files []string
	for f, objs := range all {
		if f != "kustomization.yaml" {
			files = append(files, f)
		}
		for i, o := range objs {
			kind, name := o.str("kind"), o.str("metadata", "name")
			if o.str("apiVersion") == "" || kind == "" || (name == "" && kind != "Kustomization") {
				t.Errorf("%s: object %d lacks apiVersion, kind or metadata.name", f, i)
			}
			if !clusterScoped[kind] && o.str("metadata", "namespace") != "stackline" {
				t.Errorf("%s: %s/%s is not in namespace stackline", f, kind, name)
			}
		}
	}
	kust := find(t, all, "Kustomization", "")
	listed := strs(kust.list("resources"))
	sort.Strings(files)
	sort.Strings(listed)
	if !slices.Equal(files, listed) {
		t.Errorf("kustomization.yaml lists %v, the manifests are %v", listed, files)
	}
	find(t, all, "Namespace", "stackline")
}

// TestDaemonSet checks what matters for the agent to run with least
// privileges, be probed at the address it serves, and fit its budgets.
func TestDaemonSet(t *testing.T) {
	all := manifests(t)
	ds := find(t, all, "DaemonSet", "stackline")
	pod := ds.sub("spec", "template", "spec")
	c := container(t, ds, "stackline")

	if pod["hostPID"] != true {
		t.Error("hostPID is not true: stackline would see only its own pod's processes")
	}
	if pod["hostNetwork"] == true {
		t.Error("hostNetwork is true: not needed")
	}
	if sel, labels := ds.sub("spec", "selector", "matchLabels"), ds.sub("spec", "template", "metadata", "labels"); len(sel) == 0 || !isSubset(sel, labels) {
		t.Errorf("selector %v does not match the pod labels %v", sel, labels)
	}
	tolerateAll := false
	for _, tol := range pod.list("tolerations") {
		if tol, ok := tol.(map[string]any); ok && tol["operator"] == "Exists" && tol["key"] == nil && tol["effect"] == nil {
			tolerateAll = true
		}
	}
	if !tolerateAll {
		t.Error("no toleration of every taint (operator: Exists, no key): some nodes would not be profiled")
	}

	sc := c.sub("securityContext")
	if sc["privileged"] == true {
		t.Error("the container is privileged")
	}
	if sc["readOnlyRootFilesystem"] != true {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc["allowPrivilegeEscalation"] != false {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if drop := strs(sc.list("capabilities", "drop")); !slices.Equal(drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop is %v, want [ALL]", drop)
	}
	var want []string
	for _, cap := range tracer.Capabilities() {
		want = append(want, strings.TrimPrefix(cap.Name, "CAP_"))
	}
	got := strs(sc.list("capabilities", "add"))
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("capabilities.add is %v, want exactly tracer.Capabilities() %v", got, want)
	}

	// The liveness probe asks the metrics server for /healthz on the port
	// --metrics-address gives it.
	args := argMap(t, strs(c.list("args")))
	metricsAddr, ok := args["metrics-address"]
	if !ok {
		t.Fatal("no --metrics-address: nothing serves /healthz")
	}
	_, metricsPort, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		t.Fatalf("--metrics-address %q: %v", metricsAddr, err)
	}
	probe := c.sub("livenessProbe", "httpGet")
	if probe.str("path") != "/healthz" {
		t.Errorf("liveness probe path %q, want /healthz", probe.str("path"))
	}
	if port := containerPort(t, c, probe["port"]); port != metricsPort {
		t.Errorf("liveness probe port %s, --metrics-address port %s", port, metricsPort)
	}

	if env := envVar(c, "STACKLINE_HOST_NAME"); env.str("valueFrom", "fieldRef", "fieldPath") != "spec.nodeName" {
		t.Errorf("STACKLINE_HOST_NAME is %v, want the node's name (fieldRef spec.nodeName)", env)
	}

	// /sys/kernel/btf from the host, read-only.
	var btfVolume string
	for _, m := range c.list("volumeMounts") {
		if m, ok := m.(map[string]any); ok && m["mountPath"] == "/sys/kernel/btf" {
			if m["readOnly"] != true {
				t.Error("/sys/kernel/btf is not mounted read-only")
			}
			btfVolume, _ = m["name"].(string)
		}
	}
	hostPathOK := false
	for _, v := range pod.list("volumes") {
		if v, ok := v.(map[string]any); ok && v["name"] == btfVolume && object(v).str("hostPath", "path") == "/sys/kernel/btf" {
			hostPathOK = true
		}
	}
	if btfVolume == "" || !hostPathOK {
		t.Error("/sys/kernel/btf is not mounted from the host")
	}

	// The collection agent is the Collector's Service, on the port its
	// OTLP receiver listens on.
	host, port, err := net.SplitHostPort(args["collection-agent"])
	if err != nil {
		t.Fatalf("--collection-agent %q: %v", args["collection-agent"], err)
	}
	svc := find(t, all, "Service", strings.Split(host, ".")[0])
	if !strings.HasPrefix(host, svc.str("metadata", "name")+"."+svc.str("metadata", "namespace")+".svc") {
		t.Errorf("--collection-agent host %s is not Service %s in %s", host, svc.str("metadata", "name"), svc.str("metadata", "namespace"))
	}
	if _, plain := args["disable-tls"]; !plain {
		t.Error("no --disable-tls, but the Collector's OTLP receiver has no TLS")
	}
	checkCollector(t, all, svc, port)
}

// TestDaemonSetResources: the requests and limits cover the budgets the
// whole-agent benchmark gates (bench/budgets.json), and the memory limit
// also covers the eBPF maps charged to the container's memory cgroup.
func TestDaemonSetResources(t *testing.T) {
	data, err := os.ReadFile("../bench/budgets.json")
	if err != nil {
		t.Fatal(err)
	}
	var budget struct {
		SteadyRSSMB float64 `json:"steady_rss_mb"`
		PeakRSSMB   float64 `json:"peak_rss_mb"`
		CPUPercent  float64 `json:"cpu_percent_one_core"`
	}
	if err := json.Unmarshal(data, &budget); err != nil {
		t.Fatal(err)
	}
	if budget.SteadyRSSMB == 0 || budget.PeakRSSMB == 0 || budget.CPUPercent == 0 {
		t.Fatalf("bench/budgets.json lacks a figure: %+v", budget)
	}
	c := container(t, find(t, manifests(t), "DaemonSet", "stackline"), "stackline")
	res := c.sub("resources")
	q := func(keys ...string) float64 {
		s := fmt.Sprint(res.path(keys[0], keys[1]))
		v, err := quantity(s)
		if err != nil {
			t.Fatalf("resources.%s.%s: %v", keys[0], keys[1], err)
		}
		return v
	}
	const mb = 1 << 20 // the benchmark's MB are MiB
	tables := float64(agent.DefaultConfig().MaxUnwindTableBytes)
	if r := q("requests", "memory"); r < budget.SteadyRSSMB*mb {
		t.Errorf("memory request %.0f MiB < steady RSS budget %.0f MB", r/mb, budget.SteadyRSSMB)
	}
	if l := q("limits", "memory"); l < budget.PeakRSSMB*mb+tables {
		t.Errorf("memory limit %.0f MiB < peak RSS budget %.0f MB + unwind tables %.0f MiB", l/mb, budget.PeakRSSMB, tables/mb)
	}
	if r := q("requests", "cpu"); r < budget.CPUPercent/100 {
		t.Errorf("CPU request %.3f cores < the budget of %.1f%% of a core", r, budget.CPUPercent)
	}
	if l, r := q("limits", "cpu"), q("requests", "cpu"); l < r {
		t.Errorf("CPU limit %.3f < request %.3f", l, r)
	}
}

// quantity parses the Kubernetes quantities the manifests use: cores or
// millicores, bytes with a binary or decimal suffix.
func quantity(s string) (float64, error) {
	suffixes := []struct {
		s string
		m float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"m", 1e-3}}
	for _, suf := range suffixes {
		if n, ok := strings.CutSuffix(s, suf.s); ok {
			v, err := strconv.ParseFloat(n, 64)
			return v * suf.m, err
		}
	}
	return strconv.ParseFloat(s, 64)
}

func TestQuantity(t *testing.T) {
	for s, want := range map[string]float64{"50m": 0.05, "1": 1, "128Mi": 128 << 20, "1Gi": 1 << 30, "500M": 5e8} {
		if got, err := quantity(s); err != nil || math.Abs(got-want) > 1e-9 {
			t.Errorf("quantity(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := quantity("lots"); err == nil {
		t.Error("quantity(lots) did not fail")
	}
}

// checkCollector: the Service reaches the Collector's OTLP receiver on
// port, and the Collector runs a profiles pipeline (feature gate on) from
// that receiver through k8sattributes.
func checkCollector(t *testing.T, all map[string][]object, svc object, port string) {
	t.Helper()
	dep := find(t, all, "Deployment", svc.str("metadata", "name"))
	if !isSubset(svc.sub("spec", "selector"), dep.sub("spec", "template", "metadata", "labels")) {
		t.Errorf("Service selector %v does not select the Collector's pods", svc.sub("spec", "selector"))
	}
	var target any
	for _, p := range svc.list("spec", "ports") {
		if p := object(p.(map[string]any)); fmt.Sprint(p["port"]) == port {
			target = p["targetPort"]
		}
	}
	if target == nil {
		t.Fatalf("Service %s has no port %s", svc.str("metadata", "name"), port)
	}
	col := container(t, dep, "collector")
	cport := containerPort(t, col, target)
	args := strs(col.list("args"))
	if !slices.Contains(args, "--feature-gates=service.profilesSupport") {
		t.Errorf("Collector args %v lack --feature-gates=service.profilesSupport", args)
	}
	cm := find(t, all, "ConfigMap", svc.str("metadata", "name"))
	var cfg object
	for file, text := range cm.sub("data") {
		if !slices.Contains(args, "--config=/conf/"+file) {
			t.Errorf("Collector args %v do not load %s", args, file)
		}
		if err := yaml.Unmarshal([]byte(fmt.Sprint(text)), &cfg); err != nil {
			t.Fatalf("Collector config: %v", err)
		}
		cfg = normalize(cfg).(map[string]any)
	}
	_, rport, err := net.SplitHostPort(cfg.str("receivers", "otlp", "protocols", "grpc", "endpoint"))
	if err != nil || rport != cport {
		t.Errorf("OTLP receiver endpoint port %s (%v), container port %s", rport, err, cport)
	}
	pipe := cfg.sub("service", "pipelines", "profiles")
	if !slices.Contains(strs(pipe.list("receivers")), "otlp") || !slices.Contains(strs(pipe.list("processors")), "k8sattributes") || len(pipe.list("exporters")) == 0 {
		t.Errorf("profiles pipeline %v does not go from otlp through k8sattributes to an exporter", pipe)
	}
	for _, e := range strs(pipe.list("exporters")) {
		if _, defined := cfg.sub("exporters")[e]; !defined {
			t.Errorf("pipeline exporter %s is not configured", e)
		}
	}
}

func isSubset(sub, of object) bool {
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return true
}

// containerPort resolves a probe's or Service's port (number or name) to
// the container's port number.
func containerPort(t *testing.T, c object, port any) string {
	t.Helper()
	for _, p := range c.list("ports") {
		p := object(p.(map[string]any))
		if p["name"] == port || fmt.Sprint(p["containerPort"]) == fmt.Sprint(port) {
			return fmt.Sprint(p["containerPort"])
		}
	}
	t.Fatalf("container %s has no port %v", c.str("name"), port)
	return ""
}

func envVar(c object, name string) object {
	for _, e := range c.list("env") {
		if e, ok := e.(map[string]any); ok && e["name"] == name {
			return e
		}
	}
	return nil
}

// argMap splits --name=value and bare --name arguments.
func argMap(t *testing.T, args []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range args {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			t.Fatalf("argument %q is not --name[=value]", a)
		}
		name, value, _ := strings.Cut(name, "=")
		m[name] = value
	}
	return m
}

// agentFlags returns the flag names the built agent's -h lists.
func agentFlags(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -h: %v\n%s", bin, err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["collection-agent"] || len(flags) < 10 {
		t.Fatalf("cannot read the flags from -h:\n%s", out)
	}
	return flags
}

// manifestEnv returns the container's environment for running the agent
// here: literal values as they are, values from the Downward API as
// stand-ins.
func manifestEnv(t *testing.T, c object) []string {
	t.Helper()
	var env []string
	for _, e := range c.list("env") {
		e := object(e.(map[string]any))
		v := e.str("value")
		if e.str("valueFrom", "fieldRef", "fieldPath") != "" {
			v = "node-from-downward-api"
		}
		env = append(env, e.str("name")+"="+v)
	}
	return env
}

// TestDaemonSetFlags: every argument and STACKLINE_ variable the DaemonSet
// gives the agent is one of the agent's flags, and the agent accepts them
// all (--version parses every flag and variable, then exits).
func TestDaemonSetFlags(t *testing.T) {
	c := container(t, find(t, manifests(t), "DaemonSet", "stackline"), "stackline")
	bin := testenv.BuildAgent(t, t.TempDir())
	flags := agentFlags(t, bin)
	args := strs(c.list("args"))
	for name := range argMap(t, args) {
		if !flags[name] {
			t.Errorf("argument --%s is not a flag of the agent", name)
		}
	}
	env := manifestEnv(t, c)
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		flag, ok := strings.CutPrefix(name, "STACKLINE_")
		if !ok {
			continue
		}
		if flag = strings.ToLower(strings.ReplaceAll(flag, "_", "-")); !flags[flag] {
			t.Errorf("%s sets no flag of the agent (no --%s)", name, flag)
		}
	}
	cmd := exec.Command(bin, append(args, "--version")...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "stackline ") {
		t.Errorf("the agent rejects the DaemonSet's arguments %v: %v\n%s", args, err, out)
	}
}

// workload spins in two named Go functions.
const workload = `package main

func deployLeaf(n int) int {
	for i := 0; i < 1<<20; i++ {
		n = n*31 + i
	}
	return n
}

//go:noinline
func deployMid(n int) int { return deployLeaf(n) + 1 }

func main() {
	n := 0
	for {
		n = deployMid(n)
	}
}
`

// TestDaemonSetOnThisHost runs the agent as the DaemonSet would, as far as
// this host can without a container runtime: the manifest's arguments and
// environment, exactly its capabilities (bounding set, no_new_privs), a
// read-only root file system (a private mount namespace), the host PID
// namespace. A workload runs as another user from a directory only that
// user can read, so naming its frames needs CAP_SYS_PTRACE and
// CAP_DAC_READ_SEARCH. The liveness probe's path must answer on the metrics
// server and the workload's samples must arrive named. Only the endpoints
// are changed: the Collector is a local receiver and the metrics server
// listens on loopback.
func TestDaemonSetOnThisHost(t *testing.T) {
	testenv.RequireBPF(t)
	c := container(t, find(t, manifests(t), "DaemonSet", "stackline"), "stackline")
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := testenv.BuildAgent(t, dir)

	// The workload, readable by nobody but its user.
	const nobody = 65534
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	wbin := filepath.Join(private, "workload")
	if err := os.Rename(testenv.BuildGo(t, workload, false), wbin); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{private, wbin} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(wbin, 0o700); err != nil {
		t.Fatal(err)
	}
	w := exec.Command("setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups", "--inh-caps=-all", wbin)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		w.Process.Kill()
		w.Wait()
	}()

	rcv, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := ln.Addr().String()
	ln.Close()

	var caps []string
	for _, cap := range strs(c.sub("securityContext").list("capabilities", "add")) {
		caps = append(caps, "+"+strings.ToLower(cap))
	}
	args := append(strs(c.list("args")),
		"--collection-agent="+rcv.Addr(), "--metrics-address="+metrics, "--reporter-interval=2s")
	cmdline := append([]string{
		"unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", `mount --bind / / && mount -o remount,bind,ro / && exec "$@"`, "sh",
		"setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all," + strings.Join(caps, ","),
		bin}, args...)
	var out bytes.Buffer
	agentCmd := exec.Command(cmdline[0], cmdline[1:]...)
	agentCmd.Env = append(os.Environ(), manifestEnv(t, c)...)
	agentCmd.Stdout, agentCmd.Stderr = &out, &out
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agentCmd.Wait() }()
	stop := func() {
		agentCmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(30 * time.Second):
			agentCmd.Process.Kill()
			<-exited
			t.Error("agent did not stop within 30s of SIGTERM")
		}
	}

	probePath := c.str("livenessProbe", "httpGet", "path")
	deadline := time.Now().Add(15 * time.Second)
	healthy := false
	for !healthy && time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("agent exited: %v\n%s", err, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get("http://" + metrics + probePath)
		if err == nil {
			healthy = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
	}
	if !healthy {
		stop()
		t.Fatalf("no 200 from %s within 15s\n%s", probePath, out.String())
	}

	// Samples of the workload, named, in the host.name the Downward API
	// gives. At 19 Hz a spinning thread gets up to 19 samples a second,
	// fewer when other work shares the CPUs.
	const wantSamples = 30
	var samples, named int
	var hostNames []string
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && samples < wantSamples; {
		time.Sleep(time.Second)
		samples, named, hostNames = workloadSamples(rcv, w.Process.Pid)
	}
	stop()
	t.Logf("%d workload samples, %d with main.deployLeaf named; host.name %v", samples, named, hostNames)
	if samples < wantSamples {
		t.Fatalf("%d samples of the workload, want %d\n%s", samples, wantSamples, out.String())
	}
	if float64(named) < 0.9*float64(samples) {
		t.Errorf("%d of %d workload samples name main.deployLeaf, want >= 90%%\n%s", named, samples, out.String())
	}
	if !slices.Equal(hostNames, []string{"node-from-downward-api"}) {
		t.Errorf("host.name %v, want STACKLINE_HOST_NAME's value", hostNames)
	}
}

// workloadSamples counts the samples of pid received, those with
// main.deployLeaf among their frames, and the host names they carry.
func workloadSamples(rcv *otlptest.Receiver, pid int) (samples, named int, hostNames []string) {
	for _, req := range rcv.Requests() {
		for _, rp := range req.ResourceProfiles {
			if otlpcheck.ResourceAttr(rp, "process.pid") != strconv.Itoa(pid) {
				continue
			}
			if h := otlpcheck.ResourceAttr(rp, "host.name"); !slices.Contains(hostNames, h) {
				hostNames = append(hostNames, h)
			}
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					for _, s := range p.Samples {
						n := int(otlpcheck.SampleCount(s))
						samples += n
						frames, _ := otlpcheck.Frames(req, s)
						if slices.ContainsFunc(frames, func(f otlpcheck.Frame) bool { return f.Name == "main.deployLeaf" }) {
							named += n
						}
					}
				}
			}
		}
	}
	return samples, named, hostNames
}

// TestReadme: README's "Least privileges" names every capability the tracer
// checks for, and its requirements the minimum kernel.
func TestReadme(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	_, section, ok := strings.Cut(readme, "### Least privileges")
	if !ok {
		t.Fatal(`README has no "### Least privileges"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	for _, c := range tracer.Capabilities() {
		if !strings.Contains(section, "`"+c.Name+"`") {
			t.Errorf("README's Least privileges does not name %s", c.Name)
		}
	}
	if want := "Linux " + tracer.MinimumKernel + " or later"; !strings.Contains(readme, want) {
		t.Errorf("README does not say %q", want)
	}
}
