// Package agent wires stackline together: it validates the configuration,
// starts the tracer, the reporter and an exporter in order, stops them in
// reverse order so the last interval is exported, and serves self-metrics.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/stackline-dev/stackline/interpreter/hotspot"
	"github.com/stackline-dev/stackline/interpreter/python"
	"github.com/stackline-dev/stackline/interpreter/v8"
	"github.com/stackline-dev/stackline/reporter/otlpexport"
	"github.com/stackline-dev/stackline/reporter/otlphttp"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/tracer"
)

// Config is the agent's configuration; cmd/stackline fills it from flags.
type Config struct {
	// SamplesPerSecond is the sampling frequency per CPU (1..1000).
	SamplesPerSecond int
	// ReporterInterval is how often a profile is exported.
	ReporterInterval time.Duration
	// FrameCacheSize and ExecutableCacheSize bound the reporter's caches.
	FrameCacheSize, ExecutableCacheSize int
	// FrameCacheBytes bounds the names the frame cache holds.
	FrameCacheBytes int64
	// CacheTTL is how long the reporter's frames and executables, the
	// tracer's file identities and the runtimes' name cache entries stay
	// cached unused (0: until evicted for room).
	CacheTTL time.Duration
	// MemoryLimit is the Go runtime's soft memory limit
	// (runtime/debug.SetMemoryLimit); 0 leaves the runtime's own (from
	// GOMEMLIMIT, else none).
	MemoryLimit int64
	// MaxProcs caps the Go runtime's GOMAXPROCS once the agent's start is
	// done (see Agent.settleProcs); 0 leaves the runtime's own.
	MaxProcs int
	// MinGCPercent is the lowest the agent lowers the garbage collector's
	// target percent (GOGC) to once its start is done, when it allocates
	// little (see gcPacing); 0 leaves the percent as set.
	MinGCPercent int
	// SymbolCacheSize bounds the number of files whose symbol tables are
	// held; SymbolCacheBytes bounds their total heap bytes.
	SymbolCacheSize  int
	SymbolCacheBytes int64
	// NoLineInfo turns off reading DWARF line tables (file:line of C, C++
	// and Rust frames); Go frames keep theirs from .gopclntab.
	NoLineInfo bool
	// MaxDWARFBytes bounds the DWARF read for one file's line table; a
	// file with more is named without file:line (counted).
	MaxDWARFBytes int64
	// MaxStackDepth bounds the user frames of a trace (1..128).
	MaxStackDepth int
	// MaxUnwindTableBytes bounds the kernel memory of the unwind tables
	// of all mapped files together (0..16GiB; 0 unwinds by frame pointer
	// only).
	MaxUnwindTableBytes int64
	// NoPython turns off unwinding and naming Python frames (CPython
	// processes then show native frames only).
	NoPython bool
	// PythonCacheBytes bounds the bytes held of Python code objects
	// (names, files, line tables) of all Python processes together,
	// PythonProcessCacheBytes those of one.
	PythonCacheBytes        int64
	PythonProcessCacheBytes int64
	// NoJava turns off unwinding and naming Java frames (HotSpot JVMs
	// then show native frames only).
	NoJava bool
	// JVMCacheBytes bounds the bytes held of Java methods (names, line
	// tables) and compiled code (inlined methods) of all JVMs together,
	// JVMProcessCacheBytes those of one JVM.
	JVMCacheBytes        int64
	JVMProcessCacheBytes int64
	// NoNode turns off unwinding and naming JavaScript frames of V8
	// (node) processes (they then show native frames only).
	NoNode bool
	// NodeCacheBytes bounds the bytes held of JavaScript functions,
	// scripts and code (names, line ends, position tables) of all V8
	// processes together, NodeProcessCacheBytes those of one.
	NodeCacheBytes        int64
	NodeProcessCacheBytes int64
	// RingBufferSize is the eBPF ring buffer's size in bytes; 0 sizes it
	// from the sampling rate and the number of CPUs (AutoRingBufferSize).
	RingBufferSize int
	// OffCPU turns on off-CPU profiling: where threads wait, and for
	// how long (Linux 6.16 or later).
	OffCPU bool
	// OffCPUThreshold is the shortest wait recorded (0..1m).
	OffCPUThreshold time.Duration
	// OffCPUFraction is the share of threads blocking that are sampled,
	// within (0, 1].
	OffCPUFraction float64
	// CollectionAgent is the OTLP endpoint: host:port for OTLP/gRPC, or
	// an http:// or https:// URL for OTLP/HTTP (a URL without a path gets
	// the profiles path, /v1development/profiles). Empty means local
	// output to OutputDir.
	CollectionAgent string
	// OTLPProtocol is grpc or http/protobuf; empty chooses from the form
	// of CollectionAgent. With grpc, a URL's scheme says whether TLS is
	// used (http: plaintext).
	OTLPProtocol string
	// DisableTLS sends to a host:port CollectionAgent over gRPC without
	// TLS.
	DisableTLS bool
	// OTLPHeaders are sent with every export (HTTP headers or gRPC
	// metadata).
	OTLPHeaders map[string]string
	// OTLPCompression is gzip or none.
	OTLPCompression string
	// TLSCAFile holds the PEM certificates that verify the backend,
	// instead of the system's roots; TLSCertFile and TLSKeyFile are the
	// client's certificate and key for mutual TLS.
	TLSCAFile, TLSCertFile, TLSKeyFile string
	// ResourceAttributes are added to every resource
	// (OTEL_RESOURCE_ATTRIBUTES); the attributes stackline sets itself
	// win on a clash.
	ResourceAttributes map[string]string
	// SendQueueSize is how many exports are held while the backend is
	// unreachable.
	SendQueueSize int
	// ExportTimeout bounds one export RPC.
	ExportTimeout time.Duration
	// ShutdownTimeout bounds the final flush on SIGTERM/SIGINT.
	ShutdownTimeout time.Duration
	// OutputDir receives pprof and folded files when no endpoint is set.
	OutputDir string
	// HostName and ServiceName are resource attributes.
	HostName, ServiceName string
	// Demangle is the C++/Rust demangling style: none, simple or full.
	Demangle string
	// SystemNames sends mangled C++ and Rust names to the backend as
	// functions' system names; local files always have them.
	SystemNames bool
	// LineAddresses sends the instruction address of frames named down
	// to a source line to the backend; local files always have them.
	LineAddresses bool
	// MetricsAddress serves Prometheus self-metrics at /metrics; empty
	// turns the server off.
	MetricsAddress string
	// HTTPAddress serves the live flame graph page (--http); empty turns
	// it off. It may equal MetricsAddress: one server serves both.
	HTTPAddress string
	// HTTPHistory is how long the page keeps intervals (--http-history).
	HTTPHistory time.Duration
	// HTTPMaxStacks bounds the distinct stacks the page keeps
	// (--http-max-stacks).
	HTTPMaxStacks int
	// ProcRoot and SysRoot are where proc and sysfs are mounted.
	ProcRoot, SysRoot string
	// Version is the agent's version string.
	Version string
	// Logger receives the agent's logs.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults the flags start from.
func DefaultConfig() Config {
	return Config{
		SamplesPerSecond:        19,
		ReporterInterval:        15 * time.Second,
		FrameCacheSize:          16384,
		ExecutableCacheSize:     4096,
		FrameCacheBytes:         8 << 20,
		CacheTTL:                time.Minute,
		MemoryLimit:             40 << 20,
		MaxProcs:                1,
		MinGCPercent:            20,
		SymbolCacheSize:         256,
		SymbolCacheBytes:        16 << 20,
		MaxDWARFBytes:           4 << 20,
		PythonCacheBytes:        python.DefaultGlobalCacheBytes,
		PythonProcessCacheBytes: python.DefaultProcessCacheBytes,
		JVMCacheBytes:           hotspot.DefaultCacheConfig.MaxBytes,
		JVMProcessCacheBytes:    hotspot.DefaultCacheConfig.MaxProcessBytes,
		NodeCacheBytes:          v8.DefaultGlobalCacheBytes,
		NodeProcessCacheBytes:   v8.DefaultProcessCacheBytes,
		MaxStackDepth:           tracer.MaxStackDepth,
		MaxUnwindTableBytes:     64 << 20,
		OffCPUThreshold:         time.Millisecond,
		OffCPUFraction:          0.1,
		SendQueueSize:           60,
		OTLPCompression:         "gzip",
		ExportTimeout:           10 * time.Second,
		ShutdownTimeout:         10 * time.Second,
		OutputDir:               "./stackline-profiles",
		Demangle:                "simple",
		ProcRoot:                "/proc",
		SysRoot:                 "/sys",
		HTTPHistory:             15 * time.Minute,
		HTTPMaxStacks:           50_000,
	}
}

// Validate checks every field and reports all problems at once, each in
// terms of its command-line flag.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if c.SamplesPerSecond < tracer.MinSamplesPerSecond || c.SamplesPerSecond > tracer.MaxSamplesPerSecond {
		bad("samples-per-second", "%d is out of range %d..%d", c.SamplesPerSecond, tracer.MinSamplesPerSecond, tracer.MaxSamplesPerSecond)
	}
	if c.ReporterInterval < time.Second || c.ReporterInterval > time.Hour {
		bad("reporter-interval", "%v is out of range 1s..1h", c.ReporterInterval)
	}
	if c.FrameCacheSize < 1 || c.FrameCacheSize > 1<<24 {
		bad("frame-cache-size", "%d is out of range 1..%d", c.FrameCacheSize, 1<<24)
	}
	if c.ExecutableCacheSize < 1 || c.ExecutableCacheSize > 1<<20 {
		bad("executable-cache-size", "%d is out of range 1..%d", c.ExecutableCacheSize, 1<<20)
	}
	if c.FrameCacheBytes < 0 || c.FrameCacheBytes > 1<<34 {
		bad("frame-cache-bytes", "%d is out of range 0..16GiB", c.FrameCacheBytes)
	}
	if c.CacheTTL < 0 || c.CacheTTL > 24*time.Hour {
		bad("cache-ttl", "%v is out of range 0..24h", c.CacheTTL)
	}
	if c.MemoryLimit != 0 && (c.MemoryLimit < 16<<20 || c.MemoryLimit > 1<<40) {
		bad("memory-limit", "%d is out of range 16MiB..1TiB (or 0)", c.MemoryLimit)
	}
	if c.MaxProcs < 0 || c.MaxProcs > 1<<10 {
		bad("max-procs", "%d is out of range 0..1024", c.MaxProcs)
	}
	if c.MinGCPercent != 0 && (c.MinGCPercent < 10 || c.MinGCPercent > 100) {
		bad("min-gc-percent", "%d is out of range 10..100 (or 0)", c.MinGCPercent)
	}
	if c.SymbolCacheSize < 1 || c.SymbolCacheSize > 1<<16 {
		bad("symbol-cache-size", "%d is out of range 1..%d", c.SymbolCacheSize, 1<<16)
	}
	if c.SymbolCacheBytes < 1<<20 || c.SymbolCacheBytes > 1<<34 {
		bad("symbol-cache-bytes", "%d is out of range 1MiB..16GiB", c.SymbolCacheBytes)
	}
	if c.OffCPUThreshold < 0 || c.OffCPUThreshold > tracer.MaxOffCPUThreshold {
		bad("off-cpu-threshold", "%v is out of range 0..%v", c.OffCPUThreshold, tracer.MaxOffCPUThreshold)
	}
	if !(c.OffCPUFraction > 0 && c.OffCPUFraction <= 1) {
		bad("off-cpu-fraction", "%v is out of range (0, 1]", c.OffCPUFraction)
	}
	if c.PythonCacheBytes < 1<<16 || c.PythonCacheBytes > 1<<34 {
		bad("python-cache-bytes", "%d is out of range 64KiB..16GiB", c.PythonCacheBytes)
	}
	if c.PythonProcessCacheBytes < 1<<16 || c.PythonProcessCacheBytes > c.PythonCacheBytes {
		bad("python-process-cache-bytes", "%d is out of range 64KiB..--python-cache-bytes", c.PythonProcessCacheBytes)
	}
	if c.JVMCacheBytes < 1<<16 || c.JVMCacheBytes > 1<<34 {
		bad("jvm-cache-bytes", "%d is out of range 64KiB..16GiB", c.JVMCacheBytes)
	}
	if c.JVMProcessCacheBytes < 1<<16 || c.JVMProcessCacheBytes > c.JVMCacheBytes {
		bad("jvm-process-cache-bytes", "%d is out of range 64KiB..--jvm-cache-bytes", c.JVMProcessCacheBytes)
	}
	if c.NodeCacheBytes < 1<<16 || c.NodeCacheBytes > 1<<34 {
		bad("node-cache-bytes", "%d is out of range 64KiB..16GiB", c.NodeCacheBytes)
	}
	if c.NodeProcessCacheBytes < 1<<16 || c.NodeProcessCacheBytes > c.NodeCacheBytes {
		bad("node-process-cache-bytes", "%d is out of range 64KiB..--node-cache-bytes", c.NodeProcessCacheBytes)
	}
	if c.MaxDWARFBytes < 0 || c.MaxDWARFBytes > 1<<34 {
		bad("max-dwarf-bytes", "%d is out of range 0..16GiB", c.MaxDWARFBytes)
	}
	if c.MaxStackDepth < 1 || c.MaxStackDepth > tracer.MaxStackDepth {
		bad("max-stack-depth", "%d is out of range 1..%d", c.MaxStackDepth, tracer.MaxStackDepth)
	}
	if c.MaxUnwindTableBytes < 0 || c.MaxUnwindTableBytes > 1<<34 {
		bad("max-unwind-table-bytes", "%d is out of range 0..16GiB", c.MaxUnwindTableBytes)
	}
	if c.RingBufferSize != 0 && (c.RingBufferSize < 1<<16 || c.RingBufferSize > 1<<30 || c.RingBufferSize&(c.RingBufferSize-1) != 0) {
		bad("ring-buffer-size", "%d must be 0 (auto) or a power of two within 64KiB..1GiB", c.RingBufferSize)
	}
	if c.SendQueueSize < 1 || c.SendQueueSize > 100000 {
		bad("send-queue-size", "%d is out of range 1..100000", c.SendQueueSize)
	}
	if c.ExportTimeout <= 0 {
		bad("export-timeout", "%v must be positive", c.ExportTimeout)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", "%v must be positive", c.ShutdownTimeout)
	}
	if c.CollectionAgent != "" {
		if _, err := c.exportTarget(); err != nil {
			bad("collection-agent", "%v", err)
		}
	} else if strings.TrimSpace(c.OutputDir) == "" {
		bad("output-dir", "must be set when --collection-agent is not")
	}
	switch c.OTLPProtocol {
	case "", ProtocolGRPC, ProtocolHTTP:
	case "http/json":
		bad("otlp-protocol", "%q is not supported: stackline sends binary protobuf; use %s or %s", c.OTLPProtocol, ProtocolHTTP, ProtocolGRPC)
	default:
		bad("otlp-protocol", "%q: want %s or %s", c.OTLPProtocol, ProtocolGRPC, ProtocolHTTP)
	}
	if c.DisableTLS && c.CollectionAgent == "" {
		bad("disable-tls", "only applies with --collection-agent")
	}
	if err := checkHeaders(c.OTLPHeaders); err != nil {
		bad("otlp-header", "%v", err)
	}
	if c.OTLPCompression != "gzip" && c.OTLPCompression != "none" {
		bad("otlp-compression", "%q: want gzip or none", c.OTLPCompression)
	}
	errs = append(errs, checkTLSFiles(c.tlsFiles(), "--tls-ca-file", "--tls-cert-file", "--tls-key-file")...)
	if _, err := symbolizer.ParseDemangleMode(c.Demangle); err != nil {
		bad("demangle", "%v", err)
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			bad("metrics-address", "%q is not host:port", c.MetricsAddress)
		}
	}
	if c.HTTPAddress != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddress); err != nil {
			bad("http", "%q is not host:port", c.HTTPAddress)
		}
	}
	if c.HTTPHistory < time.Minute || c.HTTPHistory > 24*time.Hour {
		bad("http-history", "%v out of range (1m..24h)", c.HTTPHistory)
	}
	if c.HTTPMaxStacks < 1000 || c.HTTPMaxStacks > 10_000_000 {
		bad("http-max-stacks", "%d out of range (1000..10000000)", c.HTTPMaxStacks)
	}
	return errors.Join(errs...)
}

