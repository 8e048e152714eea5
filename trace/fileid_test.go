package trace

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

func TestFileIDFromReader(t *testing.T) {
	for _, size := range []int{0, 1, 4095, 4096, 4097, 8192, 100000} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		got, err := FileIDFromReader(bytes.NewReader(data), int64(size))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		// Reference: the definition written out directly.
		n := min(size, 4096)
		h := sha256.New()
		h.Write(data[:n])
		h.Write(data[size-n:])
		var l [8]byte
		binary.BigEndian.PutUint64(l[:], uint64(size))
		h.Write(l[:])
		var want FileID
		copy(want[:], h.Sum(nil))
		if got != want {
			t.Errorf("size %d: got %s want %s", size, got, want)
		}
	}
}

func TestFileIDDiffers(t *testing.T) {
	a := make([]byte, 10000)
	b := make([]byte, 10000)
	b[9999] = 1
	ia, _ := FileIDFromReader(bytes.NewReader(a), 10000)
	ib, _ := FileIDFromReader(bytes.NewReader(b), 10000)
	if ia == ib {
		t.Fatal("files differing in their last byte share a FileID")
	}
	if KernelFileID("vmlinux", "ab") == KernelFileID("vmlinux", "ac") {
		t.Fatal("kernel file IDs ignore the build ID")
	}
}
