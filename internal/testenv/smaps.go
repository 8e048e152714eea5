package testenv

import (
	"bytes"
	"os"
	"strconv"
	"testing"
)

// ResidentOf returns the resident bytes of this process's mappings of the
// file at path, from /proc/self/smaps.
func ResidentOf(tb testing.TB, path string) int {
	tb.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		tb.Fatal(err)
	}
	kb, in := 0, false
	for line := range bytes.Lines(smaps) {
		fields := bytes.Fields(line)
		switch {
		case len(fields) > 0 && bytes.Contains(fields[0], []byte("-")) && !bytes.HasSuffix(fields[0], []byte(":")):
			// A mapping's header: range, perms, offset, dev, inode, path.
			in = len(fields) >= 6 && string(fields[5]) == path
		case in && len(fields) >= 2 && string(fields[0]) == "Rss:":
			n, err := strconv.Atoi(string(fields[1]))
			if err != nil {
				tb.Fatalf("smaps: %q: %v", line, err)
			}
			kb += n
		}
	}
	return kb << 10
}