// exportTarget is where and how exports are sent.
type exportTarget struct {
	protocol string // ProtocolGRPC or ProtocolHTTP
	// address is host:port for gRPC, the full URL for HTTP.
	address  string
	insecure bool // plaintext
}

// exportTarget resolves CollectionAgent and OTLPProtocol.
func (c *Config) exportTarget() (exportTarget, error) {
	ep := c.CollectionAgent
	if !strings.Contains(ep, "://") {
		if _, port, err := net.SplitHostPort(ep); err != nil || port == "" {
			return exportTarget{}, fmt.Errorf("%q is neither host:port (OTLP/gRPC) nor an http:// or https:// URL (OTLP/HTTP)", ep)
		}
		if c.OTLPProtocol == ProtocolHTTP {
			return exportTarget{}, fmt.Errorf("%q: OTLP/HTTP needs an http:// or https:// URL", ep)
		}
		return exportTarget{protocol: ProtocolGRPC, address: ep, insecure: c.DisableTLS}, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return exportTarget{}, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return exportTarget{}, fmt.Errorf("%q: scheme must be http or https", ep)
	}
	if u.Host == "" {
		return exportTarget{}, fmt.Errorf("%q: no host", ep)
	}
	if c.DisableTLS && u.Scheme == "https" {
		return exportTarget{}, fmt.Errorf("%q is https but --disable-tls is set; use http:// for plaintext", ep)
	}
	insecure := u.Scheme == "http"
	if c.OTLPProtocol == ProtocolGRPC {
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
		}
		return exportTarget{protocol: ProtocolGRPC, address: host, insecure: insecure}, nil
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = otlphttp.ProfilesPath
	}
	return exportTarget{protocol: ProtocolHTTP, address: u.String(), insecure: insecure}, nil
}

func (c *Config) tlsFiles() otlpexport.TLSFiles {
	return otlpexport.TLSFiles{CA: c.TLSCAFile, Cert: c.TLSCertFile, Key: c.TLSKeyFile}
}

// AutoRingBufferSize returns the ring buffer size used when none is set:
// room for about two seconds of the largest traces from every CPU, so a
// tracer that stalls briefly (parsing a large binary's symbols) loses
// nothing, as a power of two within 256 KiB..256 MiB. A larger buffer
// only costs memory: its pages are mapped twice into the agent.
func AutoRingBufferSize(samplesPerSecond, cpus int) int {
	const perTrace = 1024 // bytes; a 60-frame trace, most are smaller
	want := samplesPerSecond * cpus * perTrace * 2
	size := 256 << 10
	for size < want && size < 256<<20 {
		size <<= 1
	}
	return size
}
