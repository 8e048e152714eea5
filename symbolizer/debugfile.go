package symbolizer

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// debugDir is where distributions install separate debug files.
const debugDir = "usr/lib/debug"

// maxDebuglinkCRCBytes bounds the size of a debug file whose CRC is
// computed; checking a debuglink reads the whole file.
const maxDebuglinkCRCBytes = 2 << 30

// OpenDebugFile finds the separate debug file of ef, the ELF file src
// describes, the way Load does: under src.Root, by GNU build ID
// (usr/lib/debug/.build-id/xx/rest.debug, whose own build ID must match),
// then by .gnu_debuglink (next to src.Path, in .debug/ there, or under
// usr/lib/debug; the debug file's CRC must match). src.Open is not called.
// The caller closes the file. The error wraps fs.ErrNotExist when there is
// no debug file.
func OpenDebugFile(src Source, ef *elf.File) (*os.File, error) {
	root, err := src.openRoot()
	if err != nil {
		return nil, fmt.Errorf("symbolizer: debug file: %w", err)
	}
	defer root.Close()
	fh, _, _ := findDebugFile(root, src.Path, ef, fileInfo(ef).GNUBuildID, new(counters))
	if fh == nil {
		return nil, fmt.Errorf("symbolizer: no debug file: %w", fs.ErrNotExist)
	}
	return fh, nil
}

// openRoot opens the directory debug files are looked up under.
func (src Source) openRoot() (*os.Root, error) {
	if src.Root == "" {
		return os.OpenRoot("/")
	}
	return os.OpenRoot(src.Root)
}

// findDebugFile finds the separate debug file of ef under root, by GNU
// build ID (buildID, in hex) first, then by the debuglink rules for the
// file at filePath. It returns the open file, its ELF view and its path
// relative to root, or nils when there is none.
func findDebugFile(root *os.Root, filePath string, ef *elf.File, buildID string, ctr *counters) (*os.File, *elf.File, string) {
	if p, ok := buildIDPath(buildID); ok {
		if fh, err := root.Open(p); err == nil {
			if def, err := elf.NewFile(fh); err == nil && fileInfo(def).GNUBuildID == buildID {
				return fh, def, p
			}
			fh.Close()
		}
	}
	sec := ef.Section(".gnu_debuglink")
	if sec == nil || sec.Type == elf.SHT_NOBITS || compressed(sec) || sec.Size > maxDebuglinkSize {
		return nil, nil, ""
	}
	data, err := sec.Data()
	if err != nil {
		return nil, nil, ""
	}
	name, crc, err := parseDebuglink(data, ef.ByteOrder)
	if err != nil {
		return nil, nil, ""
	}
	for _, p := range debuglinkPaths(filePath, name) {
		fh, err := root.Open(p)
		if err != nil {
			continue
		}
		if got, err := fileCRC(fh); err != nil || got != crc {
			ctr.debuglinkMismatches.Add(1)
			fh.Close()
			continue
		}
		if def, err := elf.NewFile(fh); err == nil {
			return fh, def, p
		}
		fh.Close()
	}
	return nil, nil, ""
}

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
