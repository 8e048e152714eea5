package v8

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/stackline-dev/stackline/interpreter"

	"github.com/stackline-dev/stackline/interpreter/namecache"
)

// image is a process memory image holding V8 objects laid out as lay
// says, built by the tests (the live tests read real processes).
type image struct {
	base uint64
	b    []byte
	lay  *Layout
	c    *Constants
	maps map[uint16]uint64
}

func newImage(t testing.TB, consts string) *image {
	c := fixture(t, consts)
	lay, err := NewLayout(c)
	if err != nil {
		t.Fatal(err)
	}
	return &image{base: 0x100000, lay: lay, c: c, maps: map[uint16]uint64{}}
}

// ReadAt implements interpreter.Memory.
func (im *image) ReadAt(p []byte, addr uint64) error {
	if addr < im.base || addr-im.base > uint64(len(im.b)) || uint64(len(p)) > uint64(len(im.b))-(addr-im.base) {
		return fmt.Errorf("%w: %#x+%d outside the image", interpreter.ErrUnreadable, addr, len(p))
	}
	copy(p, im.b[addr-im.base:])
	return nil
}

// alloc returns the tagged address of n new zeroed bytes.
func (im *image) alloc(n int) uint64 {
	a := im.base + uint64(len(im.b))
	im.b = append(im.b, make([]byte, (n+7)&^7)...)
	return a + im.lay.HeapObjectTag
}

func (im *image) put64(obj uint64, off uint32, v uint64) {
	binary.LittleEndian.PutUint64(im.b[obj-im.lay.HeapObjectTag-im.base+uint64(off):], v)
}

func (im *image) put32(obj uint64, off uint32, v uint32) {
	binary.LittleEndian.PutUint32(im.b[obj-im.lay.HeapObjectTag-im.base+uint64(off):], v)
}

func (im *image) smi(v int64) uint64 { return uint64(v) << im.lay.SmiShift }

// typ returns the instance type constant named type_name.
func (im *image) typ(t testing.TB, name string) uint16 {
	v, ok := im.c.Values["type_"+name]
	if !ok {
		t.Fatalf("no type_%s", name)
	}
	return uint16(v)
}

// object allocates an object of instance type ty and size bytes.
func (im *image) object(ty uint16, size int) uint64 {
	m, ok := im.maps[ty]
	if !ok {
		m = im.alloc(int(im.lay.MapInstanceType) + 8)
		binary.LittleEndian.PutUint16(im.b[m-1-im.base+uint64(im.lay.MapInstanceType):], ty)
		im.maps[ty] = m
	}
	o := im.alloc(size)
	im.put64(o, im.lay.MapOffset, m)
	return o
}

// strType is the instance type of a (not internalized) string of
// representation rep: V8's string types are tag bits.
func (im *image) strType(rep uint16, oneByte bool) uint16 {
	s := &im.lay.Strings
	ty := 0x20 | rep // kNotInternalizedTag
	if oneByte {
		ty |= s.OneByteTag
	}
	return ty
}

func (im *image) seqOne(t testing.TB, s string) uint64 {
	b := []byte(s) // ASCII or Latin-1 bytes
	o := im.object(im.strType(im.lay.Strings.SeqTag, true), int(im.lay.Strings.SeqOneByteChars)+len(b))
	im.put32(o, im.lay.Strings.Length, uint32(len(b)))
	copy(im.b[o-1-im.base+uint64(im.lay.Strings.SeqOneByteChars):], b)
	return o
}

func (im *image) seqTwo(t testing.TB, s string) uint64 {
	u := utf16.Encode([]rune(s))
	o := im.object(im.strType(im.lay.Strings.SeqTag, false), int(im.lay.Strings.SeqTwoByteChars)+2*len(u))
	im.put32(o, im.lay.Strings.Length, uint32(len(u)))
	for i, c := range u {
		binary.LittleEndian.PutUint16(im.b[o-1-im.base+uint64(im.lay.Strings.SeqTwoByteChars)+uint64(2*i):], c)
	}
	return o
}

func (im *image) length(s uint64) uint32 {
	return binary.LittleEndian.Uint32(im.b[s-1-im.base+uint64(im.lay.Strings.Length):])
}

func (im *image) cons(t testing.TB, a, b uint64) uint64 {
	o := im.object(im.strType(im.lay.Strings.ConsTag, true), int(im.lay.Strings.ConsSecond)+8)
	im.put32(o, im.lay.Strings.Length, im.length(a)+im.length(b))
	im.put64(o, im.lay.Strings.ConsFirst, a)
	im.put64(o, im.lay.Strings.ConsSecond, b)
	return o
}

