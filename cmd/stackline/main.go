// Command stackline is a whole-system CPU profiler for Linux: it samples
// every CPU with eBPF and sends OTLP profiles, or writes pprof and folded
// files when no backend is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/stackline-dev/stackline/agent"
	"github.com/stackline-dev/stackline/tracer"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// gcPercent is the garbage collector's target unless GOGC says otherwise.
// The agent's live heap is small and its garbage comes in bursts (symbol
// and unwind tables built at start and for new files): collecting at +50%
// rather than Go's default +100% keeps its resident memory about 20 MB
// lower for a few tenths of a percent of one core (README, "Flags").
const gcPercent = 50

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	opts, err := parse(args, os.LookupEnv, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errReported):
		return 2
	case err != nil:
		fmt.Fprintln(os.Stderr, "stackline:", err)
		return 2
	}
	cfg := opts.cfg
	if os.Getenv("GOMEMLIMIT") != "" {
		cfg.MemoryLimit = 0 // the runtime read it
	}
	if os.Getenv("GOMAXPROCS") != "" {
		cfg.MaxProcs = 0 // the runtime read it
	}
	if os.Getenv("GOGC") != "" {
		cfg.MinGCPercent = 0 // the runtime read it
	}
	if opts.showVersion {
		fmt.Println("stackline", version)
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(opts.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "stackline: --log-level: %v\n", err)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	a, err := agent.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stackline:", err)
		if errors.Is(err, tracer.ErrPrivileges) {
			return 77
		}
		return 1
	}
	if cfg.CollectionAgent != "" {
		protocol := cfg.OTLPProtocol
		if protocol == "" {
			protocol = agent.ProtocolGRPC
			if strings.Contains(cfg.CollectionAgent, "://") {
				protocol = agent.ProtocolHTTP
			}
		}
		cfg.Logger.Info("profiling", "collection_agent", cfg.CollectionAgent, "protocol", protocol,
			"disable_tls", cfg.DisableTLS, "headers", len(cfg.OTLPHeaders))
	} else {
		cfg.Logger.Info("profiling", "output_dir", cfg.OutputDir)
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "stackline:", err)
		return 1
	}
	return 0
}

// options is what the command line and the environment ask for.
type options struct {
	cfg         agent.Config
	logLevel    string
	showVersion bool
}

// errReported is returned by parse for an error the flag package has
// already printed with the usage.
var errReported = errors.New("invalid command line")

