package hotspot

import (
	"errors"
	"math"
	"testing"
)

// appendUint encodes v as enc encodes it (the decoders only read, the
// tests and fuzz seeds write).
func appendUint(b []byte, v uint32, enc Encoding) []byte {
	x, l := enc.params()
	const h = 1 << u5LgH
	for i := 0; ; i++ {
		if v < l || i == u5MaxLength-1 {
			return append(b, byte(x+v))
		}
		v -= l
		b = append(b, byte(x+l+v%h))
		v >>= u5LgH
	}
}

// appendInt encodes a signed v (zigzag, then appendUint).
func appendInt(b []byte, v int32, enc Encoding) []byte {
	return appendUint(b, uint32(v<<1)^uint32(v>>31), enc)
}

func TestUnsigned5KnownBytes(t *testing.T) {
	for _, tc := range []struct {
		enc  Encoding
		b    []byte
		want uint32
	}{
		// JDK 17: bytes under 192 are values.
		{EncodingJDK17, []byte{0}, 0},
		{EncodingJDK17, []byte{191}, 191},
		// 192 + 64*1 = 256; then the low byte 1 adds 64.
		{EncodingJDK17, []byte{192, 1}, 192 + 64},
		{EncodingJDK17, []byte{255, 191}, 255 + 191*64},
		// Five bytes wrap around 32 bits: 255*(1+64+64²+64³+64⁴) mod 2³².
		{EncodingJDK17, []byte{255, 255, 255, 255, 255}, 51130559},
		// JDK 21: one excluded byte, values are bytes minus one.
		{EncodingUnsigned5, []byte{1}, 0},
		{EncodingUnsigned5, []byte{191}, 190},
		// 0xBE (190) is the largest one-byte value; 191 takes two.
		{EncodingUnsigned5, []byte{192, 1}, 191},
		{EncodingUnsigned5, []byte{255, 191}, 254 + 190*64},
		// 254*(1+64+64²+64³+64⁴) mod 2³².
		{EncodingUnsigned5, []byte{255, 255, 255, 255, 255}, 34087038},
	} {
		s := NewStream(tc.b, 0, tc.enc)
		got, err := s.Uint()
		if err != nil || got != tc.want {
			t.Errorf("%v % x: Uint = %d, %v; want %d", tc.enc, tc.b, got, err, tc.want)
		}
		if s.Pos() != len(tc.b) {
			t.Errorf("%v % x: read %d bytes, want %d", tc.enc, tc.b, s.Pos(), len(tc.b))
		}
	}
}

// TestUnsigned5Lengths checks the length boundaries: values up to 0xBE,
// 0x307E, 0xC207E and 0x308207E take 1, 2, 3 and 4 bytes (unsigned5.hpp's
// comment says 0x308207F for 4, its encoded_length computes 0x308207E).
func TestUnsigned5Lengths(t *testing.T) {
	for _, tc := range []struct {
		v   uint32
		len int
	}{
		{0, 1}, {0xBE, 1}, {0xBF, 2}, {0x307E, 2}, {0x307F, 3},
		{0xC207E, 3}, {0xC207F, 4}, {0x308207E, 4}, {0x308207F, 5}, {math.MaxUint32, 5},
	} {
		if got := len(appendUint(nil, tc.v, EncodingUnsigned5)); got != tc.len {
			t.Errorf("%#x takes %d bytes, want %d", tc.v, got, tc.len)
		}
	}
}

func TestUnsigned5RoundTrip(t *testing.T) {
	values := []uint32{0, 1, 63, 64, 190, 191, 192, 255, 256, 0x307E, 0x307F, 12345, 0xC207F, 1 << 24, 0x308207F, 0x3082080, 1<<31 - 1, 1 << 31, math.MaxUint32}
	signed := []int32{0, -1, 1, -2, 2, 100, -100, 95, -96, math.MaxInt32, math.MinInt32, -65536}
	for _, enc := range []Encoding{EncodingJDK17, EncodingUnsigned5} {
		var b []byte
		for _, v := range values {
			b = appendUint(b, v, enc)
		}
		for _, v := range signed {
			b = appendInt(b, v, enc)
		}
		if enc == EncodingUnsigned5 {
			for _, c := range b {
				if c == 0 {
					t.Fatalf("%v: zero byte in % x", enc, b)
				}
			}
		}
		s := NewStream(b, 0, enc)
		for _, want := range values {
			if got, err := s.Uint(); err != nil || got != want {
				t.Errorf("%v: Uint = %d, %v; want %d", enc, got, err, want)
			}
		}
		for _, want := range signed {
			if got, err := s.Int(); err != nil || got != want {
				t.Errorf("%v: Int = %d, %v; want %d", enc, got, err, want)
			}
		}
		if _, err := s.Uint(); !errors.Is(err, ErrTruncated) {
			t.Errorf("%v: Uint at the end: %v, want ErrTruncated", enc, err)
		}
	}
}

func TestUnsigned5Errors(t *testing.T) {
	for _, tc := range []struct {
		enc  Encoding
		b    []byte
		pos  int
		want error
	}{
		{EncodingJDK17, nil, 0, ErrTruncated},
		{EncodingJDK17, []byte{200}, 0, ErrTruncated},
		{EncodingJDK17, []byte{200, 200, 200, 200}, 0, ErrTruncated},
		{EncodingJDK17, []byte{1}, 1, ErrTruncated},
		{EncodingJDK17, []byte{1}, -1, ErrTruncated},
		{EncodingUnsigned5, []byte{0}, 0, ErrExcludedByte},
		{EncodingUnsigned5, []byte{200, 0}, 0, ErrExcludedByte},
		{EncodingUnsigned5, []byte{200, 200}, 0, ErrTruncated},
	} {
		s := NewStream(tc.b, tc.pos, tc.enc)
		if v, err := s.Uint(); !errors.Is(err, tc.want) {
			t.Errorf("%v % x at %d: Uint = %d, %v; want %v", tc.enc, tc.b, tc.pos, v, err, tc.want)
		}
		if s.Pos() != tc.pos {
			t.Errorf("%v % x: a failed read moved the stream to %d", tc.enc, tc.b, s.Pos())
		}
	}
	if _, err := NewStream(nil, 0, EncodingJDK17).Byte(); !errors.Is(err, ErrTruncated) {
		t.Errorf("Byte of nothing: %v", err)
	}
}

func TestEncodingFor(t *testing.T) {
	for v, want := range map[int]Encoding{17: EncodingJDK17, 19: EncodingJDK17, 20: EncodingUnsigned5, 21: EncodingUnsigned5, 25: EncodingUnsigned5, 0: EncodingUnsigned5} {
		if got := EncodingFor(v); got != want {
			t.Errorf("EncodingFor(%d) = %v, want %v", v, got, want)
		}
	}
}
