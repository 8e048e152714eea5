package procmeta

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseCgroup: any input yields IDs of the documented shapes.
func FuzzParseCgroup(f *testing.F) {
	files, _ := filepath.Glob("testdata/cgroup/*.txt")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("0::/a:b:c\n::\n:\n\n0::/../..\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := ParseCgroup(data)
		if c.ID != "" && !isHexID(c.ID) {
			t.Fatalf("container ID %q", c.ID)
		}
		if c.PodUID != "" && (!isUID(c.PodUID) || strings.Contains(c.PodUID, "_")) {
			t.Fatalf("pod UID %q", c.PodUID)
		}
	})
}

// FuzzServiceName: any environment yields a valid UTF-8 name without
// surrounding spaces, which the input holds when it is not percent-decoded.
func FuzzServiceName(f *testing.F) {
	f.Add(environ("OTEL_SERVICE_NAME=checkout"))
	f.Add(environ("OTEL_RESOURCE_ATTRIBUTES=a=b,service.name=my%20cart"))
	f.Add(environ("OTEL_SERVICE_NAME=", "OTEL_RESOURCE_ATTRIBUTES=service.name=%zz"))
	f.Add([]byte("OTEL_SERVICE_NAME=cut"))
	f.Add([]byte("\x00\x00=\x00OTEL_SERVICE_NAME=\xff\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		name := ServiceName(data)
		if !utf8.ValidString(name) {
			t.Fatalf("invalid UTF-8 %q", name)
		}
		if strings.TrimSpace(name) != name {
			t.Fatalf("untrimmed %q", name)
		}
		if name != "" && !strings.Contains(string(data), "OTEL_") {
			t.Fatalf("%q from an environment without OTEL_ variables", name)
		}
	})
}
