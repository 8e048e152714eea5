package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// Layout of the records in support/ebpf/trace.h, from the Go types bpf2go
// generates. The decoder reads the fields in place, at these offsets, rather
// than through encoding/binary: it runs for every sample.
const (
	recordTrace       = uint32(progs.StacklineRecordKindRECORD_TRACE)
	recordProcessExit = uint32(progs.StacklineRecordKindRECORD_PROCESS_EXIT)
	recordProcessExec = uint32(progs.StacklineRecordKindRECORD_PROCESS_EXEC)
	recordProcessSync = uint32(progs.StacklineRecordKindRECORD_PROCESS_SYNC)
	recordOffCPU      = uint32(progs.StacklineRecordKindRECORD_OFF_CPU)
	// recordWakeup only wakes the reader (see recordWait): its kind is
	// all it holds.
	recordWakeup = uint32(progs.StacklineRecordKindRECORD_WAKEUP)

	headerSize     = int(unsafe.Sizeof(progs.StacklineRecordHeader{}))
	traceFramesOff = int(unsafe.Offsetof(progs.StacklineTrace{}.Frames))
	frameSize      = int(unsafe.Sizeof(progs.StacklineFrame{}))
	maxFrames      = len(progs.StacklineTrace{}.Frames)

	frameFlagReturnAddress = uint8(progs.StacklineFrameFlagsFRAME_FLAG_RETURN_ADDRESS)
	frameFlagFile          = uint8(progs.StacklineFrameFlagsFRAME_FLAG_FILE)
)

// Offsets of the fields read, in struct record_header, struct trace and
// struct frame.
const (
	offKind            = unsafe.Offsetof(progs.StacklineRecordHeader{}.Kind)
	offPid             = unsafe.Offsetof(progs.StacklineRecordHeader{}.Pid)
	offTid             = unsafe.Offsetof(progs.StacklineRecordHeader{}.Tid)
	offCPU             = unsafe.Offsetof(progs.StacklineRecordHeader{}.Cpu)
	offKtime           = unsafe.Offsetof(progs.StacklineRecordHeader{}.KtimeNs)
	offComm            = unsafe.Offsetof(progs.StacklineRecordHeader{}.Comm)
	commLen            = uintptr(len(progs.StacklineRecordHeader{}.Comm))
	offNumFrames       = unsafe.Offsetof(progs.StacklineTrace{}.NumFrames)
	offNumKernelFrames = unsafe.Offsetof(progs.StacklineTrace{}.NumKernelFrames)
	offOffCPUNS        = unsafe.Offsetof(progs.StacklineTrace{}.OffCpuNs)
	offFrameAddr       = unsafe.Offsetof(progs.StacklineFrame{}.Addr)
	offFrameAux        = unsafe.Offsetof(progs.StacklineFrame{}.Aux)
	offFrameType       = unsafe.Offsetof(progs.StacklineFrame{}.Type)
	offFrameFlags      = unsafe.Offsetof(progs.StacklineFrame{}.Flags)
	offFrameExtra      = unsafe.Offsetof(progs.StacklineFrame{}.Extra)
	offFrameAuxHi      = unsafe.Offsetof(progs.StacklineFrame{}.AuxHi)
	offFrameFileDev    = unsafe.Offsetof(progs.StacklineFrame{}.FileDev)
	offExeInode        = unsafe.Offsetof(progs.StacklineProcessEvent{}.ExeInode)
	offExeDev          = unsafe.Offsetof(progs.StacklineProcessEvent{}.ExeDev)
	processEventSize   = int(unsafe.Sizeof(progs.StacklineProcessEvent{}))
)

// rawFrame is one decoded struct frame.
type rawFrame struct {
	addr  uint64
	aux   uint32
	typ   trace.FrameType
	flags uint8
	extra uint32
	auxHi uint16
	// fileDev is the device of a FRAME_FLAG_FILE frame's file.
	fileDev uint32
}

// record is one decoded ring-buffer record. Frames is reused between
// decodes.
type record struct {
	kind            uint32
	pid, tid, cpu   uint32
	ktimeNS         uint64
	comm            string
	numKernelFrames int
	// offCPUNS is how long the thread waited, in off-CPU traces.
	offCPUNS uint64
	frames   []rawFrame
	// exe is the new executable of an exec record (zero when the
	// kernel did not say).
	exe fileKey
}

var errShortRecord = errors.New("record too short")

// decode parses raw into r, reusing r's frame slice.
func (r *record) decode(raw []byte) error {
	if len(raw) < headerSize {
		return fmt.Errorf("%w: %d bytes", errShortRecord, len(raw))
	}
	le := binary.LittleEndian
	r.kind = le.Uint32(raw[offKind:])
	r.pid = le.Uint32(raw[offPid:])
	r.tid = le.Uint32(raw[offTid:])
	r.cpu = le.Uint32(raw[offCPU:])
	r.ktimeNS = le.Uint64(raw[offKtime:])
	comm := raw[offComm : offComm+commLen]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	// Thread names repeat: reuse the previous string when unchanged.
	if r.comm != string(comm) {
		r.comm = string(comm)
	}
	r.frames = r.frames[:0]
	r.numKernelFrames = 0
	r.offCPUNS = 0
	r.exe = fileKey{}
	if r.kind == recordProcessExec {
		if len(raw) < processEventSize {
			return fmt.Errorf("%w: exec event of %d bytes", errShortRecord, len(raw))
		}
		r.exe = kernelFileKey(le.Uint32(raw[offExeDev:]), le.Uint64(raw[offExeInode:]))
	}
	if r.kind != recordTrace && r.kind != recordOffCPU {
		return nil
	}
	if len(raw) < traceFramesOff {
		return fmt.Errorf("%w: trace of %d bytes", errShortRecord, len(raw))
	}
	n := int(le.Uint16(raw[offNumFrames:]))
	nk := int(le.Uint16(raw[offNumKernelFrames:]))
	if n > maxFrames || nk > n {
		return fmt.Errorf("trace claims %d frames (%d kernel)", n, nk)
	}
	if len(raw) < traceFramesOff+n*frameSize {
		return fmt.Errorf("%w: %d frames in %d bytes", errShortRecord, n, len(raw))
	}
	r.numKernelFrames = nk
	if r.kind == recordOffCPU {
		r.offCPUNS = le.Uint64(raw[offOffCPUNS:])
		if r.offCPUNS == 0 {
			return errors.New("off-CPU trace of a wait of 0 ns")
		}
	}
	for i := range n {
		f := raw[traceFramesOff+i*frameSize:]
		r.frames = append(r.frames, rawFrame{
			addr:  le.Uint64(f[offFrameAddr:]),
			aux:   le.Uint32(f[offFrameAux:]),
			typ:   trace.FrameType(f[offFrameType]),
			flags: f[offFrameFlags],
			extra: le.Uint32(f[offFrameExtra:]),
			auxHi: le.Uint16(f[offFrameAuxHi:]),

			fileDev: le.Uint32(f[offFrameFileDev:]),
		})
	}
	return nil
}
