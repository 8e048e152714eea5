package agent

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/stackline-dev/stackline/reporter/otlpexport"
	"github.com/stackline-dev/stackline/reporter/otlphttp"
)

// Protocols of --otlp-protocol and OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// ApplyOTELEnv sets the fields of c that the standard OpenTelemetry exporter
// variables configure (OTEL_EXPORTER_OTLP_*, each overridden by its
// OTEL_EXPORTER_OTLP_PROFILES_* variant, OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES), from lookup, which is os.LookupEnv outside
// tests. A field whose flag explicit reports as set (on the command line or
// through a STACKLINE_* variable) keeps its value. Errors name the
// variable.
func ApplyOTELEnv(c *Config, lookup func(string) (string, bool), explicit func(flag string) bool) error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	// get returns the signal-specific variable's value if set, the
	// generic one's otherwise, and the name of the one used.
	get := func(suffix string) (string, string, bool) {
		name := "OTEL_EXPORTER_OTLP_PROFILES_" + suffix
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), name, true
		}
		name = "OTEL_EXPORTER_OTLP_" + suffix
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), name, true
		}
		return "", "", false
	}

	// The protocol variables apply to the endpoint variables only: an
	// endpoint given as a flag keeps its own meaning (host:port is gRPC,
	// a URL is HTTP) unless --otlp-protocol says otherwise.
	protocol := c.OTLPProtocol
	if v, name, ok := get("PROTOCOL"); ok && !explicit("otlp-protocol") && !explicit("collection-agent") {
		switch v {
		case ProtocolGRPC, ProtocolHTTP:
			protocol = v
		case "http/json":
			bad(name, "%q is not supported: stackline sends binary protobuf; use %s or %s", v, ProtocolHTTP, ProtocolGRPC)
		default:
			bad(name, "%q: want %s or %s", v, ProtocolGRPC, ProtocolHTTP)
		}
	}

	if !explicit("collection-agent") {
		endpoint, name, signal := "", "", false
		if v, n, ok := get("ENDPOINT"); ok {
			endpoint, name, signal = v, n, strings.Contains(n, "_PROFILES_")
		}
		if endpoint != "" {
			if protocol == "" {
				protocol = ProtocolHTTP // the specification's default
			}
			c.OTLPProtocol = protocol
			if err := c.applyEndpoint(endpoint, signal, protocol, lookup, explicit); err != nil {
				bad(name, "%v", err)
			}
		}
	}

	if v, name, ok := get("HEADERS"); ok && !explicit("otlp-header") {
		h, err := ParseKeyValues(v)
		if err != nil {
			bad(name, "%v", err)
		} else if err := checkHeaders(h); err != nil {
			bad(name, "%v", err)
		} else {
			c.OTLPHeaders = h
		}
	}
	files := []struct {
		suffix, flag string
		field        *string
	}{
		{"CERTIFICATE", "tls-ca-file", &c.TLSCAFile},
		{"CLIENT_CERTIFICATE", "tls-cert-file", &c.TLSCertFile},
		{"CLIENT_KEY", "tls-key-file", &c.TLSKeyFile},
	}
	set := false
	for _, f := range files {
		if v, _, ok := get(f.suffix); ok && !explicit(f.flag) {
			*f.field = v
			set = true
		}
	}
	if set {
		errs = append(errs, checkTLSFiles(c.tlsFiles(), "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY")...)
	}
	if v, name, ok := get("TIMEOUT"); ok && !explicit("export-timeout") {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil || ms == 0 {
			bad(name, "%q is not a positive number of milliseconds", v)
		} else {
			c.ExportTimeout = time.Duration(ms) * time.Millisecond
		}
	}
	if v, name, ok := get("COMPRESSION"); ok && !explicit("otlp-compression") {
		if v != "gzip" && v != "none" {
			bad(name, "%q: want gzip or none", v)
		} else {
			c.OTLPCompression = v
		}
	}

	attrs := map[string]string{}
	if v, ok := lookup("OTEL_RESOURCE_ATTRIBUTES"); ok && strings.TrimSpace(v) != "" {
		kv, err := ParseKeyValues(v)
		if err != nil {
			bad("OTEL_RESOURCE_ATTRIBUTES", "%v", err)
		}
		attrs = kv
	}
	if !explicit("service-name") {
		if v, ok := lookup("OTEL_SERVICE_NAME"); ok && strings.TrimSpace(v) != "" {
			c.ServiceName = strings.TrimSpace(v)
		} else if v := attrs["service.name"]; v != "" {
			c.ServiceName = v
		}
	}
	delete(attrs, "service.name") // the agent's own, or the default per process
	if len(attrs) > 0 {
		c.ResourceAttributes = attrs
	}
	return errors.Join(errs...)
}

