package elffile

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
	"syscall"
)

// Errors of Debug.
var (
	// ErrNoDebugFile says no candidate debug file exists. It wraps
	// fs.ErrNotExist.
	ErrNoDebugFile = fmt.Errorf("no debug file: %w", fs.ErrNotExist)
	// ErrDebugRejected says candidate debug files exist but none could
	// be used: a build ID or CRC that does not match, a file that cannot
	// be opened or parsed. The error wrapping it says which and why.
	ErrDebugRejected = errors.New("debug file rejected")
	// ErrCRCMismatch says a .gnu_debuglink candidate's CRC differs from
	// the one the file records. Errors wrapping it also wrap
	// ErrDebugRejected.
	ErrCRCMismatch = errors.New("debuglink CRC mismatch")
)

// debugDir is where distributions install separate debug files.
const debugDir = "usr/lib/debug"

// Limits on what a debug file search reads.
const (
	// maxDebuglinkSize bounds the .gnu_debuglink section.
	maxDebuglinkSize = 1 << 12
	// maxDebuglinkCRCBytes bounds the size of a debug file whose CRC is
	// computed; checking a debuglink reads the whole file.
	maxDebuglinkCRCBytes = 2 << 30
)

// Debug returns the file's separate debug file, looked for on the first
// call under the Source's Root: at Source.DebugPath when set, then by GNU
// build ID (usr/lib/debug/.build-id/xx/rest.debug, whose own build ID must
// match), then by .gnu_debuglink (next to Source.Path, in .debug/ there,
// or under usr/lib/debug; the candidate's CRC must match). The File owns
// the debug file: Close closes it.
//
// When there is no candidate, the error wraps ErrNoDebugFile (and so
// fs.ErrNotExist); when candidates were rejected, it wraps
// ErrDebugRejected and says why. A File made by NewReader has no debug
// file.
func (f *File) Debug() (*File, error) {
	f.debugOnce.Do(func() {
		if !f.find {
			f.debugErr = ErrNoDebugFile
			return
		}
		f.debug, f.debugPath, f.debugErr = f.findDebug()
	})
	return f.debug, f.debugErr
}

// DebugPath returns the path, relative to the Source's Root, of the debug
// file Debug finds (looking for it if Debug was not called), or "".
func (f *File) DebugPath() string {
	f.Debug()
	return f.debugPath
}

// findDebug looks for the debug file, as Debug says.
func (f *File) findDebug() (*File, string, error) {
	root, err := openRoot(f.src.Root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", ErrNoDebugFile
		}
		return nil, "", fmt.Errorf("%w: %w", ErrDebugRejected, err)
	}
	defer root.Close()
	s := debugSearch{f: f, root: root}
	if p := f.src.DebugPath; p != "" {
		if d := s.try(p, s.matchesAny); d != nil {
			return d, p, nil
		}
	}
	if p, ok := buildIDPath(f.ids.GNU); ok && p != f.src.DebugPath {
		if d := s.try(p, s.matchesBuildID); d != nil {
			return d, p, nil
		}
	}
	if s.readDebuglink() {
		for _, p := range debuglinkPaths(f.src.Path, s.link) {
			if p == f.src.DebugPath {
				continue
			}
			if d := s.try(p, s.matchesCRC); d != nil {
				return d, p, nil
			}
		}
	}
	if len(s.rejected) > 0 {
		return nil, "", fmt.Errorf("%w: %w", ErrDebugRejected, errors.Join(s.rejected...))
	}
	return nil, "", ErrNoDebugFile
}

// openRoot opens the directory debug files are looked up under.
func openRoot(dir string) (*os.Root, error) {
	if dir == "" {
		dir = "/"
	}
	return os.OpenRoot(dir)
}

// debugSearch is one search for a file's debug file.
type debugSearch struct {
	f        *File
	root     *os.Root
	rejected []error // why candidates that exist were not used

	linkRead bool
	link     string // the .gnu_debuglink name, "" if none or invalid
	linkCRC  uint32
}

