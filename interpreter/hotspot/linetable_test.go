package hotspot

import (
	"errors"
	"testing"
)

// encodeLineTable writes a line table as HotSpot's
// CompressedLineNumberWriteStream does.
func encodeLineTable(entries []LineEntry, enc Encoding) []byte {
	var b []byte
	var bci, line int32
	for _, e := range entries {
		db, dl := e.BCI-bci, e.Line-line
		if db >= 0 && db < 32 && dl >= 0 && dl < 8 && (db<<3|dl) != 0xFF {
			b = append(b, byte(db<<3|dl))
		} else {
			b = append(b, 0xFF)
			b = appendInt(b, db, enc)
			b = appendInt(b, dl, enc)
		}
		bci, line = e.BCI, e.Line
	}
	return append(b, 0)
}

func TestDecodeLineTable(t *testing.T) {
	entries := LineTable{{0, 27}, {2, 28}, {10, 29}, {7, 29}, {40, 31}, {41, 31}, {300, 30}, {302, 1000}}
	for _, enc := range []Encoding{EncodingJDK17, EncodingUnsigned5} {
		b := encodeLineTable(entries, enc)
		got, n, err := DecodeLineTable(append(b, 0xAA, 0xBB), enc)
		if err != nil {
			t.Fatalf("%v: %v", enc, err)
		}
		if n != len(b) {
			t.Errorf("%v: took %d bytes, want %d", enc, n, len(b))
		}
		if len(got) != len(entries) {
			t.Fatalf("%v: %v, want %v", enc, got, entries)
		}
		for i := range got {
			if got[i] != entries[i] {
				t.Errorf("%v: entry %d = %v, want %v", enc, i, got[i], entries[i])
			}
		}
	}
}

// TestDecodeLineTableBytes decodes bytes written by hand: a first entry
// with the escape (line 27 is too far for three bits), one-byte pairs.
func TestDecodeLineTableBytes(t *testing.T) {
	// 0xFF, bci delta 0 (zigzag 0), line delta 27 (zigzag 54).
	b17 := []byte{0xFF, 0, 54, 2<<3 | 1, 8<<3 | 2, 0}
	b21 := []byte{0xFF, 1, 55, 2<<3 | 1, 8<<3 | 2, 0}
	want := LineTable{{0, 27}, {2, 28}, {10, 30}}
	for enc, b := range map[Encoding][]byte{EncodingJDK17: b17, EncodingUnsigned5: b21} {
		got, n, err := DecodeLineTable(b, enc)
		if err != nil || n != len(b) || len(got) != len(want) {
			t.Fatalf("%v: %v, %d, %v", enc, got, n, err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%v: entry %d = %v, want %v", enc, i, got[i], want[i])
			}
		}
	}
}

func TestDecodeLineTableErrors(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		enc  Encoding
		want error
	}{
		{nil, EncodingJDK17, ErrTruncated},
		{[]byte{0x11}, EncodingJDK17, ErrTruncated},
		{[]byte{0xFF}, EncodingJDK17, ErrTruncated},
		{[]byte{0xFF, 2}, EncodingJDK17, ErrTruncated},
		{[]byte{0xFF, 200}, EncodingJDK17, ErrTruncated},
		{[]byte{0xFF, 0, 2}, EncodingUnsigned5, ErrExcludedByte},
	} {
		if got, _, err := DecodeLineTable(tc.b, tc.enc); !errors.Is(err, tc.want) {
			t.Errorf("%v % x: %v, %v; want %v", tc.enc, tc.b, got, err, tc.want)
		}
	}
	// A table of one-byte entries that never ends is bounded.
	long := make([]byte, maxLineEntries+10)
	for i := range long {
		long[i] = 0x09
	}
	long = append(long, 0)
	if _, _, err := DecodeLineTable(long, EncodingJDK17); err == nil {
		t.Error("a table over the entry bound decoded")
	}
}

func TestLineTableLine(t *testing.T) {
	// Out of bci order, as javac writes loops; a repeated bci.
	lt := LineTable{{0, 10}, {5, 11}, {20, 14}, {12, 12}, {17, 13}, {12, 99}}
	for _, tc := range []struct{ bci, want int }{
		{0, 10}, {4, 10}, {5, 11}, {11, 11},
		{12, 12}, // an exact match: the first
		{13, 99}, // the later of two at the best bci
		{17, 13}, {19, 13}, {20, 14}, {1000, 14},
		{-1, 0},
	} {
		if got := lt.Line(tc.bci); got != tc.want {
			t.Errorf("Line(%d) = %d, want %d", tc.bci, got, tc.want)
		}
	}
	if got := (LineTable{{3, 7}}).Line(1); got != 0 {
		t.Errorf("Line before the first entry = %d, want 0", got)
	}
	if got := LineTable(nil).Line(0); got != 0 {
		t.Errorf("Line of an empty table = %d", got)
	}
}
