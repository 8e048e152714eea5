// Package procmaps parses /proc/PID/maps.
package procmaps

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
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

// maxLine bounds one line of a maps file: a path is at most PATH_MAX
// (4096) bytes, the fields before it under a hundred.
const maxLine = 64 << 10

// Parse reads maps lines from r and calls fn for each mapping that keep
// accepts (all of them when keep is nil). Malformed lines stop the parse
// with an error naming the line; mappings before it have been delivered.
func Parse(r io.Reader, keep func(perms [4]byte) bool, fn func(Mapping)) error {
	return parse(r, make([]byte, 4096), keep, fn)
}

// parse is Parse with buf as its buffer, grown up to maxLine when a line
// does not fit. Lines are parsed where they were read: only the paths of
// the mappings kept are copied.
func parse(r io.Reader, buf []byte, keep func(perms [4]byte) bool, fn func(Mapping)) error {
	lineNo := 0
	n := 0 // bytes in buf
	eof := false
	for {
		// Parse the complete lines in buf[:n].
		data := buf[:n]
		for {
			nl := bytes.IndexByte(data, '\n')
			if nl < 0 {
				break
			}
			lineNo++
			if err := parseOne(data[:nl], lineNo, keep, fn); err != nil {
				return err
			}
			data = data[nl+1:]
		}
		if eof {
			if len(data) > 0 {
				return parseOne(data, lineNo+1, keep, fn)
			}
			return nil
		}
		// Keep the incomplete line at the start of buf and read more.
		n = copy(buf, data)
		if n == len(buf) {
			if len(buf) >= maxLine {
				return fmt.Errorf("maps line %d: longer than %d bytes", lineNo+1, maxLine)
			}
			grown := make([]byte, min(2*len(buf), maxLine))
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			eof = true
		} else if err != nil {
			return fmt.Errorf("maps: %w", err)
		}
	}
}

// parseOne parses one line and hands it to fn when keep accepts it.
func parseOne(line []byte, lineNo int, keep func([4]byte) bool, fn func(Mapping)) error {
	if len(line) == 0 {
		return nil
	}
	m, err := parseLine(line, keep)
	if err == errSkip {
		return nil
	}
	if err != nil {
		return fmt.Errorf("maps line %d: %w", lineNo, err)
	}
	fn(m)
	return nil
}

var errSkip = errors.New("skipped")

// field splits off the next space-separated field.
func field(b []byte) (f, rest []byte) {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+1:]
}

// parseHex parses a hexadecimal number of at most bits bits, without
// allocating.
func parseHex(b []byte, bits int) (uint64, error) {
	if len(b) == 0 || len(b) > bits/4 {
		return 0, fmt.Errorf("bad hex %q", b)
	}
	var v uint64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, fmt.Errorf("bad hex %q", b)
		}
		v = v<<4 | uint64(c)
	}
	return v, nil
}

// parseDec parses a decimal uint64 without allocating.
func parseDec(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
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
	var ok bool
	if m.Inode, ok = parseDec(ino); !ok {
		return m, fmt.Errorf("bad inode %q", ino)
	}
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	m.Path = string(rest)
	return m, nil
}
