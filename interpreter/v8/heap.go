package v8

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/stackline-dev/stackline/interpreter"
)

// ErrBadObject says process memory does not hold the V8 object expected
// there: a value that is not a heap object, an object of another type, a
// length out of bounds. The object moved or died, or the address was
// wrong.
var ErrBadObject = errors.New("not the expected V8 object")

// Bounds on reads of V8 objects.
const (
	// maxNameBytes bounds a function or script name (UTF-8 bytes).
	maxNameBytes = 1024
	// maxStringDepth bounds the cons/thin/sliced strings followed to
	// reach characters.
	maxStringDepth = 16
	// maxStringPieces bounds the sequential pieces read for one string
	// (a cons string of many small pieces).
	maxStringPieces = 4096
	// maxTableBytes bounds a byte array (position table) or a fixed
	// array read whole.
	maxTableBytes = 1 << 20
)

// heap reads V8 objects of one process.
type heap struct {
	mem interpreter.Memory
	lay *Layout
}

func (h *heap) isHeapObject(v uint64) bool {
	return v&h.lay.HeapObjectTagMask == h.lay.HeapObjectTag && v > 0x1000
}

func (h *heap) isSmi(v uint64) bool { return v&h.lay.SmiTagMask == 0 }

func (h *heap) smi(v uint64) int64 { return int64(v) >> h.lay.SmiShift }

// untag returns the object's address.
func (h *heap) untag(v uint64) uint64 { return v - h.lay.HeapObjectTag }

