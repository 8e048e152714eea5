package agent

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestValidateNamesTheFlag: each value out of range is refused with the
// flag's name, and all problems are reported at once.
func TestValidateNamesTheFlag(t *testing.T) {
	for flag, mut := range map[string]func(*Config){
		"--samples-per-second":     func(c *Config) { c.SamplesPerSecond = 0 },
		"--reporter-interval":      func(c *Config) { c.ReporterInterval = time.Millisecond },
		"--frame-cache-size":       func(c *Config) { c.FrameCacheSize = 0 },
		"--executable-cache-size":  func(c *Config) { c.ExecutableCacheSize = -1 },
		"--symbol-cache-size":      func(c *Config) { c.SymbolCacheSize = 0 },
		"--max-stack-depth":        func(c *Config) { c.MaxStackDepth = 129 },
		"--max-unwind-table-bytes": func(c *Config) { c.MaxUnwindTableBytes = -1 },
		"--symbol-cache-bytes":     func(c *Config) { c.SymbolCacheBytes = 10 },
		"--max-dwarf-bytes":        func(c *Config) { c.MaxDWARFBytes = -1 },
		"--ring-buffer-size":       func(c *Config) { c.RingBufferSize = 100000 },
		"--send-queue-size":        func(c *Config) { c.SendQueueSize = 0 },
		"--collection-agent":       func(c *Config) { c.CollectionAgent = "no-port" },
		"--disable-tls":            func(c *Config) { c.DisableTLS = true },
		"--demangle":               func(c *Config) { c.Demangle = "fancy" },
		"--metrics-address":        func(c *Config) { c.MetricsAddress = "9464" },
		"--output-dir":             func(c *Config) { c.OutputDir = " " },
		"--off-cpu-threshold":      func(c *Config) { c.OffCPUThreshold = -time.Second },
		"--off-cpu-fraction":       func(c *Config) { c.OffCPUFraction = 0 },
		"--min-gc-percent":         func(c *Config) { c.MinGCPercent = 5 },
	} {
		cfg := DefaultConfig()
		mut(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s: error %v does not name the flag", flag, err)
		}
	}
	cfg := DefaultConfig()
	cfg.SamplesPerSecond = 1001
	cfg.MaxStackDepth = 0
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "--samples-per-second") || !strings.Contains(err.Error(), "--max-stack-depth") {
		t.Errorf("not every problem reported: %v", err)
	}
	if !strings.Contains(err.Error(), "1..1000") {
		t.Errorf("range not shown: %v", err)
	}
}

func TestAutoRingBufferSize(t *testing.T) {
	for _, c := range []struct{ rate, cpus, want int }{
		{19, 2, 256 << 10},
		{1000, 2, 4 << 20},
		{1000, 256, 512 << 20 >> 1},
	} {
		if got := AutoRingBufferSize(c.rate, c.cpus); got != c.want {
			t.Errorf("rate %d, %d CPUs: %d, want %d", c.rate, c.cpus, got, c.want)
		}
	}
}