// try opens the candidate at p and returns it when ok accepts it, or nil.
func (s *debugSearch) try(p string, ok func(fh *os.File, d *File) error) *File {
	fh, err := s.root.Open(p)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			s.rejected = append(s.rejected, err)
		}
		return nil
	}
	d, err := NewFile(fh, Source{})
	if err == nil {
		d.find = false // a debug file has no debug file
		err = ok(fh, d)
	}
	if err != nil {
		fh.Close()
		s.rejected = append(s.rejected, fmt.Errorf("%s: %w", p, err))
		return nil
	}
	return d
}

// matchesBuildID accepts a debug file with the file's GNU build ID.
func (s *debugSearch) matchesBuildID(_ *os.File, d *File) error {
	if got := d.ids.GNU; got != s.f.ids.GNU {
		return fmt.Errorf("build ID %q, want %q", got, s.f.ids.GNU)
	}
	return nil
}

// matchesCRC accepts a debug file whose CRC is the one .gnu_debuglink
// records.
func (s *debugSearch) matchesCRC(fh *os.File, _ *File) error {
	got, err := fileCRC(fh)
	if err != nil {
		return err
	}
	if got != s.linkCRC {
		return fmt.Errorf("%w: %#08x, want %#08x", ErrCRCMismatch, got, s.linkCRC)
	}
	return nil
}

// matchesAny accepts a debug file found by an earlier search when it
// still matches by build ID or, for a file without one, by CRC.
func (s *debugSearch) matchesAny(fh *os.File, d *File) error {
	if s.f.ids.GNU != "" {
		return s.matchesBuildID(fh, d)
	}
	if !s.readDebuglink() {
		return errors.New("no build ID nor debuglink to check it by")
	}
	return s.matchesCRC(fh, d)
}

// readDebuglink reads the file's .gnu_debuglink section, once, and reports
// whether it has a valid one.
func (s *debugSearch) readDebuglink() bool {
	if s.linkRead {
		return s.link != ""
	}
	s.linkRead = true
	ef := s.f.ELF
	sec := ef.Section(".gnu_debuglink")
	if sec == nil || sec.Type == elf.SHT_NOBITS || sec.Flags&elf.SHF_COMPRESSED != 0 {
		return false
	}
	if sec.Size > maxDebuglinkSize {
		s.rejected = append(s.rejected, fmt.Errorf(".gnu_debuglink of %d bytes", sec.Size))
		return false
	}
	data, err := sec.Data()
	if err == nil {
		s.link, s.linkCRC, err = ParseDebuglink(data, ef.ByteOrder)
	}
	if err != nil {
		s.rejected = append(s.rejected, fmt.Errorf(".gnu_debuglink: %w", err))
		return false
	}
	return true
}

// buildIDPath returns the path, relative to the root, of the debug file
// for a GNU build ID in hex: usr/lib/debug/.build-id/xx/rest.debug.
func buildIDPath(id string) (string, bool) {
	if len(id) < 4 || len(id)%2 != 0 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", false
	}
	return debugDir + "/.build-id/" + id[:2] + "/" + id[2:] + ".debug", true
}

// BuildIDPath returns the path, relative to a root, where a debug file
// for the GNU build ID id (in hex) is installed, and whether id is valid.
func BuildIDPath(id string) (string, bool) { return buildIDPath(id) }

// ParseDebuglink decodes a .gnu_debuglink section: a file name ending in
// NUL, padding to 4 bytes, and the CRC-32 of the debug file.
func ParseDebuglink(data []byte, order binary.ByteOrder) (name string, crc uint32, err error) {
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
		return 0, fmt.Errorf("not a regular file of at most %d bytes", maxDebuglinkCRCBytes)
	}
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return 0, fmt.Errorf("read for CRC: %w", err)
	}
	return h.Sum32(), nil
}