// word reads the pointer-sized field at off of the tagged object obj.
func (h *heap) word(obj uint64, off uint32) (uint64, error) {
	var b [8]byte
	if err := h.mem.ReadAt(b[:], h.untag(obj)+uint64(off)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// u32 reads the 4-byte field at off of the tagged object obj.
func (h *heap) u32(obj uint64, off uint32) (uint32, error) {
	var b [4]byte
	if err := h.mem.ReadAt(b[:], h.untag(obj)+uint64(off)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// smiField reads a Smi field.
func (h *heap) smiField(obj uint64, off uint32) (int64, error) {
	w, err := h.word(obj, off)
	if err != nil {
		return 0, err
	}
	if !h.isSmi(w) {
		return 0, fmt.Errorf("%w: field +%d of %#x is %#x, not a small integer", ErrBadObject, off, obj, w)
	}
	return h.smi(w), nil
}

// typeOf returns the instance type of the heap object v.
func (h *heap) typeOf(v uint64) (uint16, error) {
	if !h.isHeapObject(v) {
		return 0, fmt.Errorf("%w: %#x is not a heap object", ErrBadObject, v)
	}
	m, err := h.word(v, h.lay.MapOffset)
	if err != nil {
		return 0, err
	}
	if !h.isHeapObject(m) {
		return 0, fmt.Errorf("%w: map of %#x is %#x", ErrBadObject, v, m)
	}
	var b [2]byte
	if err := h.mem.ReadAt(b[:], h.untag(m)+uint64(h.lay.MapInstanceType)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b[:]), nil
}

// expect checks that v is a heap object of type t.
func (h *heap) expect(v uint64, t uint16, what string) error {
	got, err := h.typeOf(v)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if got != t {
		return fmt.Errorf("%w: %s %#x has instance type %d, want %d", ErrBadObject, what, v, got, t)
	}
	return nil
}

// byteArray reads a byte array (ByteArray, TrustedByteArray) whole.
func (h *heap) byteArray(v uint64, what string) ([]byte, error) {
	t, err := h.typeOf(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !h.lay.isByteArray(t) {
		return nil, fmt.Errorf("%w: %s %#x has instance type %d, not a byte array", ErrBadObject, what, v, t)
	}
	n, err := h.smiField(v, h.lay.FixedArrayLength)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if n < 0 || n > maxTableBytes {
		return nil, fmt.Errorf("%w: %s of %d bytes (limit %d)", ErrBadObject, what, n, maxTableBytes)
	}
	b := make([]byte, n)
	// A byte array's data follows its length, as a fixed array's.
	if err := h.mem.ReadAt(b, h.untag(v)+uint64(h.lay.FixedArrayData)); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// fixedArrayLen checks v is a fixed array and returns its length.
func (h *heap) fixedArrayLen(v uint64, what string) (int64, error) {
	t, err := h.typeOf(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if !h.lay.isFixedArray(t) {
		return 0, fmt.Errorf("%w: %s %#x has instance type %d, not a fixed array", ErrBadObject, what, v, t)
	}
	n, err := h.smiField(v, h.lay.FixedArrayLength)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if n < 0 || n > maxTableBytes/pointerSize {
		return 0, fmt.Errorf("%w: %s of %d elements", ErrBadObject, what, n)
	}
	return n, nil
}

// fixedArray reads up to max elements of the fixed array v.
func (h *heap) fixedArray(v uint64, limit int64, what string) ([]uint64, error) {
	n, err := h.fixedArrayLen(v, what)
	if err != nil {
		return nil, err
	}
	n = min(n, limit)
	b := make([]byte, n*pointerSize)
	if err := h.mem.ReadAt(b, h.untag(v)+uint64(h.lay.FixedArrayData)); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[i*pointerSize:])
	}
	return out, nil
}

// isString reports whether the instance type t is a string's.
func (h *heap) isString(t uint16) bool { return t < h.lay.Types.FirstNonstring }

// chunk is a piece of a string's characters: Latin-1 bytes or UTF-16
// units.
type chunk struct {
	one []byte
	two []uint16
}

// walkString calls fn with the characters [start, start+n) of the
// string v, in order, in pieces, following cons, thin and sliced
// strings. It reads at most n characters.
func (h *heap) walkString(v uint64, start, n int, fn func(chunk) error) error {
	pieces := 0
	return h.walk(v, start, n, 0, &pieces, fn)
}

func (h *heap) walk(v uint64, start, n, depth int, pieces *int, fn func(chunk) error) error {
	if n <= 0 {
		return nil
	}
	if depth > maxStringDepth {
		return fmt.Errorf("%w: string nested deeper than %d", ErrBadObject, maxStringDepth)
	}
	t, err := h.typeOf(v)
	if err != nil {
		return err
	}
	if !h.isString(t) {
		return fmt.Errorf("%w: %#x has instance type %d, not a string", ErrBadObject, v, t)
	}
	s := &h.lay.Strings
	length32, err := h.u32(v, s.Length)
	if err != nil {
		return err
	}
	length := int(int32(length32))
	if length < 0 || start < 0 || start > length {
		return fmt.Errorf("%w: string of length %d read at %d", ErrBadObject, length, start)
	}
	n = min(n, length-start)
	oneByte := t&s.EncodingMask == s.OneByteTag
	switch t & s.RepresentationMask {
	case s.SeqTag, s.ExternalTag:
		*pieces++
		if *pieces > maxStringPieces {
			return fmt.Errorf("%w: string of over %d pieces", ErrBadObject, maxStringPieces)
		}
		var base uint64
		if t&s.RepresentationMask == s.SeqTag {
			off := s.SeqTwoByteChars
			if oneByte {
				off = s.SeqOneByteChars
			}
			base = h.untag(v) + uint64(off)
		} else {
			if t == h.lay.Types.UncachedExternalOne || t == h.lay.Types.UncachedExtTwo {
				return fmt.Errorf("%w: uncached external string %#x", ErrBadObject, v)
			}
			if base, err = h.word(v, s.ExternalData); err != nil {
				return err
			}
		}
		if oneByte {
			b := make([]byte, n)
			if err := h.mem.ReadAt(b, base+uint64(start)); err != nil {
				return err
			}
			return fn(chunk{one: b})
		}
		b := make([]byte, 2*n)
		if err := h.mem.ReadAt(b, base+2*uint64(start)); err != nil {
			return err
		}
		u := make([]uint16, n)
		for i := range u {
			u[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
		return fn(chunk{two: u})
	case s.ConsTag:
		first, err := h.word(v, s.ConsFirst)
		if err != nil {
			return err
		}
		second, err := h.word(v, s.ConsSecond)
		if err != nil {
			return err
		}
		fl, err := h.u32(first, s.Length)
		if err != nil {
			return err
		}
		firstLen := int(int32(fl))
		if firstLen < 0 || firstLen > length {
			return fmt.Errorf("%w: cons string part of length %d in %d", ErrBadObject, firstLen, length)
		}
		if start < firstLen {
			k := min(n, firstLen-start)
			if err := h.walk(first, start, k, depth+1, pieces, fn); err != nil {
				return err
			}
			start, n = firstLen, n-k
		}
		return h.walk(second, start-firstLen, n, depth+1, pieces, fn)
	case s.ThinTag:
		actual, err := h.word(v, s.ThinActual)
		if err != nil {
			return err
		}
		return h.walk(actual, start, n, depth+1, pieces, fn)
	case s.SlicedTag:
		parent, err := h.word(v, s.SlicedParent)
		if err != nil {
			return err
		}
		off, err := h.smiField(v, s.SlicedOffset)
		if err != nil {
			return err
		}
		if off < 0 || off > 1<<31 {
			return fmt.Errorf("%w: sliced string offset %d", ErrBadObject, off)
		}
		return h.walk(parent, start+int(off), n, depth+1, pieces, fn)
	}
	return fmt.Errorf("%w: string representation %d of type %d", ErrBadObject, t&s.RepresentationMask, t)
}

// str reads the string v as UTF-8, at most maxBytes bytes of it (cut at
// a character boundary).
func (h *heap) str(v uint64, maxBytes int) (string, error) {
	var sb strings.Builder
	full := errors.New("full")
	err := h.walkString(v, 0, maxBytes, func(c chunk) error {
		for _, b := range c.one {
			if sb.Len()+utf8.RuneLen(rune(b)) > maxBytes {
				return full
			}
			sb.WriteRune(rune(b))
		}
		for _, r := range utf16.Decode(c.two) {
			if sb.Len()+utf8.RuneLen(r) > maxBytes {
				return full
			}
			sb.WriteRune(r)
		}
		return nil
	})
	if err != nil && err != full {
		return "", err
	}
	return sb.String(), nil
}