// parse reads the configuration from args and from the environment through
// lookup: flags win over STACKLINE_* variables, which win over the OTEL_*
// ones. It returns flag.ErrHelp for -h.
func parse(args []string, lookup func(string) (string, bool), output io.Writer) (options, error) {
	o := options{cfg: agent.DefaultConfig(), logLevel: "info"}
	o.cfg.Version = version
	fs := newFlagSet(&o, output)
	if err := applyEnv(fs, lookup); err != nil {
		return options{}, err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, errReported
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if err := agent.ApplyOTELEnv(&o.cfg, lookup, func(name string) bool { return explicit[name] }); err != nil {
		return options{}, err
	}
	return o, nil
}

// newFlagSet defines every command-line flag, with o's values as defaults
// and o as their destination.
func newFlagSet(o *options, output io.Writer) *flag.FlagSet {
	cfg := &o.cfg
	fs := flag.NewFlagSet("stackline", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.IntVar(&cfg.SamplesPerSecond, "samples-per-second", cfg.SamplesPerSecond, "samples per second per CPU (1..1000)")
	fs.DurationVar(&cfg.ReporterInterval, "reporter-interval", cfg.ReporterInterval, "how often a profile is exported (1s..1h)")
	fs.IntVar(&cfg.FrameCacheSize, "frame-cache-size", cfg.FrameCacheSize, "frames whose names are cached")
	fs.IntVar(&cfg.ExecutableCacheSize, "executable-cache-size", cfg.ExecutableCacheSize, "executables whose metadata is cached")
	fs.Int64Var(&cfg.FrameCacheBytes, "frame-cache-bytes", cfg.FrameCacheBytes, "bytes of frame names cached (0..16GiB; 0: bounded by --frame-cache-size only)")
	fs.DurationVar(&cfg.CacheTTL, "cache-ttl", cfg.CacheTTL, "how long a frame, executable, file identity or runtime name entry stays cached unused (0..24h; 0: until evicted for room)")
	fs.Int64Var(&cfg.MemoryLimit, "memory-limit", cfg.MemoryLimit, "Go runtime soft memory limit in bytes (16MiB..1TiB; 0: GOMEMLIMIT's, else none)")
	fs.IntVar(&cfg.MaxProcs, "max-procs", cfg.MaxProcs, "most CPUs the agent's Go code runs on at once once its start is done (0..1024; 0: the runtime's default)")
	fs.IntVar(&cfg.MinGCPercent, "min-gc-percent", cfg.MinGCPercent, "lowest garbage collector target percent (GOGC) the agent lowers it to after its start when it allocates little (10..100; 0: never lowered)")
	fs.IntVar(&cfg.SymbolCacheSize, "symbol-cache-size", cfg.SymbolCacheSize, "files whose symbol tables are held")
	fs.Int64Var(&cfg.SymbolCacheBytes, "symbol-cache-bytes", cfg.SymbolCacheBytes, "total bytes of symbol tables held (1MiB..16GiB)")
	fs.BoolVar(&cfg.NoLineInfo, "no-line-info", cfg.NoLineInfo, "do not read DWARF line tables (file:line of C, C++ and Rust frames)")
	fs.Int64Var(&cfg.MaxDWARFBytes, "max-dwarf-bytes", cfg.MaxDWARFBytes, "largest DWARF read for one file's line table; larger files are named without file:line (0: none)")
	fs.IntVar(&cfg.MaxStackDepth, "max-stack-depth", cfg.MaxStackDepth, "user frames per stack (1..128)")
	fs.Int64Var(&cfg.MaxUnwindTableBytes, "max-unwind-table-bytes", cfg.MaxUnwindTableBytes, "kernel memory for the unwind tables of all mapped files (0..16GiB; 0: frame pointers only)")
	fs.BoolVar(&cfg.NoPython, "no-python", cfg.NoPython, "do not unwind and name Python frames (CPython 3.8-3.13)")
	fs.BoolVar(&cfg.OffCPU, "off-cpu", cfg.OffCPU, "also profile where threads wait and for how long (off-CPU; Linux 6.16+)")
	fs.DurationVar(&cfg.OffCPUThreshold, "off-cpu-threshold", cfg.OffCPUThreshold, "shortest off-CPU wait recorded (0..1m)")
	fs.Float64Var(&cfg.OffCPUFraction, "off-cpu-fraction", cfg.OffCPUFraction, "share of threads blocking that are sampled for off-CPU profiling, within (0, 1]")
	fs.Int64Var(&cfg.PythonCacheBytes, "python-cache-bytes", cfg.PythonCacheBytes, "bytes held of Python function names, files and line tables, all Python processes together")
	fs.Int64Var(&cfg.PythonProcessCacheBytes, "python-process-cache-bytes", cfg.PythonProcessCacheBytes, "bytes held of Python function names, files and line tables, per Python process")
	fs.BoolVar(&cfg.NoJava, "no-java", cfg.NoJava, "do not unwind and name Java frames (HotSpot JVMs, JDK 17-25)")
	fs.Int64Var(&cfg.JVMCacheBytes, "jvm-cache-bytes", cfg.JVMCacheBytes, "bytes held of Java method names, line tables and inlined methods, all JVMs together")
	fs.Int64Var(&cfg.JVMProcessCacheBytes, "jvm-process-cache-bytes", cfg.JVMProcessCacheBytes, "bytes held of Java method names, line tables and inlined methods, per JVM")
	fs.BoolVar(&cfg.NoNode, "no-node", cfg.NoNode, "do not unwind and name JavaScript frames (node 20-24, V8)")
	fs.Int64Var(&cfg.NodeCacheBytes, "node-cache-bytes", cfg.NodeCacheBytes, "bytes held of JavaScript function names, scripts, line ends and position tables, all node processes together")
	fs.Int64Var(&cfg.NodeProcessCacheBytes, "node-process-cache-bytes", cfg.NodeProcessCacheBytes, "bytes held of JavaScript function names, scripts, line ends and position tables, per node process")
	fs.IntVar(&cfg.RingBufferSize, "ring-buffer-size", cfg.RingBufferSize, "eBPF ring buffer bytes (power of two, 64KiB..1GiB); 0 sizes it from the rate and CPU count")
	fs.StringVar(&cfg.CollectionAgent, "collection-agent", cfg.CollectionAgent, "OTLP endpoint: host:port for OTLP/gRPC, http(s)://host:port[/path] for OTLP/HTTP; empty writes local files to --output-dir")
	fs.StringVar(&cfg.OTLPProtocol, "otlp-protocol", cfg.OTLPProtocol, "grpc or http/protobuf (default: from the form of --collection-agent)")
	fs.BoolVar(&cfg.DisableTLS, "disable-tls", cfg.DisableTLS, "send to a host:port --collection-agent over gRPC without TLS")
	fs.Var(headerFlag{&cfg.OTLPHeaders}, "otlp-header", "header key=value sent with every export (repeatable; the value is taken literally)")
	fs.StringVar(&cfg.OTLPCompression, "otlp-compression", cfg.OTLPCompression, "compression of exports: gzip or none")
	fs.StringVar(&cfg.TLSCAFile, "tls-ca-file", cfg.TLSCAFile, "PEM certificates that verify the backend (default: the system's roots)")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", cfg.TLSCertFile, "PEM client certificate for mutual TLS (with --tls-key-file)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key-file", cfg.TLSKeyFile, "PEM private key of --tls-cert-file")
	fs.IntVar(&cfg.SendQueueSize, "send-queue-size", cfg.SendQueueSize, "exports held while the backend is unreachable")
	fs.DurationVar(&cfg.ExportTimeout, "export-timeout", cfg.ExportTimeout, "timeout of one export RPC")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "time allowed for the final flush on SIGTERM/SIGINT")
	fs.StringVar(&cfg.OutputDir, "output-dir", cfg.OutputDir, "directory for pprof and folded files when no endpoint is set")
	fs.StringVar(&cfg.HostName, "host-name", cfg.HostName, "host.name resource attribute (default: the hostname)")
	fs.StringVar(&cfg.ServiceName, "service-name", cfg.ServiceName, "service.name resource attribute (default: unknown_service:<executable>)")
	fs.StringVar(&cfg.Demangle, "demangle", cfg.Demangle, "C++/Rust demangling: none, simple or full")
	fs.BoolVar(&cfg.SystemNames, "system-names", cfg.SystemNames, "also send C++/Rust names as the binary spells them (mangled) to the backend, as functions' system names")
	fs.BoolVar(&cfg.LineAddresses, "line-addresses", cfg.LineAddresses, "also send the instruction address of frames named down to a source line to the backend (without it, one location per function, file and line)")
	fs.StringVar(&cfg.MetricsAddress, "metrics-address", cfg.MetricsAddress, "serve Prometheus self-metrics at http://ADDRESS/metrics (e.g. 127.0.0.1:9464)")
	fs.StringVar(&cfg.HTTPAddress, "http", cfg.HTTPAddress, "serve a live flame graph at http://ADDRESS/ (e.g. 127.0.0.1:8080; may equal --metrics-address)")
	fs.DurationVar(&cfg.HTTPHistory, "http-history", cfg.HTTPHistory, "how long the flame graph page keeps intervals (1m..24h)")
	fs.IntVar(&cfg.HTTPMaxStacks, "http-max-stacks", cfg.HTTPMaxStacks, "distinct stacks the flame graph page keeps at most (1000..10000000); the oldest intervals go first")
	fs.StringVar(&cfg.ProcRoot, "proc-root", cfg.ProcRoot, "where proc is mounted")
	fs.StringVar(&cfg.SysRoot, "sys-root", cfg.SysRoot, "where sysfs is mounted")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn or error")
	fs.BoolVar(&o.showVersion, "version", o.showVersion, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: stackline [flags]\n\nEvery flag can also be set by an environment variable: STACKLINE_ and the\nflag's name in upper case with - as _ (e.g. STACKLINE_COLLECTION_AGENT).\nThe standard OTEL_EXPORTER_OTLP_* variables, OTEL_SERVICE_NAME and\nOTEL_RESOURCE_ATTRIBUTES are read too; flags and STACKLINE_* win over them.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

// applyEnv sets each flag from STACKLINE_<NAME> when that variable is set;
// flags on the command line still win. A flag set this way counts as set
// (fs.Visit lists it), so that it wins over the OTEL_* variables.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	for _, flagName := range names {
		name := "STACKLINE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
		if v, ok := lookup(name); ok {
			if err := fs.Set(flagName, v); err != nil {
				return fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	}
	return nil
}

// headerFlag is the repeatable --otlp-header key=value.
type headerFlag struct{ h *map[string]string }

func (f headerFlag) String() string {
	if f.h == nil || *f.h == nil {
		return ""
	}
	keys := make([]string, 0, len(*f.h))
	for k := range *f.h {
		keys = append(keys, k+"=...")
	}
	return strings.Join(keys, ",")
}

func (f headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("%q: want key=value", s)
	}
	if *f.h == nil {
		*f.h = map[string]string{}
	}
	(*f.h)[strings.TrimSpace(k)] = v
	return nil
}
