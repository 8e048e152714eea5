package elffile

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// byteOrder reads and appends.
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// appendNote appends an ELF note with its fields padded to align bytes.
func appendNote(b []byte, bo byteOrder, align int, name string, typ uint32, desc []byte) []byte {
	pad := func() {
		for len(b)%align != 0 {
			b = append(b, 0)
		}
	}
	b = bo.AppendUint32(b, uint32(len(name)+1))
	b = bo.AppendUint32(b, uint32(len(desc)))
	b = bo.AppendUint32(b, typ)
	b = append(append(b, name...), 0)
	pad()
	b = append(b, desc...)
	pad()
	return b
}

func TestNoteBuildIDs(t *testing.T) {
	gnu := []byte{0xde, 0xad, 0xbe, 0xef, 0x01}
	for _, c := range []struct {
		name  string
		bo    byteOrder
		align int
	}{
		{"little 4", binary.LittleEndian, 4},
		{"big 4", binary.BigEndian, 4},
		{"little 8", binary.LittleEndian, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			var data []byte
			data = appendNote(data, c.bo, c.align, "GNU", 1, []byte{0, 0, 0, 0}) // ABI tag
			data = appendNote(data, c.bo, c.align, "Xen", ntGNUBuildID, []byte{9})
			data = appendNote(data, c.bo, c.align, "Go", ntGoBuildID, []byte("abc/def\x00"))
			data = appendNote(data, c.bo, c.align, "GNU", ntGNUBuildID, gnu)
			data = appendNote(data, c.bo, c.align, "GNU", ntGNUBuildID, []byte{1, 2}) // not the first
			got := NoteBuildIDs(data, c.bo, uint64(c.align))
			if want := (BuildIDs{GNU: "deadbeef01", Go: "abc/def"}); got != want {
				t.Errorf("NoteBuildIDs = %+v, want %+v", got, want)
			}
			// A truncated note ends the search without error.
			if got := NoteBuildIDs(data[:len(data)-3], c.bo, uint64(c.align)); got.GNU != "deadbeef01" {
				t.Errorf("truncated: %+v", got)
			}
			if got := NoteBuildIDs(data[:20], c.bo, uint64(c.align)); got != (BuildIDs{}) {
				t.Errorf("cut in the first note: %+v", got)
			}
		})
	}
}

func FuzzNoteBuildIDs(f *testing.F) {
	f.Add(appendNote(nil, binary.LittleEndian, 4, "GNU", ntGNUBuildID, []byte{1, 2, 3, 4}), uint8(4))
	f.Add(appendNote(nil, binary.LittleEndian, 8, "Go", ntGoBuildID, []byte("x")), uint8(8))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0}, uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, align uint8) {
		EachNote(data, binary.LittleEndian, uint64(align), func(name []byte, typ uint32, desc []byte) {
			if len(name)+len(desc) > len(data) {
				t.Fatalf("note of %d+%d bytes in %d", len(name), len(desc), len(data))
			}
		})
		ids := NoteBuildIDs(data, binary.LittleEndian, uint64(align))
		if len(ids.GNU) > 2*len(data) || len(ids.Go) > len(data) {
			t.Fatalf("build IDs %+v from %d bytes", ids, len(data))
		}
	})
}

func TestNewReaderNotELF(t *testing.T) {
	f, err := NewReader(bytes.NewReader([]byte("#!/bin/sh\n")))
	if err == nil || f != nil {
		t.Fatalf("NewReader(shell script) = %v, %v; want an error", f, err)
	}
}
