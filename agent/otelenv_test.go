package agent

import (
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/otlptest"
)

// envOf returns a lookup function over env.
func envOf(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func flagsSet(names ...string) func(string) bool {
	return func(n string) bool {
		for _, x := range names {
			if x == n {
				return true
			}
		}
		return false
	}
}

// TestApplyOTELEnv is the precedence table: the profiles-specific variable
// over the generic one, flags and STACKLINE_* (explicit) over both, the
// generic HTTP endpoint with the profiles path appended, the specific one
// as-is.
func TestApplyOTELEnv(t *testing.T) {
	for _, c := range []struct {
		name     string
		env      map[string]string
		explicit []string
		before   func(*Config)
		check    func(t *testing.T, c Config)
	}{
		{
			name: "generic HTTP endpoint gets the profiles path",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			check: func(t *testing.T, c Config) {
				want(t, c.CollectionAgent, "http://collector:4318/v1development/profiles")
				want(t, c.OTLPProtocol, ProtocolHTTP)
			},
		},
		{
			name: "generic endpoint with a path and a trailing slash",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw.example.com/otlp/"},
			check: func(t *testing.T, c Config) {
				want(t, c.CollectionAgent, "https://gw.example.com/otlp/v1development/profiles")
				want(t, c.OTLPProtocol, ProtocolHTTP) // the specification's default protocol
			},
		},
		{
			name: "profiles endpoint used as-is and wins over the generic one",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":          "http://generic:4318",
				"OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT": "http://specific:9999/custom",
			},
			check: func(t *testing.T, c Config) { want(t, c.CollectionAgent, "http://specific:9999/custom") },
		},
		{
			name: "gRPC with an http URL is plaintext host:port",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			check: func(t *testing.T, c Config) {
				want(t, c.CollectionAgent, "collector:4317")
				want(t, c.DisableTLS, true)
			},
		},
		{
			name: "gRPC with an https URL keeps TLS, the profiles protocol wins",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":          "https://collector",
				"OTEL_EXPORTER_OTLP_PROTOCOL":          "http/protobuf",
				"OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL": "grpc",
			},
			check: func(t *testing.T, c Config) {
				want(t, c.CollectionAgent, "collector:443")
				want(t, c.DisableTLS, false)
				want(t, c.OTLPProtocol, ProtocolGRPC)
			},
		},
		{
			name: "gRPC host:port with INSECURE",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_INSECURE": "true",
			},
			check: func(t *testing.T, c Config) {
				want(t, c.CollectionAgent, "collector:4317")
				want(t, c.DisableTLS, true)
			},
		},
		{
			name:     "the flag wins over the endpoint variables",
			env:      map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
			explicit: []string{"collection-agent"},
			before:   func(c *Config) { c.CollectionAgent = "flag:4317" },
			check: func(t *testing.T, c Config) {
				want(t, c.CollectionAgent, "flag:4317")
				want(t, c.DisableTLS, false)
				want(t, c.OTLPProtocol, "")
			},
		},
		{
			name:     "the protocol variable does not change a flag's host:port into HTTP",
			env:      map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			explicit: []string{"collection-agent"},
			before:   func(c *Config) { c.CollectionAgent = "flag:4317" },
			check: func(t *testing.T, c Config) {
				want(t, c.CollectionAgent, "flag:4317")
				want(t, c.OTLPProtocol, "")
			},
		},
		{
			name: "headers percent-decoded, profiles variant replaces the generic one",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_HEADERS":          "authorization=Bearer%20generic",
				"OTEL_EXPORTER_OTLP_PROFILES_HEADERS": " authorization = Bearer%20x , x-scope=a%3Db%2Cc,,",
			},
			check: func(t *testing.T, c Config) {
				wantMap(t, c.OTLPHeaders, map[string]string{"authorization": "Bearer x", "x-scope": "a=b,c"})
			},
		},
		{
			name:     "--otlp-header wins over the variables",
			env:      map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "authorization=env"},
			explicit: []string{"otlp-header"},
			before:   func(c *Config) { c.OTLPHeaders = map[string]string{"authorization": "flag"} },
			check: func(t *testing.T, c Config) {
				wantMap(t, c.OTLPHeaders, map[string]string{"authorization": "flag"})
			},
		},
		{
			name: "timeout in milliseconds and compression",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT": "1500",
				"OTEL_EXPORTER_OTLP_COMPRESSION": "none",
			},
			check: func(t *testing.T, c Config) {
				want(t, c.ExportTimeout, 1500*time.Millisecond)
				want(t, c.OTLPCompression, "none")
			},
		},
		{
			name:     "--export-timeout and --otlp-compression win",
			env:      map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_COMPRESSION": "none"},
			explicit: []string{"export-timeout", "otlp-compression"},
			check: func(t *testing.T, c Config) {
				want(t, c.ExportTimeout, 10*time.Second)
				want(t, c.OTLPCompression, "gzip")
			},
		},
		{
			name: "service name from OTEL_RESOURCE_ATTRIBUTES, the rest kept",
			env:  map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=checkout,deployment.environment.name=prod%2Ceu,team=a b"},
			check: func(t *testing.T, c Config) {
				want(t, c.ServiceName, "checkout")
				wantMap(t, c.ResourceAttributes, map[string]string{"deployment.environment.name": "prod,eu", "team": "a b"})
			},
		},
		{
			name: "OTEL_SERVICE_NAME wins over the attribute",
			env:  map[string]string{"OTEL_SERVICE_NAME": "api", "OTEL_RESOURCE_ATTRIBUTES": "service.name=checkout"},
			check: func(t *testing.T, c Config) {
				want(t, c.ServiceName, "api")
				wantMap(t, c.ResourceAttributes, nil)
			},
		},
		{
			name:     "--service-name wins over both",
			env:      map[string]string{"OTEL_SERVICE_NAME": "api", "OTEL_RESOURCE_ATTRIBUTES": "service.name=checkout"},
			explicit: []string{"service-name"},
			before:   func(c *Config) { c.ServiceName = "flag" },
			check:    func(t *testing.T, c Config) { want(t, c.ServiceName, "flag") },
		},
		{
			name: "nothing set changes nothing",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "},
			check: func(t *testing.T, c Config) {
				d := DefaultConfig()
				want(t, c.CollectionAgent, "")
				want(t, c.OTLPProtocol, "")
				want(t, c.ExportTimeout, d.ExportTimeout)
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if c.before != nil {
				c.before(&cfg)
			}
			if err := ApplyOTELEnv(&cfg, envOf(c.env), flagsSet(c.explicit...)); err != nil {
				t.Fatal(err)
			}
			c.check(t, cfg)
			if err := cfg.Validate(); err != nil {
				t.Errorf("resulting configuration invalid: %v", err)
			}
		})
	}
}

