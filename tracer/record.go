package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/stackline-dev/stackline/trace"
)

// Layout of the records in support/ebpf/trace.h.
const (
	recordTrace       = 1
	recordProcessExit = 2
	recordProcessExec = 3
	recordProcessSync = 4

	headerSize     = 40 // struct record_header
	traceFramesOff = 48 // offsetof(struct trace, frames)
	frameSize      = 16 // struct frame
	maxFrames      = 127 + 128 + 1

	frameFlagReturnAddress = 1
)

// rawFrame is one decoded struct frame.
type rawFrame struct {
	addr  uint64
	aux   uint32
	typ   trace.FrameType
	flags uint8
	extra uint16
}

// record is one decoded ring-buffer record. Frames is reused between
// decodes.
type record struct {
	kind            uint32
	pid, tid, cpu   uint32
	ktimeNS         uint64
	comm            string
	numKernelFrames int
	frames          []rawFrame
}

var errShortRecord = errors.New("record too short")

// decode parses raw into r, reusing r's frame slice.
func (r *record) decode(raw []byte) error {
	if len(raw) < headerSize {
		return fmt.Errorf("%w: %d bytes", errShortRecord, len(raw))
	}
	le := binary.LittleEndian
	r.kind = le.Uint32(raw[0:])
	r.pid = le.Uint32(raw[4:])
	r.tid = le.Uint32(raw[8:])
	r.cpu = le.Uint32(raw[12:])
	r.ktimeNS = le.Uint64(raw[16:])
	comm := raw[24:40]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	// Thread names repeat: reuse the previous string when unchanged.
	if r.comm != string(comm) {
		r.comm = string(comm)
	}
	r.frames = r.frames[:0]
	r.numKernelFrames = 0
	if r.kind != recordTrace {
		return nil
	}
	if len(raw) < traceFramesOff {
		return fmt.Errorf("%w: trace of %d bytes", errShortRecord, len(raw))
	}
	n := int(le.Uint16(raw[40:]))
	nk := int(le.Uint16(raw[42:]))
	if n > maxFrames || nk > n {
		return fmt.Errorf("trace claims %d frames (%d kernel)", n, nk)
	}
	if len(raw) < traceFramesOff+n*frameSize {
		return fmt.Errorf("%w: %d frames in %d bytes", errShortRecord, n, len(raw))
	}
	r.numKernelFrames = nk
	for i := range n {
		f := raw[traceFramesOff+i*frameSize:]
		r.frames = append(r.frames, rawFrame{
			addr:  le.Uint64(f[0:]),
			aux:   le.Uint32(f[8:]),
			typ:   trace.FrameType(f[12]),
			flags: f[13],
			extra: le.Uint16(f[14:]),
		})
	}
	return nil
}
