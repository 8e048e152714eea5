package v8

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Bounds of the search for the code holding a pc.
const (
	// codeScanBytes is how far before a pc the header of the
	// InstructionStream holding it is looked for.
	codeScanBytes = 256 << 10
	// codeScanChunk is how much one read of the search covers: a page.
	codeScanChunk = 4 << 10
	// streamHeaderScan is how far before a known code's instructions
	// its stream's header is looked for.
	streamHeaderScan = 256
)

// errNoCode says no code object was found holding a pc.
var errNoCode = errors.New("no code object holds the pc")

// streamMapOf returns the map of InstructionStreams, read from the
// stream of code (tagged), a Code with instructions of its own (not an
// embedded builtin): the word before the field pointing back to code.
func (p *Process) streamMapOf(code uint64) (uint64, error) {
	h := &p.heap
	if h.lay.CodeInlineBody != 0 {
		return 0, fmt.Errorf("%w: code with inline instructions", errNoCode)
	}
	start, err := p.instructionStart(code)
	if err != nil {
		return 0, err
	}
	if start < streamHeaderScan {
		return 0, errNoCode
	}
	var hb [streamHeaderScan]byte
	if err := h.mem.ReadAt(hb[:], start-streamHeaderScan); err != nil {
		return 0, err
	}
	for i := streamHeaderScan - 16; i >= 0; i -= 8 {
		if binary.LittleEndian.Uint64(hb[i+8:]) == code {
			m := binary.LittleEndian.Uint64(hb[i:])
			if !h.isHeapObject(m) {
				break
			}
			return m, nil
		}
	}
	return 0, fmt.Errorf("%w: no InstructionStream before the instructions of code %#x", errNoCode, code)
}

// codeAt finds the Code whose instructions hold pc: the InstructionStream
// holding them is the last object before pc whose map is streamMap (any
// object whose next field is a Code around pc while the map is not known
// yet), and its Code (the field after the map) has instructions around
// pc. It returns the Code (tagged) and its instructions' start.
func (p *Process) codeAt(streamMap, pc uint64) (uint64, uint64, error) {
	h := &p.heap
	lay := h.lay
	if lay.CodeInlineBody != 0 {
		return 0, 0, fmt.Errorf("%w: code with inline instructions", errNoCode)
	}
	// Page by page, backwards: the code's pages are mapped, the memory
	// before them may not be.
	buf := make([]byte, codeScanChunk)
	end := pc&^7 + 8
	for scanned := uint64(0); scanned < codeScanBytes && end > codeScanChunk; {
		from := (end - 1) &^ (codeScanChunk - 1)
		n := int(end - from)
		scanned += uint64(n)
		if err := h.mem.ReadAt(buf[:n], from); err != nil {
			return 0, 0, err
		}
		// A header's map word in the page's last word has its code
		// field on the next page: read it from there.
		for i := n - 8; i >= 0; i -= 8 {
			w := binary.LittleEndian.Uint64(buf[i:])
			if streamMap != 0 && w != streamMap || streamMap == 0 && !h.isHeapObject(w) {
				continue
			}
			stream := from + uint64(i)
			var code uint64
			if i+16 <= n {
				code = binary.LittleEndian.Uint64(buf[i+8:])
			} else {
				c, err := h.word(stream+lay.HeapObjectTag, pointerSize)
				if err != nil {
					continue
				}
				code = c
			}
			if !h.isHeapObject(code) || h.expect(code, lay.Types.Code, "stream's Code") != nil {
				continue
			}
			s, err := p.instructionStart(code)
			if err != nil || s <= stream || s-stream >= streamHeaderScan {
				continue
			}
			size, err := h.u32(code, lay.CodeInstructionSize)
			if err != nil {
				continue
			}
			if pc >= s && pc < s+uint64(size) {
				return code, s, nil
			}
			// The last stream before pc does not hold it.
			return 0, 0, errNoCode
		}
		end = from
	}
	return 0, 0, errNoCode
}