// applyEndpoint sets CollectionAgent (and DisableTLS for gRPC) from an
// OTEL endpoint: signal says whether it came from the profiles-specific
// variable, used as-is for HTTP; the generic one gets the profiles path
// appended.
func (c *Config) applyEndpoint(endpoint string, signal bool, protocol string, lookup func(string) (string, bool), explicit func(string) bool) error {
	u, err := url.Parse(endpoint)
	hasScheme := err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
	switch protocol {
	case ProtocolHTTP:
		if !hasScheme {
			return fmt.Errorf("%q: want an http:// or https:// URL for %s", endpoint, ProtocolHTTP)
		}
		if !signal {
			if endpoint, err = otlphttp.ProfilesURL(endpoint); err != nil {
				return fmt.Errorf("%q: %v", endpoint, err)
			}
		}
		c.CollectionAgent = endpoint
	case ProtocolGRPC:
		if hasScheme {
			// gRPC takes host:port; the scheme says whether TLS is used.
			host := u.Host
			if u.Port() == "" {
				host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
			}
			c.CollectionAgent = host
			if !explicit("disable-tls") {
				c.DisableTLS = u.Scheme == "http"
			}
			return nil
		}
		if _, _, err := net.SplitHostPort(endpoint); err != nil || strings.Contains(endpoint, "://") {
			return fmt.Errorf("%q is neither host:port nor an http(s):// URL", endpoint)
		}
		c.CollectionAgent = endpoint
		insecure, name := "", ""
		for _, n := range []string{"OTEL_EXPORTER_OTLP_PROFILES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"} {
			if v, ok := lookup(n); ok && strings.TrimSpace(v) != "" {
				insecure, name = strings.ToLower(strings.TrimSpace(v)), n
				break
			}
		}
		if insecure != "" && !explicit("disable-tls") {
			b, err := strconv.ParseBool(insecure)
			if err != nil {
				return fmt.Errorf("%s=%q: want true or false", name, insecure)
			}
			c.DisableTLS = b
		}
	}
	return nil
}

// checkTLSFiles loads the TLS files f names, and names the setting (flag or
// variable) of each one at fault.
func checkTLSFiles(f otlpexport.TLSFiles, caName, certName, keyName string) []error {
	var errs []error
	if f.CA != "" {
		if _, err := otlpexport.LoadTLS(otlpexport.TLSFiles{CA: f.CA}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", caName, err))
		}
	}
	switch {
	case f.Cert != "" && f.Key == "":
		errs = append(errs, fmt.Errorf("%s: must be set with %s", keyName, certName))
	case f.Key != "" && f.Cert == "":
		errs = append(errs, fmt.Errorf("%s: must be set with %s", certName, keyName))
	case f.Cert != "":
		if _, err := otlpexport.LoadTLS(otlpexport.TLSFiles{Cert: f.Cert, Key: f.Key}); err != nil {
			errs = append(errs, fmt.Errorf("%s, %s: %v", certName, keyName, err))
		}
	}
	return errs
}

// ParseKeyValues parses the value of OTEL_EXPORTER_OTLP_HEADERS or
// OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value pairs, keys and
// values percent-decoded and trimmed of spaces, empty members ignored. A
// later duplicate key wins.
func ParseKeyValues(s string) (map[string]string, error) {
	kv := map[string]string{}
	for member := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(member) == "" {
			continue
		}
		k, v, ok := strings.Cut(member, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want key=value", member)
		}
		key, err := url.PathUnescape(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("key %q: %v", k, err)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("value of %q: %v", key, err)
		}
		if key == "" {
			return nil, fmt.Errorf("%q: empty key", member)
		}
		kv[key] = val
	}
	return kv, nil
}

// checkHeaders checks that every header can be sent both as an HTTP header
// and as gRPC metadata.
func checkHeaders(h map[string]string) error {
	for k, v := range h {
		if err := checkHeader(k, v); err != nil {
			return err
		}
	}
	return nil
}

func checkHeader(k, v string) error {
	if k == "" {
		return errors.New("empty header name")
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("header name %q: only letters, digits, '-', '_' and '.' are allowed", k)
		}
	}
	lk := strings.ToLower(k)
	if strings.HasPrefix(lk, "grpc-") || lk == "content-type" || lk == "content-encoding" || lk == "content-length" || lk == "host" || lk == "te" || lk == "user-agent" {
		return fmt.Errorf("header %q is set by stackline itself", k)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return fmt.Errorf("header %q: value must be printable ASCII", k)
		}
	}
	return nil
}