func want[T comparable](t *testing.T, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func wantMap(t *testing.T, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestApplyOTELEnvErrors: every bad value is refused with the variable's
// name, and all at once.
func TestApplyOTELEnvErrors(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"OTEL_EXPORTER_OTLP_PROTOCOL":          {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		"OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL": {"OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL": "udp"},
		"OTEL_EXPORTER_OTLP_ENDPOINT":          {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
		"OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT": {"OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT": "ftp://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		"OTEL_EXPORTER_OTLP_INSECURE":          {"OTEL_EXPORTER_OTLP_ENDPOINT": "c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "maybe"},
		"OTEL_EXPORTER_OTLP_HEADERS":           {"OTEL_EXPORTER_OTLP_HEADERS": "authorization"},
		"OTEL_EXPORTER_OTLP_PROFILES_HEADERS":  {"OTEL_EXPORTER_OTLP_PROFILES_HEADERS": "bad header=x"},
		"OTEL_EXPORTER_OTLP_TIMEOUT":           {"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"},
		"OTEL_EXPORTER_OTLP_COMPRESSION":       {"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
		"OTEL_RESOURCE_ATTRIBUTES":             {"OTEL_RESOURCE_ATTRIBUTES": "a=%zz"},
		"OTEL_EXPORTER_OTLP_CERTIFICATE":       {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"},
		"OTEL_EXPORTER_OTLP_CLIENT_KEY":        {"OTEL_EXPORTER_OTLP_PROFILES_CLIENT_CERTIFICATE": "/etc/hostname"},
	} {
		cfg := DefaultConfig()
		err := ApplyOTELEnv(&cfg, envOf(env), flagsSet())
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: error %v does not name %s", env, err, name)
		}
	}
}

// TestValidateOTLP checks the OTLP flags' validation and how the endpoint
// is resolved.
func TestValidateOTLP(t *testing.T) {
	certs, err := otlptest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mut      func(*Config)
		protocol string
		address  string
		insecure bool
		err      string // a flag name the error must contain; empty: valid
	}{
		{mut: func(c *Config) { c.CollectionAgent = "collector:4317" }, protocol: ProtocolGRPC, address: "collector:4317"},
		{mut: func(c *Config) { c.CollectionAgent = "collector:4317"; c.DisableTLS = true }, protocol: ProtocolGRPC, address: "collector:4317", insecure: true},
		{mut: func(c *Config) { c.CollectionAgent = "http://collector:4318" }, protocol: ProtocolHTTP, address: "http://collector:4318/v1development/profiles", insecure: true},
		{mut: func(c *Config) { c.CollectionAgent = "https://gw/ingest/profiles" }, protocol: ProtocolHTTP, address: "https://gw/ingest/profiles"},
		{mut: func(c *Config) { c.CollectionAgent = "http://collector:4317"; c.OTLPProtocol = ProtocolGRPC }, protocol: ProtocolGRPC, address: "collector:4317", insecure: true},
		{mut: func(c *Config) { c.CollectionAgent = "collector:4317"; c.OTLPProtocol = ProtocolHTTP }, err: "--collection-agent"},
		{mut: func(c *Config) { c.CollectionAgent = "https://gw"; c.DisableTLS = true }, err: "--collection-agent"},
		{mut: func(c *Config) { c.CollectionAgent = "ftp://gw" }, err: "--collection-agent"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.OTLPProtocol = "http/json" }, err: "--otlp-protocol"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.OTLPCompression = "zstd" }, err: "--otlp-compression"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.OTLPHeaders = map[string]string{"a b": "x"} }, err: "--otlp-header"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.OTLPHeaders = map[string]string{"x": "line\nbreak"} }, err: "--otlp-header"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.OTLPHeaders = map[string]string{"Content-Type": "x"} }, err: "--otlp-header"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.TLSCAFile = "/nonexistent" }, err: "--tls-ca-file"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.TLSCAFile = notPEM }, err: "--tls-ca-file"},
		{mut: func(c *Config) { c.CollectionAgent = "c:1"; c.TLSCertFile = certs.ClientCertFile }, err: "--tls-key-file"},
		{mut: func(c *Config) {
			c.CollectionAgent = "c:1"
			c.TLSCertFile = certs.ClientCertFile
			c.TLSKeyFile = certs.ServerKeyFile
		}, err: "--tls-cert-file"},
		{
			mut: func(c *Config) {
				c.CollectionAgent = "https://127.0.0.1:1"
				c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile = certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile
			},
			protocol: ProtocolHTTP, address: "https://127.0.0.1:1/v1development/profiles",
		},
	} {
		cfg := DefaultConfig()
		c.mut(&cfg)
		err := cfg.Validate()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q %q: error %v does not name %s", cfg.CollectionAgent, cfg.OTLPProtocol, err, c.err)
			} else {
				t.Logf("%v", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", cfg.CollectionAgent, err)
			continue
		}
		tg, err := cfg.exportTarget()
		if err != nil {
			t.Fatal(err)
		}
		if tg.protocol != c.protocol || tg.address != c.address || tg.insecure != c.insecure {
			t.Errorf("%q %q: target %+v, want %s %s insecure=%v", cfg.CollectionAgent, cfg.OTLPProtocol, tg, c.protocol, c.address, c.insecure)
		}
	}
}

