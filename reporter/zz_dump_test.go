package reporter

import (
	"os"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestZZDump(t *testing.T) {
	out := os.Getenv("ZZ_DUMP")
	if out == "" {
		t.Skip()
	}
	req := replayBuild(t, loadReplayExport(t), false)
	b, _ := proto.Marshal(req)
	os.WriteFile(out, b, 0o644)
}
