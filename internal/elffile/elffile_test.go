package elffile

import (
	"encoding/binary"
	"path/filepath"
	"testing"
)

func FuzzDebuglink(f *testing.F) {
	f.Add([]byte("prog.debug\x00\x00\x12\x34\x56\x78"))
	f.Add([]byte("../etc/passwd\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("x\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		name, _, err := ParseDebuglink(data, binary.LittleEndian)
		if err != nil {
			return
		}
		for _, p := range debuglinkPaths("/usr/bin/prog", name) {
			if !filepath.IsLocal(p) {
				t.Fatalf("debuglink %q gives path %q outside the root", name, p)
			}
		}
	})
}
