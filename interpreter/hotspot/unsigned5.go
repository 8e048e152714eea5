package hotspot

import (
	"errors"
	"fmt"
)

// Encoding is how a VM's compressed streams (CompressedReadStream: scope
// data, line number tables) encode integers. Both are UNSIGNED5, the
// variable-length encoding of Pack200: one to five bytes, low bytes end a
// value, high bytes carry six bits each and continue it.
type Encoding uint8

const (
	// EncodingJDK17 is the encoding of JDK 19 and earlier: every byte
	// value is used, 0-191 are low bytes and 192-255 high bytes.
	EncodingJDK17 Encoding = iota
	// EncodingUnsigned5 is the encoding of JDK 20 and later
	// (utilities/unsigned5.hpp): the zero byte is excluded, so 1-191 are
	// low bytes and 192-255 high bytes, and a byte's digit is its value
	// minus one.
	EncodingUnsigned5
)

// EncodingFor returns the encoding of a VM of the given feature version
// (Layout.Version); versions from 20 up, and 0 (a VM that does not say,
// which only recent ones do not), use EncodingUnsigned5.
func EncodingFor(version int) Encoding {
	if version > 0 && version < 20 {
		return EncodingJDK17
	}
	return EncodingUnsigned5
}

func (e Encoding) String() string {
	switch e {
	case EncodingJDK17:
		return "jdk17"
	case EncodingUnsigned5:
		return "unsigned5"
	}
	return fmt.Sprintf("Encoding(%d)", uint8(e))
}

// params returns the number of excluded byte values (X) and of low byte
// values (L).
func (e Encoding) params() (x, l uint32) {
	if e == EncodingUnsigned5 {
		return 1, 191
	}
	return 0, 192
}

// Errors of the compressed stream decoders.
var (
	// ErrTruncated reports data that ends in the middle of a value or
	// before its terminator.
	ErrTruncated = errors.New("hotspot: compressed data cut short")
	// ErrExcludedByte reports a zero byte in an EncodingUnsigned5
	// value, which no writer produces.
	ErrExcludedByte = errors.New("hotspot: zero byte in UNSIGNED5 data")
)

const (
	u5MaxLength = 5 // bytes in the longest value
	u5LgH       = 6 // bits a high byte carries
)

// Stream reads a compressed stream: UNSIGNED5 values and plain bytes, from
// a position, never past the end of its data.
type Stream struct {
	b   []byte
	pos int
	enc Encoding
}

// NewStream returns a Stream over b that starts reading at pos.
func NewStream(b []byte, pos int, enc Encoding) *Stream {
	return &Stream{b: b, pos: pos, enc: enc}
}

// Pos returns the position of the next byte the stream reads.
func (s *Stream) Pos() int { return s.pos }

// Byte reads one plain byte.
func (s *Stream) Byte() (byte, error) {
	if s.pos < 0 || s.pos >= len(s.b) {
		return 0, fmt.Errorf("%w: byte at %d of %d", ErrTruncated, s.pos, len(s.b))
	}
	b := s.b[s.pos]
	s.pos++
	return b, nil
}

// Uint reads an unsigned value (read_int in HotSpot). A value of five
// bytes wraps around 32 bits as HotSpot's does.
func (s *Stream) Uint() (uint32, error) {
	x, l := s.enc.params()
	start := s.pos
	if start < 0 || start >= len(s.b) {
		return 0, fmt.Errorf("%w: value at %d of %d", ErrTruncated, start, len(s.b))
	}
	var sum uint32
	shift := uint(0)
	for i := 0; i < u5MaxLength; i++ {
		if start+i >= len(s.b) {
			return 0, fmt.Errorf("%w: value at %d, byte %d of %d", ErrTruncated, start, i, len(s.b))
		}
		b := uint32(s.b[start+i])
		if b < x {
			return 0, fmt.Errorf("%w: value at %d", ErrExcludedByte, start)
		}
		sum += (b - x) << shift
		if b < x+l || i == u5MaxLength-1 {
			s.pos = start + i + 1
			return sum, nil
		}
		shift += u5LgH
	}
	panic("unreachable")
}

// Int reads a signed value (read_signed_int: zigzag over Uint).
func (s *Stream) Int() (int32, error) {
	u, err := s.Uint()
	if err != nil {
		return 0, err
	}
	return decodeSign(u), nil
}

// decodeSign undoes UNSIGNED5's sign folding: 0, 1, 2, 3 stand for 0, -1,
// 1, -2.
func decodeSign(u uint32) int32 {
	return int32(u>>1) ^ -int32(u&1)
}
