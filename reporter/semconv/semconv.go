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
)
