// Package procmaps parses /proc/PID/maps.
package procmaps

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	// Offset is the file offset Start maps.
	Offset uint64
	// Perms is the permission string, e.g. "r-xp".
	Perms [4]byte
	// Major, Minor and Inode identify the mapped file; Inode is 0 for
	// anonymous and special mappings.
	Major, Minor uint32
	Inode        uint64
	// Path is the mapped path, a special name such as "[vdso]" or "[heap]",
	// or "" for anonymous memory. A deleted file ends in " (deleted)".
	Path string
}

// deletedSuffix is what the kernel appends to the path of a mapped file
// that was deleted.
const deletedSuffix = " (deleted)"

// TrimDeleted returns a path from /proc/PID/maps or /proc/PID/exe without
// the " (deleted)" the kernel appends to the path of a deleted file.
func TrimDeleted(path string) string { return strings.TrimSuffix(path, deletedSuffix) }

// Executable reports whether the mapping's memory may be executed.
func (m *Mapping) Executable() bool { return m.Perms[2] == 'x' }

// IsFile reports whether the mapping is backed by a file.
func (m *Mapping) IsFile() bool { return m.Inode != 0 && len(m.Path) > 0 && m.Path[0] == '/' }

// Parse reads maps lines from r and calls fn for each mapping that keep
// accepts (all of them when keep is nil). Malformed lines stop the parse
// with an error naming the line; mappings before it have been delivered.
func Parse(r io.Reader, keep func(perms [4]byte) bool, fn func(Mapping)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		m, err := parseLine(line, keep)
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return fmt.Errorf("maps line %d: %w", lineNo, err)
		}
		fn(m)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("maps: %w", err)
	}
	return nil
}

var errSkip = errors.New("skipped")

// field splits off the next space-separated field.
func field(b []byte) (f, rest []byte) {
	b = bytes.TrimLeft(b, " ")
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+1:]
}

func parseHex(b []byte, bits int) (uint64, error) {
	if len(b) == 0 || len(b) > 16 {
		return 0, fmt.Errorf("bad hex %q", b)
	}
	return strconv.ParseUint(string(b), 16, bits)
}

func parseLine(line []byte, keep func([4]byte) bool) (Mapping, error) {
	var m Mapping
	rng, rest := field(line)
	perms, rest := field(rest)
	if len(perms) != 4 {
		return m, fmt.Errorf("bad permissions %q", perms)
	}
	copy(m.Perms[:], perms)
	if keep != nil && !keep(m.Perms) {
		return m, errSkip
	}
	dash := bytes.IndexByte(rng, '-')
	if dash < 0 {
		return m, fmt.Errorf("bad address range %q", rng)
	}
	var err error
	if m.Start, err = parseHex(rng[:dash], 64); err != nil {
		return m, err
	}
	if m.End, err = parseHex(rng[dash+1:], 64); err != nil {
		return m, err
	}
	if m.End < m.Start {
		return m, fmt.Errorf("range end below start %q", rng)
	}
	off, rest := field(rest)
	if m.Offset, err = parseHex(off, 64); err != nil {
		return m, err
	}
	dev, rest := field(rest)
	colon := bytes.IndexByte(dev, ':')
	if colon < 0 {
		return m, fmt.Errorf("bad device %q", dev)
	}
	major, err := parseHex(dev[:colon], 32)
	if err != nil {
		return m, err
	}
	minor, err := parseHex(dev[colon+1:], 32)
	if err != nil {
		return m, err
	}
	m.Major, m.Minor = uint32(major), uint32(minor)
	ino, rest := field(rest)
	if m.Inode, err = strconv.ParseUint(string(ino), 10, 64); err != nil {
		return m, fmt.Errorf("bad inode %q", ino)
	}
	m.Path = string(bytes.TrimLeft(rest, " "))
	return m, nil
}
