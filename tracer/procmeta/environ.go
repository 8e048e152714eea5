package procmeta

import (
	"bytes"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Environment variables of the OpenTelemetry SDK configuration that name a
// service.
const (
	envServiceName        = "OTEL_SERVICE_NAME"
	envResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
	attrServiceName       = "service.name"
)

// ServiceName returns the service name a process's environment gives it,
// read from the contents of /proc/PID/environ (NUL-terminated NAME=value
// entries), the way an OpenTelemetry SDK in the process would: a non-empty
// OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES
// (comma-separated key=value pairs, values percent-encoded). It returns ""
// when neither names one.
//
// As getenv does, the first entry of a variable counts. An entry without
// its terminating NUL (the contents were cut short) is ignored, and so is
// an OTEL_RESOURCE_ATTRIBUTES whose service.name is not validly
// percent-encoded, as the SDKs discard it. The name is trimmed of spaces;
// bytes that are not UTF-8 are replaced.
func ServiceName(environ []byte) string {
	var name, attrs []byte
	var haveName, haveAttrs bool
	for !(haveName && haveAttrs) {
		i := bytes.IndexByte(environ, 0)
		if i < 0 {
			break
		}
		entry := environ[:i]
		environ = environ[i+1:]
		key, value, ok := bytes.Cut(entry, []byte{'='})
		if !ok {
			continue
		}
		switch string(key) {
		case envServiceName:
			if !haveName {
				name, haveName = value, true
			}
		case envResourceAttributes:
			if !haveAttrs {
				attrs, haveAttrs = value, true
			}
		}
	}
	if s := clean(string(name)); s != "" {
		return s
	}
	return resourceServiceName(string(attrs))
}

// resourceServiceName returns the service.name of an
// OTEL_RESOURCE_ATTRIBUTES value, the last when it is given more than
// once, or "".
func resourceServiceName(attrs string) string {
	var last string
	for attrs != "" {
		var pair string
		pair, attrs, _ = strings.Cut(attrs, ",")
		key, value, ok := strings.Cut(pair, "=")
		if !ok || strings.TrimSpace(key) != attrServiceName {
			continue
		}
		v, err := url.PathUnescape(strings.TrimSpace(value))
		if err != nil {
			return ""
		}
		last = v
	}
	return clean(last)
}

// clean trims s of spaces and makes it valid UTF-8, which protobuf strings
// must be.
func clean(s string) string {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}
