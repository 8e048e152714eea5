package symbolizer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"
	"strings"
)

// debugDir is where distributions install separate debug files.
const debugDir = "usr/lib/debug"

// maxDebuglinkCRCBytes bounds the size of a debug file whose CRC is
// computed; checking a debuglink reads the whole file.
const maxDebuglinkCRCBytes = 2 << 30

// buildIDPath returns the path, relative to the root, of the debug file
// for a GNU build ID in hex: usr/lib/debug/.build-id/xx/rest.debug.
func buildIDPath(id string) (string, bool) {
	if len(id) < 4 || len(id)%2 != 0 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", false
	}
	return debugDir + "/.build-id/" + id[:2] + "/" + id[2:] + ".debug", true
}

// parseDebuglink decodes a .gnu_debuglink section: a file name ending in
// NUL, padding to 4 bytes, and the CRC-32 of the debug file.
func parseDebuglink(data []byte, order binary.ByteOrder) (name string, crc uint32, err error) {
	n := bytes.IndexByte(data, 0)
	if n < 0 {
		return "", 0, errors.New("debuglink: name not terminated")
	}
	name = string(data[:n])
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || len(name) > 255 {
		return "", 0, fmt.Errorf("debuglink: invalid file name %q", name)
	}
	off := (n + 4) &^ 3
	if off+4 > len(data) {
		return "", 0, errors.New("debuglink: no CRC")
	}
	return name, order.Uint32(data[off:]), nil
}

// debuglinkPaths returns where GDB looks for the debuglink name of the file
// at filePath (as the process sees it), relative to the root: next to the
// file, in .debug/ next to it, and under usr/lib/debug.
func debuglinkPaths(filePath, name string) []string {
	if !path.IsAbs(filePath) {
		return nil
	}
	dir := strings.TrimPrefix(path.Dir(path.Clean(filePath)), "/")
	if dir == "" {
		dir = "."
	}
	return []string{
		path.Join(dir, name),
		path.Join(dir, ".debug", name),
		path.Join(debugDir, dir, name),
	}
}

// fileCRC returns the CRC-32 (IEEE) of f's contents, reading it through.
func fileCRC(f *os.File) (uint32, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxDebuglinkCRCBytes {
		return 0, fmt.Errorf("%s: not a regular file of at most %d bytes", f.Name(), maxDebuglinkCRCBytes)
	}
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}
