package procmeta

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Container IDs and the pod UID of the fixtures in testdata/cgroup.
const (
	dockerID     = "3f4c2b1d9e8a7f6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e"
	innerID      = "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"
	containerdID = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	crioID       = "7d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6"
	podmanID     = "4e8f1c2a9b3d7e6f5a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"
	podUID       = "8a9f3c2e-51d7-4b6a-9e0f-2c4d6e8f0a1b"
)

// TestParseCgroupFixtures reads each runtime's /proc/PID/cgroup, in the
// cgroup v1, v2 and hybrid layouts and with the cgroupfs and systemd
// drivers, and host processes' ones.
func TestParseCgroupFixtures(t *testing.T) {
	want := map[string]Container{
		"docker-v1-cgroupfs":                    {ID: dockerID},
		"docker-v2-systemd":                     {ID: dockerID},
		"docker-v2-cgroupfs":                    {ID: dockerID},
		"docker-hybrid":                         {ID: dockerID},
		"docker-in-docker-v2":                   {ID: innerID},
		"containerd-k8s-v1-cgroupfs":            {ID: containerdID, PodUID: podUID},
		"containerd-k8s-v1-systemd-guaranteed":  {ID: containerdID, PodUID: podUID},
		"containerd-k8s-v2-systemd":             {ID: containerdID, PodUID: podUID},
		"containerd-k8s-v2-cgroupfs-besteffort": {ID: containerdID, PodUID: podUID},
		"containerd-k8s-v2-colon":               {ID: containerdID, PodUID: podUID},
		"containerd-k8s-v2-cgroupns":            {ID: containerdID, PodUID: podUID},
		"crio-k8s-v1-systemd":                   {ID: crioID, PodUID: podUID},
		"crio-k8s-v2-systemd":                   {ID: crioID, PodUID: podUID},
		// The container's monitor runs in the pod, not in the container.
		"crio-conmon-v2":       {PodUID: podUID},
		"podman-rootful-v2":    {ID: podmanID},
		"podman-rootless-v2":   {ID: podmanID},
		"podman-conmon-v2":     {},
		"host-user-session-v2": {},
		"host-service-v1":      {},
		"host-init-v2":         {},
		"host-root-v2":         {},
		"host-root-v1":         {},
	}
	files, err := filepath.Glob("testdata/cgroup/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Errorf("%d fixtures, %d expectations", len(files), len(want))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		w, ok := want[name]
		if !ok {
			t.Errorf("%s: no expectation", name)
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := ParseCgroup(data); got != w {
			t.Errorf("%s: %+v, want %+v", name, got, w)
		}
	}
}

func TestParseCgroupEdges(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Container
	}{
		{"", Container{}},
		{"garbage", Container{}},
		{"0::", Container{}},
		// Not an ID: too short, upper case, not hex.
		{"0::/docker/" + dockerID[:63], Container{}},
		{"0::/docker/" + strings.ToUpper(dockerID), Container{}},
		{"0::/system.slice/docker-" + dockerID[:60] + "zzzz.scope", Container{}},
		// An unknown runtime's scope is not taken for a container.
		{"0::/system.slice/session-" + dockerID + ".scope", Container{}},
		// A pod UID must be a UUID in a kubepods slice or pod<uid>.
		{"0::/kubepods/burstable/pod1234/" + containerdID, Container{ID: containerdID}},
		{"0::/system.slice/mypod" + podUID + ".slice", Container{}},
		{"0::/kubepods.slice/kubepods-pod" + strings.Replace(podUID, "-", "_", 2) + ".slice", Container{}},
		// No trailing newline; colons in the path.
		{"0::/docker/" + dockerID, Container{ID: dockerID}},
		{"5:memory:/a:b/docker-" + dockerID + ".scope\n", Container{ID: dockerID}},
	} {
		if got := ParseCgroup([]byte(c.in)); got != c.want {
			t.Errorf("%q: %+v, want %+v", c.in, got, c.want)
		}
	}
}

func environ(entries ...string) []byte {
	return []byte(strings.Join(entries, "\x00") + "\x00")
}

