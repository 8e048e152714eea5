package trace

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
)

// hashChunk is how many bytes FileIDFromReader reads from each end of a file.
const hashChunk = 4096

// FileIDFromReader computes the htlhash of a file of the given size: SHA-256
// over its first 4096 bytes, its last 4096 bytes and its length as a
// big-endian uint64, truncated to 16 bytes. Files shorter than 4096 bytes
// contribute all their bytes twice, as the definition implies.
func FileIDFromReader(r io.ReaderAt, size int64) (FileID, error) {
	if size < 0 {
		return FileID{}, fmt.Errorf("file id: negative size %d", size)
	}
	h := sha256.New()
	n := min(size, hashChunk)
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 0); err != nil && err != io.EOF {
		return FileID{}, fmt.Errorf("file id: read head: %w", err)
	}
	h.Write(buf)
	if _, err := r.ReadAt(buf, size-n); err != nil && err != io.EOF {
		return FileID{}, fmt.Errorf("file id: read tail: %w", err)
	}
	h.Write(buf)
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(size))
	h.Write(l[:])
	var id FileID
	copy(id[:], h.Sum(nil))
	return id, nil
}

func fileIDOfString(s string) FileID {
	sum := sha256.Sum256([]byte(s))
	var id FileID
	copy(id[:], sum[:])
	return id
}
