package tracer

import (
	"encoding/binary"
	"testing"

	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// encodeTrace encodes a trace record as the eBPF side sends it: struct trace
// (through the Go type bpf2go generates from it, not the decoder's offsets)
// cut after its used frames.
func encodeTrace(pid, tid uint32, comm string, frames []rawFrame, nk int) []byte {
	var t progs.StacklineTrace
	t.Hdr = progs.StacklineRecordHeader{Kind: uint32(progs.StacklineRecordKindRECORD_TRACE), Pid: pid, Tid: tid, Cpu: 3, KtimeNs: 12345}
	for i := 0; i < len(comm) && i < len(t.Hdr.Comm)-1; i++ {
		t.Hdr.Comm[i] = int8(comm[i])
	}
	t.NumFrames, t.NumKernelFrames = uint16(len(frames)), uint16(nk)
	for i, f := range frames {
		t.Frames[i] = progs.StacklineFrame{Addr: f.addr, Aux: f.aux, Type: uint8(f.typ), Flags: f.flags, Extra: f.extra}
	}
	b, err := binary.Append(nil, binary.LittleEndian, &t)
	if err != nil {
		panic(err)
	}
	frameBytes := binary.Size(progs.StacklineFrame{})
	unused := len(t.Frames) - len(frames)
	return b[:len(b)-unused*frameBytes]
}

func TestDecode(t *testing.T) {
	frames := []rawFrame{
		{addr: 0xffffffff81000010, typ: trace.FrameKernel},
		{addr: 0x401000, typ: trace.FrameNative},
		{addr: 0x401234, typ: trace.FrameNative, flags: frameFlagReturnAddress},
		{addr: 0x7f0012345678, aux: 0xabcdef, typ: trace.FrameCPython, extra: 0xbeef},
	}
	var r record
	if err := r.decode(encodeTrace(7, 8, "worker", frames, 1)); err != nil {
		t.Fatal(err)
	}
	if r.kind != recordTrace || r.pid != 7 || r.tid != 8 || r.cpu != 3 || r.comm != "worker" || r.ktimeNS != 12345 || r.numKernelFrames != 1 {
		t.Fatalf("header: %+v", r)
	}
	if len(r.frames) != len(frames) {
		t.Fatalf("frames: %+v", r.frames)
	}
	for i := range frames {
		if r.frames[i] != frames[i] {
			t.Errorf("frame %d: %+v, want %+v", i, r.frames[i], frames[i])
		}
	}
	// Short and inconsistent records are errors, not panics.
	raw := encodeTrace(7, 8, "w", frames, 1)
	for _, bad := range [][]byte{raw[:10], raw[:traceFramesOff+5]} {
		if err := r.decode(bad); err == nil {
			t.Errorf("%d bytes: no error", len(bad))
		}
	}
	var tr progs.StacklineTrace
	tr.NumFrames, tr.NumKernelFrames = 2, 9
	raw, _ = binary.Append(nil, binary.LittleEndian, &tr)
	raw[0] = byte(recordTrace)
	if err := r.decode(raw); err == nil {
		t.Error("more kernel frames than frames: no error")
	}
}

// TestDecodeOffCPU decodes an off-CPU trace: the layout of a trace, with
// the time waited; a wait of 0 ns is malformed.
func TestDecodeOffCPU(t *testing.T) {
	frames := []rawFrame{{addr: 0xffffffff81000010, typ: trace.FrameKernel}, {addr: 0x401000, typ: trace.FrameNative}}
	raw := encodeTrace(7, 8, "waiter", frames, 1)
	binary.LittleEndian.PutUint32(raw[offKind:], recordOffCPU)
	binary.LittleEndian.PutUint64(raw[offOffCPUNS:], 4_000_000)
	var r record
	if err := r.decode(raw); err != nil {
		t.Fatal(err)
	}
	if r.kind != recordOffCPU || r.offCPUNS != 4_000_000 || len(r.frames) != 2 || r.numKernelFrames != 1 {
		t.Errorf("decoded %+v", r)
	}
	// A CPU sample decoded after it has no wait.
	if err := r.decode(encodeTrace(7, 8, "w", frames, 1)); err != nil || r.offCPUNS != 0 {
		t.Errorf("CPU trace after an off-CPU one: wait %d, %v", r.offCPUNS, err)
	}
	binary.LittleEndian.PutUint64(raw[offOffCPUNS:], 0)
	if err := r.decode(raw); err == nil {
		t.Error("off-CPU trace of 0 ns: no error")
	}
}

// TestDecodeProcessEvent decodes struct process_event as the eBPF side
// sends it.
func TestDecodeProcessEvent(t *testing.T) {
	for _, kind := range []uint32{recordProcessExit, recordProcessExec, recordProcessSync} {
		ev := progs.StacklineProcessEvent{Hdr: progs.StacklineRecordHeader{Kind: kind, Pid: 42, Tid: 43, Cpu: 1, KtimeNs: 99}}
		copy(ev.Hdr.Comm[:], []int8{'s', 'h'})
		var exe fileKey
		if kind == recordProcessExec {
			// Device 259:3 (dev_t 259 << 20 | 3), inode 1<<33 | 7.
			ev.ExeDev, ev.ExeInode = 259<<20|3, 1<<33|7
			exe = fileKey{dev: 259<<32 | 3, inode: 1<<33 | 7}
		}
		raw, err := binary.Append(nil, binary.LittleEndian, &ev)
		if err != nil {
			t.Fatal(err)
		}
		var r record
		r.frames = append(r.frames, rawFrame{addr: 1})
		if err := r.decode(raw); err != nil {
			t.Fatal(err)
		}
		if r.kind != kind || r.pid != 42 || r.tid != 43 || r.ktimeNS != 99 || r.comm != "sh" || len(r.frames) != 0 || r.exe != exe {
			t.Errorf("kind %d: %+v", kind, r)
		}
		if kind == recordProcessExec {
			if err := r.decode(raw[:headerSize]); err == nil {
				t.Error("exec event without its executable: no error")
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encodeTrace(1, 1, "x", []rawFrame{{addr: 1, typ: 1}}, 0))
	f.Add(make([]byte, headerSize))
	off := encodeTrace(1, 1, "x", []rawFrame{{addr: 1, typ: 1}}, 0)
	binary.LittleEndian.PutUint32(off[offKind:], recordOffCPU)
	binary.LittleEndian.PutUint64(off[offOffCPUNS:], 1)
	f.Add(off)
	f.Fuzz(func(t *testing.T, raw []byte) {
		var r record
		if r.decode(raw) == nil && (r.kind == recordTrace || r.kind == recordOffCPU) {
			if r.numKernelFrames > len(r.frames) || len(r.frames) > maxFrames {
				t.Fatalf("inconsistent decode: %d kernel of %d", r.numKernelFrames, len(r.frames))
			}
		}
	})
}
