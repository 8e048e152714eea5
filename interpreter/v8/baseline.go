package v8

import (
	"errors"
	"fmt"
)

// Sparkplug (baseline) code maps its pcs to bytecodes with a bytecode
// offset table (src/baseline/bytecode-offset-iterator.h): unsigned VLQ
// values, the first the end of the prologue, then one a bytecode, in
// bytecode order, each the size of that bytecode's machine code. Walking
// the bytecodes (their sizes from Bytecodes::kBytecodeSizes) alongside
// gives each pc range its bytecode offset.

// ErrBadBytecode says a bytecode array or offset table does not decode.
var ErrBadBytecode = errors.New("bad bytecode or bytecode offset table")

// The operand scale prefixes, the first bytecodes (Wide, ExtraWide and
// their DebugBreak forms).
const (
	bytecodeWide                = 0
	bytecodeExtraWide           = 1
	bytecodeDebugBreakWide      = 2
	bytecodeDebugBreakExtraWide = 3
)

// decodeUVLQ decodes one unsigned VLQ value at b[i:].
func decodeUVLQ(b []byte, i int) (uint64, int, error) {
	var u uint64
	for n := 0; ; n++ {
		if i >= len(b) {
			return 0, i, fmt.Errorf("%w: value cut at byte %d", ErrBadBytecode, i)
		}
		if n == maxVLQBytes {
			return 0, i, fmt.Errorf("%w: value over %d bytes", ErrBadBytecode, maxVLQBytes)
		}
		c := b[i]
		i++
		u |= uint64(c&0x7f) << (7 * n)
		if c&0x80 == 0 {
			return u, i, nil
		}
	}
}

// bytecodeSize returns the size of the bytecode at bytecodes[off:],
// prefix included.
func bytecodeSize(bytecodes, sizes []byte, off int) (int, error) {
	rows := len(sizes) / 3
	if off >= len(bytecodes) || rows == 0 {
		return 0, fmt.Errorf("%w: bytecode offset %d of %d", ErrBadBytecode, off, len(bytecodes))
	}
	b := int(bytecodes[off])
	scale, prefix := 0, 0
	switch b {
	case bytecodeWide, bytecodeDebugBreakWide:
		scale, prefix = 1, 1
	case bytecodeExtraWide, bytecodeDebugBreakExtraWide:
		scale, prefix = 2, 1
	}
	if prefix == 1 {
		if off+1 >= len(bytecodes) {
			return 0, fmt.Errorf("%w: prefix at the end", ErrBadBytecode)
		}
		b = int(bytecodes[off+1])
	}
	if b >= rows {
		return 0, fmt.Errorf("%w: bytecode %#x outside the size table of %d", ErrBadBytecode, b, rows)
	}
	n := int(sizes[scale*rows+b])
	if n == 0 {
		return 0, fmt.Errorf("%w: bytecode %#x of size 0", ErrBadBytecode, b)
	}
	return prefix + n, nil
}

// BaselineBytecodeOffset returns the offset of the bytecode whose
// Sparkplug code holds pcOffset (from the code's first instruction), -1
// in the prologue. table is the baseline code's bytecode offset table,
// bytecodes the function's bytecodes, sizes Bytecodes::kBytecodeSizes.
func BaselineBytecodeOffset(table, bytecodes, sizes []byte, pcOffset int64) (int64, error) {
	if pcOffset < 0 {
		return 0, fmt.Errorf("%w: pc offset %d", ErrBadBytecode, pcOffset)
	}
	end, i, err := decodeUVLQ(table, 0)
	if err != nil {
		return 0, err
	}
	if uint64(pcOffset) < end {
		return functionEntryOffset, nil
	}
	for off := 0; off < len(bytecodes); {
		d, next, err := decodeUVLQ(table, i)
		if err != nil {
			return 0, err
		}
		i = next
		end += d
		if uint64(pcOffset) < end {
			return int64(off), nil
		}
		n, err := bytecodeSize(bytecodes, sizes, off)
		if err != nil {
			return 0, err
		}
		off += n
	}
	return 0, fmt.Errorf("%w: pc offset %d past the last bytecode's code (%d)", ErrBadBytecode, pcOffset, end)
}

// baselineInfo is what is read of Sparkplug code.
type baselineInfo struct {
	table, bytecodes []byte
	size             uint32
}

// NameBaseline names a Sparkplug frame: the JSFunction in its function
// slot, its baseline Code object (tagged pointers) and its pc as an
// offset from the code's first instruction; returnAddress as for
// NameOptimized. The pc is mapped to its bytecode, named as
// NameInterpreted names it.
func (p *Process) NameBaseline(function, code uint64, pcOffset int64, returnAddress bool) (Position, error) {
	off, err := p.baselineOffset(code, pcOffset, returnAddress)
	if err != nil {
		return Position{}, err
	}
	return p.NameInterpreted(function, off)
}

func (p *Process) baselineOffset(code uint64, pcOffset int64, returnAddress bool) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := &p.heap
	lay := h.lay
	if lay.BytecodeSizes == nil {
		return 0, fmt.Errorf("%w: the V8 file has no bytecode size table", ErrBadBytecode)
	}
	if err := h.expect(code, lay.Types.Code, "Code"); err != nil {
		return 0, err
	}
	b, err := p.header(code, max(lay.CodeDeoptData, lay.CodePositions, lay.CodeFlags, lay.CodeInstructionSize)+pointerSize)
	if err != nil {
		return 0, err
	}
	bytecode, table := field(b, lay.CodeDeoptData), field(b, lay.CodePositions)
	flags := le32(b[lay.CodeFlags:])
	size := le32(b[lay.CodeInstructionSize:])
	if kind := lay.CodeKindOf(flags); kind != lay.CodeKindBaseline {
		return 0, fmt.Errorf("%w: code kind %d is not baseline", ErrBadObject, kind)
	}
	// Not cached: nothing in baseline code tells new code from
	// collected code at the same address (it has no compilation id),
	// and its tables are small (the reporter keeps the names).
	bi := &baselineInfo{size: size}
	if bi.table, err = h.byteArray(table, "bytecode offset table"); err != nil {
		return 0, err
	}
	if err := h.expect(bytecode, lay.Types.BytecodeArray, "baseline code's bytecode"); err != nil {
		return 0, err
	}
	n, err := h.smiField(bytecode, lay.BytecodeArrayLength)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > maxTableBytes {
		return 0, fmt.Errorf("%w: bytecode array of %d bytes", ErrBadObject, n)
	}
	bi.bytecodes = make([]byte, n)
	if err := h.mem.ReadAt(bi.bytecodes, h.untag(bytecode)+uint64(lay.BytecodeArrayData)); err != nil {
		return 0, err
	}
	if pcOffset < 0 || pcOffset > int64(bi.size) {
		return 0, fmt.Errorf("%w: offset %d of %d bytes", ErrPCOutsideCode, pcOffset, bi.size)
	}
	if returnAddress && pcOffset > 0 {
		pcOffset--
	}
	return BaselineBytecodeOffset(bi.table, bi.bytecodes, lay.BytecodeSizes, pcOffset)
}