func (im *image) thin(t testing.TB, a uint64) uint64 {
	o := im.object(im.strType(im.lay.Strings.ThinTag, true), int(im.lay.Strings.ThinActual)+8)
	im.put32(o, im.lay.Strings.Length, im.length(a))
	im.put64(o, im.lay.Strings.ThinActual, a)
	return o
}

func (im *image) sliced(t testing.TB, parent uint64, off, n int) uint64 {
	o := im.object(im.strType(im.lay.Strings.SlicedTag, true), int(im.lay.Strings.SlicedOffset)+8)
	im.put32(o, im.lay.Strings.Length, uint32(n))
	im.put64(o, im.lay.Strings.SlicedParent, parent)
	im.put64(o, im.lay.Strings.SlicedOffset, im.smi(int64(off)))
	return o
}

func (im *image) external(t testing.TB, s string) uint64 {
	data := im.alloc(len(s)) - 1
	copy(im.b[data-im.base:], s)
	o := im.object(im.strType(im.lay.Strings.ExternalTag, true), int(im.lay.Strings.ExternalData)+8)
	im.put32(o, im.lay.Strings.Length, uint32(len(s)))
	im.put64(o, im.lay.Strings.ExternalData, data)
	return o
}

func (im *image) fixedArray(t testing.TB, elems []uint64) uint64 {
	o := im.object(im.typ(t, "FixedArray__FIXED_ARRAY_TYPE"), int(im.lay.FixedArrayData)+8*len(elems))
	im.put64(o, im.lay.FixedArrayLength, im.smi(int64(len(elems))))
	for i, e := range elems {
		im.put64(o, im.lay.FixedArrayData+uint32(8*i), e)
	}
	return o
}

func (im *image) heap() *heap { return &heap{mem: im, lay: im.lay} }

func TestStrings(t *testing.T) {
	for _, consts := range []string{"node20", "node24"} {
		t.Run(consts, func(t *testing.T) {
			im := newImage(t, consts)
			hello := im.seqOne(t, "hello, ")
			world := im.seqTwo(t, "wörld 函数")
			long := im.seqOne(t, strings.Repeat("x", 5000))
			cases := map[string]uint64{
				"hello, ":                         hello,
				"wörld 函数":                        world,
				"hello, wörld 函数":                 im.cons(t, hello, world),
				"ello":                            im.sliced(t, hello, 1, 4),
				"llo, wö":                         im.sliced(t, im.cons(t, hello, world), 2, 7),
				"hello, hello, ":                  im.cons(t, im.thin(t, hello), im.thin(t, im.thin(t, hello))),
				"node:internal/fs":                im.external(t, "node:internal/fs"),
				strings.Repeat("x", maxNameBytes): long,
			}
			h := im.heap()
			for want, v := range cases {
				got, err := h.str(v, maxNameBytes)
				if err != nil || got != want {
					t.Errorf("%q: got %q, %v", want, got, err)
				}
			}
			// A name cut at the bound stays valid UTF-8.
			if got, err := h.str(world, 8); err != nil || got != "wörld " {
				t.Errorf("cut two-byte string: %q, %v", got, err)
			}
			// Deeper than the bound.
			deep := hello
			for range maxStringDepth + 2 {
				deep = im.thin(t, deep)
			}
			if _, err := h.str(deep, 100); !errors.Is(err, ErrBadObject) {
				t.Errorf("thin string %d deep: %v", maxStringDepth+2, err)
			}
			// Not a string.
			arr := im.fixedArray(t, nil)
			if _, err := h.str(arr, 100); !errors.Is(err, ErrBadObject) {
				t.Errorf("fixed array as a string: %v", err)
			}
			if _, err := h.str(im.smi(5), 100); !errors.Is(err, ErrBadObject) {
				t.Errorf("Smi as a string: %v", err)
			}
			if _, err := h.str(0xdead0001, 100); !errors.Is(err, interpreter.ErrUnreadable) {
				t.Errorf("unmapped string: %v", err)
			}
		})
	}
}

