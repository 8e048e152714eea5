package main

import (
	"errors"
	"flag"
	"io"
	"maps"
	"strings"
	"testing"
	"time"
)

func lookupOf(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// TestPrecedence: a flag wins over its STACKLINE_* variable, which wins
// over the OTEL_* variables.
func TestPrecedence(t *testing.T) {
	otel := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
		"OTEL_EXPORTER_OTLP_HEADERS":  "authorization=otel",
		"OTEL_EXPORTER_OTLP_TIMEOUT":  "1000",
		"OTEL_SERVICE_NAME":           "otel-svc",
	}
	for _, c := range []struct {
		name     string
		env      map[string]string
		args     []string
		endpoint string
		headers  map[string]string
		timeout  time.Duration
		service  string
	}{
		{"OTEL only", nil, nil, "http://otel:4318/v1development/profiles", map[string]string{"authorization": "otel"}, time.Second, "otel-svc"},
		{
			"STACKLINE_* over OTEL",
			map[string]string{
				"STACKLINE_COLLECTION_AGENT": "env:4317", "STACKLINE_OTLP_HEADER": "authorization=Bearer a,b",
				"STACKLINE_EXPORT_TIMEOUT": "3s", "STACKLINE_SERVICE_NAME": "env-svc",
			},
			nil, "env:4317", map[string]string{"authorization": "Bearer a,b"}, 3 * time.Second, "env-svc",
		},
		{
			"flags over both",
			map[string]string{"STACKLINE_COLLECTION_AGENT": "env:4317", "STACKLINE_EXPORT_TIMEOUT": "3s"},
			[]string{"--collection-agent", "https://flag/x", "--export-timeout", "4s", "--otlp-header", "a=1", "--otlp-header", "b=2=3", "--service-name", "flag-svc"},
			"https://flag/x", map[string]string{"a": "1", "b": "2=3"}, 4 * time.Second, "flag-svc",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := maps.Clone(otel)
			maps.Copy(env, c.env)
			opts, err := parse(c.args, lookupOf(env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cfg := opts.cfg
			if cfg.CollectionAgent != c.endpoint || !maps.Equal(cfg.OTLPHeaders, c.headers) || cfg.ExportTimeout != c.timeout || cfg.ServiceName != c.service {
				t.Errorf("endpoint %q headers %q timeout %v service %q; want %q %q %v %q",
					cfg.CollectionAgent, cfg.OTLPHeaders, cfg.ExportTimeout, cfg.ServiceName, c.endpoint, c.headers, c.timeout, c.service)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := parse([]string{"-h"}, lookupOf(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	if _, err := parse([]string{"--otlp-header", "novalue"}, lookupOf(nil), io.Discard); !errors.Is(err, errReported) {
		t.Errorf("--otlp-header novalue: %v", err)
	}
	for name, env := range map[string]map[string]string{
		"STACKLINE_OTLP_HEADER":      {"STACKLINE_OTLP_HEADER": "novalue"},
		"OTEL_EXPORTER_OTLP_HEADERS": {"OTEL_EXPORTER_OTLP_HEADERS": "a=%zz"},
	} {
		_, err := parse(nil, lookupOf(env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: error %v does not name %s", env, err, name)
		}
	}
}
