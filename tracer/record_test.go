package tracer

import (
	"encoding/binary"
	"testing"

	"github.com/stackline-dev/stackline/trace"
)

func encodeTrace(pid, tid uint32, comm string, frames []rawFrame, nk int) []byte {
	b := make([]byte, traceFramesOff+len(frames)*frameSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], recordTrace)
	le.PutUint32(b[4:], pid)
	le.PutUint32(b[8:], tid)
	le.PutUint32(b[12:], 1)
	le.PutUint64(b[16:], 12345)
	copy(b[24:40], comm)
	le.PutUint16(b[40:], uint16(len(frames)))
	le.PutUint16(b[42:], uint16(nk))
	for i, f := range frames {
		o := traceFramesOff + i*frameSize
		le.PutUint64(b[o:], f.addr)
		b[o+12] = byte(f.typ)
		b[o+13] = f.flags
	}
	return b
}

func TestDecode(t *testing.T) {
	frames := []rawFrame{
		{addr: 0xffffffff81000010, typ: trace.FrameKernel},
		{addr: 0x401000, typ: trace.FrameNative},
		{addr: 0x401234, typ: trace.FrameNative, flags: frameFlagReturnAddress},
	}
	var r record
	if err := r.decode(encodeTrace(7, 8, "worker", frames, 1)); err != nil {
		t.Fatal(err)
	}
	if r.kind != recordTrace || r.pid != 7 || r.tid != 8 || r.comm != "worker" || r.ktimeNS != 12345 || r.numKernelFrames != 1 {
		t.Fatalf("header: %+v", r)
	}
	if len(r.frames) != 3 || r.frames[2] != frames[2] {
		t.Fatalf("frames: %+v", r.frames)
	}
	// Short and inconsistent records are errors, not panics.
	raw := encodeTrace(7, 8, "w", frames, 1)
	for _, bad := range [][]byte{raw[:10], raw[:traceFramesOff+5]} {
		if err := r.decode(bad); err == nil {
			t.Errorf("%d bytes: no error", len(bad))
		}
	}
	binary.LittleEndian.PutUint16(raw[42:], 9)
	if err := r.decode(raw); err == nil {
		t.Error("more kernel frames than frames: no error")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encodeTrace(1, 1, "x", []rawFrame{{addr: 1, typ: 1}}, 0))
	f.Add(make([]byte, headerSize))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var r record
		if r.decode(raw) == nil && r.kind == recordTrace {
			if r.numKernelFrames > len(r.frames) || len(r.frames) > maxFrames {
				t.Fatalf("inconsistent decode: %d kernel of %d", r.numKernelFrames, len(r.frames))
			}
		}
	})
}