// TestSourceLines checks lines computed from a source V8 has not
// computed line ends of (read in bounded chunks, V8's terminators)
// against V8's own line ends, and the binary search of line ends too
// long to cache.
func TestSourceLines(t *testing.T) {
	im := newImage(t, "node24")
	h := im.heap()
	src := "a\r\nbc\rd\n" + strings.Repeat("line\n", 3*sourceChunk/5) + "\u2028end"
	u := utf16.Encode([]rune(src))
	// V8's line ends: \n, \r not before \n, U+2028, U+2029; then the
	// length.
	var ends []int32
	for i, c := range u {
		if c == '\n' || c == 0x2028 || c == 0x2029 || c == '\r' && (i+1 == len(u) || u[i+1] != '\n') {
			ends = append(ends, int32(i))
		}
	}
	ends = append(ends, int32(len(u)))
	half := len(src) / 2
	source := im.cons(t, im.seqOne(t, src[:half]), im.seqTwo(t, src[half:]))
	p := &Process{heap: *h, cache: newCache(1<<20, namecache.NewBudget(1<<20))}
	sc := &scriptInfo{source: source, srcLen: len(u), pendingCR: -1}
	for _, off := range []int{0, 1, 2, 3, 5, 6, 7, 8, 100, sourceChunk + 3, len(u) - 4, len(u) - 1} {
		wl, wc, _ := LineColumn(ends, off)
		if l, c := p.lineColumn(sc, off); l != wl || c != wc {
			t.Errorf("offset %d: scanned %d:%d, want %d:%d", off, l, c, wl, wc)
		}
	}
	if !sc.complete || len(sc.ends) != len(ends) {
		t.Errorf("scanned to the end: complete %v, %d ends, want %d", sc.complete, len(sc.ends), len(ends))
	}
	// Line ends V8 computed, too many to cache: searched in place.
	many := make([]uint64, maxCachedLineEnds+10)
	for i := range many {
		many[i] = im.smi(int64(10 * (i + 1)))
	}
	arr := im.fixedArray(t, many)
	big := &scriptInfo{pendingCR: -1}
	p.readLineEnds(big, arr)
	if big.remote == 0 || big.ends != nil {
		t.Fatalf("line ends of %d not searched in place", len(many))
	}
	for off, want := range map[int][2]int{0: {1, 1}, 10: {1, 11}, 11: {2, 1}, 25: {3, 5}, 10 * (maxCachedLineEnds + 5): {maxCachedLineEnds + 5, 10}} {
		if l, c := p.lineColumn(big, off); l != want[0] || c != want[1] {
			t.Errorf("remote, offset %d: %d:%d, want %d:%d", off, l, c, want[0], want[1])
		}
	}
	// Beyond the scan bound there is no line.
	huge := im.seqOne(t, strings.Repeat("y", maxSourceScan+100))
	hs := &scriptInfo{source: huge, srcLen: maxSourceScan + 100, pendingCR: -1}
	if l, _ := p.lineColumn(hs, maxSourceScan+50); l != 0 {
		t.Errorf("offset past the scan bound has line %d", l)
	}
	if l, c := p.lineColumn(hs, 42); l != 1 || c != 43 {
		t.Errorf("offset 42 of one long line: %d:%d", l, c)
	}
}

// TestCacheBounds: the cache never holds more than its process limit
// nor more than the shared budget, and gives its bytes back on close.
func TestCacheBounds(t *testing.T) {
	budget := namecache.NewBudget(1000)
	a, b := newCache(600, budget), newCache(600, budget)
	for i := range 100 {
		a.put(cacheKey{kindSFI, uint64(i)}, [4]uint64{1}, 50, i)
		b.put(cacheKey{kindSFI, uint64(i)}, [4]uint64{1}, 70, i)
		if used := budget.Stats().Bytes; a.Bytes() > 600 || b.Bytes() > 600 || used > 1000 || used != a.Bytes()+b.Bytes() {
			t.Fatalf("after %d: a %d, b %d, budget %d", i, a.Bytes(), b.Bytes(), used)
		}
	}
	if _, ok := a.get(cacheKey{kindSFI, 99}, [4]uint64{1}); !ok {
		t.Error("the newest entry was evicted")
	}
	if _, ok := a.get(cacheKey{kindSFI, 99}, [4]uint64{2}); ok || budget.Stats().Stale != 1 {
		t.Error("an entry with another check value was used")
	}
	if _, ok := a.get(cacheKey{kindSFI, 99}, [4]uint64{1}); ok {
		t.Error("a stale entry survived")
	}
	a.put(cacheKey{kindSFI, 1000}, [4]uint64{1}, 601, nil)
	if _, ok := a.get(cacheKey{kindSFI, 1000}, [4]uint64{1}); ok {
		t.Error("an entry over the process limit was cached")
	}
	a.Purge()
	b.Purge()
	if used := budget.Stats().Bytes; used != 0 {
		t.Errorf("budget holds %d after clear", used)
	}
}
