// Package elffile owns an ELF file opened once: the open file, its parsed
// headers, its build IDs and its separate debug file, found at most once.
// Everything that reads a mapped file (identification, the symbolizer, the
// unwind-table builder, interpreter detection) shares one File instead of
// opening and parsing the file again.
//
// A File holds the headers debug/elf parses (program and section headers,
// section names) and the build IDs, never section contents: those are read
// or mapped by the code that needs them, for as long as it needs them.
package elffile

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/stackline-dev/stackline/trace"
)

// Source says how to open a mapped file and where to look for its debug
// files. For a file of a containerised process, Open goes through
// /proc/PID/map_files or /proc/PID/root and Root is /proc/PID/root, so
// that debug files come from the process's file system, not the host's.
type Source struct {
	// Open opens the mapped file itself.
	Open func() (*os.File, error)
	// Root is the directory debug file paths are resolved under, e.g.
	// "/proc/1234/root"; "" means "/". Paths cannot escape it, even by
	// symbolic links.
	Root string
	// Path is the mapped file's absolute path as the process sees it; the
	// .gnu_debuglink rules look in its directory. "" skips them.
	Path string
	// DebugPath, when not "", is where, relative to Root, an earlier
	// search found the file's debug file (File.DebugPath). It is tried
	// first, and used when its build ID or CRC still matches.
	DebugPath string
}

// File is an ELF file opened once. Its methods may be called concurrently,
// except Close. The debug/elf headers it exposes are read-only; reading
// section contents through them is safe concurrently too.
type File struct {
	// ELF is the file's parsed headers.
	ELF *elf.File

	r    io.ReaderAt
	fh   *os.File // nil when the file is not a real file
	src  Source
	find bool // look for a debug file under src.Root

	ids  BuildIDs
	isGo bool

	debugOnce sync.Once
	debug     *File
	debugPath string
	debugErr  error
}

// Open opens the file src describes and parses its headers. The File owns
// the open file: Close closes it. Its debug file is looked for under
// src.Root when Debug is first called.
func Open(src Source) (*File, error) {
	if src.Open == nil {
		return nil, errors.New("no way to open the file")
	}
	fh, err := src.Open()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if fh == nil {
		return nil, errors.New("open returned no file")
	}
	f, err := NewFile(fh, src)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", fh.Name(), err)
	}
	return f, nil
}

// NewFile parses the headers of the open file fh, which src describes
// (src.Open is not called). On success the File owns fh: Close closes it.
func NewFile(fh *os.File, src Source) (*File, error) {
	f, err := newFile(fh)
	if err != nil {
		return nil, err
	}
	f.fh, f.src, f.find = fh, src, true
	return f, nil
}

// NewReader parses the ELF file r, which is not a real file: its sections
// are read, not mapped, and it has no debug file.
func NewReader(r io.ReaderAt) (*File, error) {
	return newFile(r)
}

func newFile(r io.ReaderAt) (*File, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("not a readable ELF file: %w", err)
	}
	f := &File{ELF: ef, r: r}
	f.ids = buildIDs(ef)
	f.isGo = f.ids.Go != "" || ef.Section(".gopclntab") != nil || ef.Section(".go.buildinfo") != nil
	return f, nil
}

// Close closes the file and its debug file, when it owns them.
func (f *File) Close() error {
	var errs []error
	if f.debug != nil {
		errs = append(errs, f.debug.Close())
	}
	if f.fh != nil {
		errs = append(errs, f.fh.Close())
	}
	return errors.Join(errs...)
}

// ReaderAt returns the file's contents.
func (f *File) ReaderAt() io.ReaderAt { return f.r }

// OSFile returns the open file, or nil when the File was made from a
// reader. Large sections are mapped from it rather than read into the heap.
func (f *File) OSFile() *os.File { return f.fh }

// Name returns the open file's name, or "" for a reader.
func (f *File) Name() string {
	if f.fh == nil {
		return ""
	}
	return f.fh.Name()
}

// Path returns the file's path as its process sees it ("" when unknown).
func (f *File) Path() string { return f.src.Path }

// BuildIDs returns the build IDs in the file's notes.
func (f *File) BuildIDs() BuildIDs { return f.ids }

// IsGo reports whether the Go toolchain built the file: it has a Go build
// ID, a .gopclntab or a .go.buildinfo section.
func (f *File) IsGo() bool { return f.isGo }

// ID returns the file's identity (trace.FileIDFromReader): a hash of its
// first and last 4 KiB and its length.
func (f *File) ID() (trace.FileID, error) {
	if f.fh == nil {
		return trace.FileID{}, errors.New("file id: not a real file")
	}
	return IDOf(f.fh)
}

// IDOf returns the identity of the open file fh, which need not be an ELF
// file.
func IDOf(fh *os.File) (trace.FileID, error) {
	st, err := fh.Stat()
	if err != nil {
		return trace.FileID{}, fmt.Errorf("stat: %w", err)
	}
	return trace.FileIDFromReader(fh, st.Size())
}