func TestParseKeyValues(t *testing.T) {
	for in, want := range map[string]map[string]string{
		"":                         {},
		"a=1":                      {"a": "1"},
		" a = 1 , b=2,":            {"a": "1", "b": "2"},
		"k=v=w":                    {"k": "v=w"},
		"authorization=Bearer%20x": {"authorization": "Bearer x"},
		"a%2Cb=c%3Dd":              {"a,b": "c=d"},
		"a=1,a=2":                  {"a": "2"},
		"empty=":                   {"empty": ""},
	} {
		got, err := ParseKeyValues(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if !maps.Equal(got, want) {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{"novalue", "=x", "a=%g1", "%zz=1", " = "} {
		if got, err := ParseKeyValues(in); err == nil {
			t.Errorf("%q: %q, want an error", in, got)
		}
	}
}

// FuzzParseKeyValues: any input parses or fails cleanly, and what parses
// encodes back to the same pairs.
func FuzzParseKeyValues(f *testing.F) {
	for _, s := range []string{"", "a=1", "authorization=Bearer%20x,x-scope=a%3Db", " a = 1 ,,b=", "k=v=w", "%zz=1", "a=%", "é=ü%C3%A9", "=,=,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kv, err := ParseKeyValues(s)
		if err != nil {
			return
		}
		esc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
		var parts []string
		for k, v := range kv {
			if k == "" {
				t.Fatalf("%q: empty key", s)
			}
			parts = append(parts, esc(k)+"="+esc(v))
		}
		again, err := ParseKeyValues(strings.Join(parts, ","))
		if err != nil {
			t.Fatalf("%q: re-encoded %q does not parse: %v", s, parts, err)
		}
		if !maps.Equal(kv, again) {
			t.Fatalf("%q: parsed %q, re-encoded and parsed %q", s, kv, again)
		}
		_ = checkHeaders(kv) // must not panic
	})
}
