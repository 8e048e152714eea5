// Package semconv names the OpenTelemetry semantic-convention attribute keys
// stackline's exports carry, so the code that writes them (the reporter)
// and the code that reads them back (local output, checks) cannot drift.
package semconv

// Attribute keys.
const (
	// FrameType is the location attribute naming the kind of a frame
	// ("kernel", "native", "go", ...).
	FrameType = "profile.frame.type"
	// ThreadName and ThreadID are sample attributes.
	ThreadName = "thread.name"
	ThreadID   = "thread.id"
	// OffCPUFraction is an attribute of off-CPU profiles: the share of
	// waits sampled (--off-cpu-fraction), as a decimal string. Their
	// values are scaled up by it; a wait lasted value*fraction.
	OffCPUFraction = "stackline.off_cpu.fraction"
	// BuildIDGNU, BuildIDGo and BuildIDHTL are mapping attributes.
	BuildIDGNU = "process.executable.build_id.gnu"
	BuildIDGo  = "process.executable.build_id.go"
	BuildIDHTL = "process.executable.build_id.htlhash"
	// The rest are resource attributes.
	PID         = "process.pid"
	ExeName     = "process.executable.name"
	ExePath     = "process.executable.path"
	HostName    = "host.name"
	ServiceName = "service.name"
	HostArch    = "host.arch"
	OSType      = "os.type"
	RuntimeName = "process.runtime.name"
	ContainerID = "container.id"
	PodUID      = "k8s.pod.uid"
)

// Values of resource attributes.
const (
	// OSLinux is the os.type of every export.
	OSLinux = "linux"
	// RuntimeGo and RuntimeCPython are the process.runtime.name of Go
	// executables and of CPython interpreters, as the OpenTelemetry SDKs
	// of those languages set it; RuntimeJava that of HotSpot JVMs.
	RuntimeGo      = "go"
	RuntimeCPython = "cpython"
	RuntimeJava    = "java"
	// RuntimeNode is the process.runtime.name of processes running V8
	// (node and other embedders).
	RuntimeNode = "nodejs"
)

// HostArchOf returns the host.arch value of a Go GOARCH: the semantic
// conventions' name where it has one (amd64, arm64, arm32, x86, ppc64,
// s390x), else GOARCH itself.
func HostArchOf(goarch string) string {
	switch goarch {
	case "arm":
		return "arm32"
	case "386":
		return "x86"
	case "ppc64le":
		return "ppc64"
	}
	return goarch
}

// Sample and period types of the profiles.
const (
	// CPU samples: samples/count, period cpu/nanoseconds.
	SampleTypeSamples = "samples"
	UnitCount         = "count"
	PeriodTypeCPU     = "cpu"
	UnitNanoseconds   = "nanoseconds"
	// Off-CPU waits: off_cpu/nanoseconds, the name other profilers use.
	SampleTypeOffCPU = "off_cpu"
)
