package symbolizer

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/ulikunitz/xz"
)

// Limits on MiniDebugInfo: the compressed section, the ELF file inside it,
// and the LZMA2 dictionary its first block may ask the decoder to allocate.
const (
	maxMiniDebugCompressed = 64 << 20
	maxMiniDebugSize       = 256 << 20
	maxXZDictCode          = 30 // 128 MiB
)

// miniDebugInfo decompresses a .gnu_debugdata section (MiniDebugInfo: an
// xz-compressed ELF file holding a .symtab) and opens the ELF file in it.
func miniDebugInfo(sec *elf.Section) (*elf.File, error) {
	if sec.Type == elf.SHT_NOBITS || compressed(sec) || sec.Size > maxMiniDebugCompressed {
		return nil, fmt.Errorf("gnu_debugdata: unusable section of %d bytes", sec.Size)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("gnu_debugdata: %w", err)
	}
	if err := checkXZDict(data); err != nil {
		return nil, fmt.Errorf("gnu_debugdata: %w", err)
	}
	zr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("gnu_debugdata: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxMiniDebugSize+1))
	if err != nil {
		return nil, fmt.Errorf("gnu_debugdata: decompress: %w", err)
	}
	if len(out) > maxMiniDebugSize {
		return nil, fmt.Errorf("gnu_debugdata: more than %d bytes uncompressed", maxMiniDebugSize)
	}
	ef, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("gnu_debugdata: %w", err)
	}
	return ef, nil
}

// checkXZDict rejects an xz stream whose first block asks for an LZMA2
// dictionary larger than 2^(maxXZDictCode/2+12) bytes, which the decoder
// would allocate before reading any data.
func checkXZDict(data []byte) error {
	const streamHeader = 12
	if len(data) < streamHeader+2 || !bytes.HasPrefix(data, []byte("\xfd7zXZ\x00")) {
		return errors.New("not an xz stream")
	}
	b := data[streamHeader:]
	size := (int(b[0]) + 1) * 4
	if b[0] == 0 || size > len(b) {
		return nil // an index, or truncated: the decoder reports it
	}
	hdr := b[1 : size-4]
	flags := hdr[0]
	hdr = hdr[1:]
	next := func() (uint64, bool) {
		var v uint64
		for i := 0; i < len(hdr) && i < 9; i++ {
			v |= uint64(hdr[i]&0x7f) << (7 * i)
			if hdr[i] < 0x80 {
				hdr = hdr[i+1:]
				return v, true
			}
		}
		return 0, false
	}
	if flags&0x40 != 0 {
		if _, ok := next(); !ok {
			return errors.New("bad xz block header")
		}
	}
	if flags&0x80 != 0 {
		if _, ok := next(); !ok {
			return errors.New("bad xz block header")
		}
	}
	for range int(flags&3) + 1 {
		id, ok1 := next()
		n, ok2 := next()
		if !ok1 || !ok2 || n > uint64(len(hdr)) {
			return errors.New("bad xz block header")
		}
		if id == 0x21 && n == 1 && hdr[0] > maxXZDictCode {
			return fmt.Errorf("xz dictionary code %d too large", hdr[0])
		}
		hdr = hdr[n:]
	}
	return nil
}
