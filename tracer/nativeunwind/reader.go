package nativeunwind

import (
	"encoding/binary"
	"errors"
)

// Errors of the decoders, wrapped with the place they occurred.
var (
	errTruncated = errors.New("truncated")
	errLEB128    = errors.New("LEB128 number longer than 10 bytes")
)

// reader decodes the fields of one .eh_frame or .debug_frame entry. b ends
// where the entry ends; off is an offset in the whole section, so that
// pc-relative pointers can be resolved. A read past the end records an
// error and moves off to the end, so loops over a reader always end.
type reader struct {
	b     []byte
	off   int
	order binary.ByteOrder
	err   error
}

// fail records err (the first one) and stops the reader.
func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

// more reports whether anything is left to read.
func (r *reader) more() bool { return r.off < len(r.b) }

// take returns the next n bytes, nil after a failure.
func (r *reader) take(n uint64) []byte {
	if n > uint64(len(r.b)-r.off) {
		r.fail(errTruncated)
		return nil
	}
	p := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return p
}

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2); p != nil {
		return r.order.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4); p != nil {
		return r.order.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return r.order.Uint64(p)
	}
	return 0
}

// leb reads the bits of a LEB128 number, bits past the 64th dropped, and
// how many bits it had (0 after a failure).
func (r *reader) leb() (v uint64, bits uint) {
	for shift := uint(0); r.off < len(r.b); shift += 7 {
		if shift >= 70 {
			r.fail(errLEB128)
			return 0, 0
		}
		c := r.b[r.off]
		r.off++
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		if c < 0x80 {
			return v, shift + 7
		}
	}
	r.fail(errTruncated)
	return 0, 0
}

// uleb reads an unsigned LEB128 number.
func (r *reader) uleb() uint64 {
	v, _ := r.leb()
	return v
}

// sleb reads a signed LEB128 number.
func (r *reader) sleb() int64 {
	v, bits := r.leb()
	if bits > 0 && bits < 64 && v>>(bits-1)&1 != 0 {
		v |= ^uint64(0) << bits
	}
	return int64(v)
}

// cstring reads a NUL-terminated string, without the NUL.
func (r *reader) cstring() []byte {
	for i := r.off; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := r.b[r.off:i]
			r.off = i + 1
			return s
		}
	}
	r.fail(errTruncated)
	return nil
}

// block reads a ULEB128 length and that many bytes.
func (r *reader) block() []byte {
	return r.take(r.uleb())
}