func TestServiceName(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"none", environ("PATH=/bin", "HOME=/"), ""},
		{"empty", nil, ""},
		{"OTEL_SERVICE_NAME", environ("PATH=/bin", "OTEL_SERVICE_NAME=checkout"), "checkout"},
		{"trimmed", environ("OTEL_SERVICE_NAME= checkout "), "checkout"},
		{"resource attributes", environ("OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,service.name=cart"), "cart"},
		{"resource attributes spaces", environ("OTEL_RESOURCE_ATTRIBUTES= service.name = cart , a=b"), "cart"},
		{"percent-encoded", environ("OTEL_RESOURCE_ATTRIBUTES=service.name=my%20cart%2Cv2"), "my cart,v2"},
		{"bad percent-encoding", environ("OTEL_RESOURCE_ATTRIBUTES=service.name=cart%zz"), ""},
		{"last in list", environ("OTEL_RESOURCE_ATTRIBUTES=service.name=a,service.name=b"), "b"},
		{"OTEL_SERVICE_NAME wins", environ("OTEL_RESOURCE_ATTRIBUTES=service.name=cart", "OTEL_SERVICE_NAME=checkout"), "checkout"},
		{"empty OTEL_SERVICE_NAME falls back", environ("OTEL_SERVICE_NAME=", "OTEL_RESOURCE_ATTRIBUTES=service.name=cart"), "cart"},
		{"first entry counts", environ("OTEL_SERVICE_NAME=first", "OTEL_SERVICE_NAME=second"), "first"},
		{"unterminated entry ignored", []byte("PATH=/bin\x00OTEL_SERVICE_NAME=cut"), ""},
		{"prefix is not the name", environ("OTEL_SERVICE_NAME_X=x", "XOTEL_SERVICE_NAME=y"), ""},
		{"other attribute only", environ("OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop"), ""},
		{"invalid UTF-8", environ("OTEL_SERVICE_NAME=a\xffb"), "a\uFFFDb"},
	} {
		if got := ServiceName(c.in); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// fakeProc writes a proc tree with one process, pid 7, holding cgroup and
// environ.
func fakeProc(t *testing.T, cgroup string, environ []byte) string {
	root := t.TempDir()
	dir := filepath.Join(root, "7")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "environ"), environ, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestReader(t *testing.T) {
	cg := "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
		strings.ReplaceAll(podUID, "-", "_") + ".slice/cri-containerd-" + containerdID + ".scope\n"
	r := NewReader(fakeProc(t, cg, environ("PATH=/bin", "OTEL_SERVICE_NAME=checkout")))
	m, err := r.Read(7)
	if err != nil {
		t.Fatal(err)
	}
	want := Meta{Container: Container{ID: containerdID, PodUID: podUID}, ServiceName: "checkout"}
	if m != want {
		t.Fatalf("%+v, want %+v", m, want)
	}

	// A process gone: both reads fail with fs.ErrNotExist, nothing known.
	m, err = r.Read(8)
	if !errors.Is(err, fs.ErrNotExist) || m != (Meta{}) {
		t.Fatalf("exited process: %+v, %v", m, err)
	}
}

// TestReaderBounds: a variable past MaxEnvironBytes is not seen, one cut by
// the bound is not taken, one before it is.
func TestReaderBounds(t *testing.T) {
	pad := "PAD=" + strings.Repeat("x", MaxEnvironBytes)
	r := NewReader(fakeProc(t, "0::/\n", environ(pad, "OTEL_SERVICE_NAME=late")))
	if m, err := r.Read(7); err != nil || m.ServiceName != "" {
		t.Fatalf("past the bound: %+v, %v", m, err)
	}
	entry := "OTEL_SERVICE_NAME=cut-by-the-bound"
	pad = "PAD=" + strings.Repeat("x", MaxEnvironBytes-len("PAD=")-1-len(entry)/2)
	r = NewReader(fakeProc(t, "0::/\n", environ(pad, entry)))
	if m, err := r.Read(7); err != nil || m.ServiceName != "" {
		t.Fatalf("cut by the bound: %+v, %v", m, err)
	}
	pad = "PAD=" + strings.Repeat("x", MaxEnvironBytes-len("PAD=")-2-len(entry))
	r = NewReader(fakeProc(t, "0::/\n", environ(pad, entry)))
	if m, err := r.Read(7); err != nil || m.ServiceName != "cut-by-the-bound" {
		t.Fatalf("just within the bound: %+v, %v", m, err)
	}

	// A cgroup file longer than the bound: the line cut short, which
	// would name the outer container, is not read.
	long := strings.Repeat("9:x:/"+strings.Repeat("a", 200)+"\n", MaxCgroupBytes/206)
	long += "8:y:/" + strings.Repeat("b", MaxCgroupBytes-len(long)-len("0::/docker/")-64-6) + "\n"
	long += "0::/docker/" + dockerID + "/docker/" + innerID + "\n"
	if i := strings.Index(long, dockerID); i+len(dockerID) != MaxCgroupBytes {
		t.Fatalf("the bound falls at %d, not after the outer ID", i+len(dockerID))
	}
	r = NewReader(fakeProc(t, long, nil))
	if m, err := r.Read(7); err != nil || m.ID != "" {
		t.Fatalf("cgroup past the bound: %+v, %v", m, err)
	}
}

// BenchmarkRead reads this process's cgroup and environment, as the tracer
// does once for each process it sees.
func BenchmarkRead(b *testing.B) {
	r := NewReader("/proc")
	pid := uint32(os.Getpid())
	b.ReportAllocs()
	for range b.N {
		if _, err := r.Read(pid); err != nil {
			b.Fatal(err)
		}
	}
}
