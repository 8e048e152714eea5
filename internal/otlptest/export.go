package otlptest

import (
	"compress/gzip"
	"io"
	"os"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/protobuf/proto"
)

// CapturedExport reads the captured export at path (a gzip-compressed
// binary ExportProfilesServiceRequest, such as the whole-agent benchmark's
// in reporter/testdata) and returns the request and its uncompressed
// bytes. It fails tb when the file cannot be read or decoded.
func CapturedExport(tb testing.TB, path string) (*collectorpb.ExportProfilesServiceRequest, []byte) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	req := &collectorpb.ExportProfilesServiceRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return req, raw
}
