// SPDX-License-Identifier: GPL-2.0-only
// The records the eBPF side sends to user space through the ring buffer.
// The Go decoder (tracer/record.go) reads them with the offsets of the Go
// types bpf2go generates from these declarations.
#ifndef STACKLINE_TRACE_H
#define STACKLINE_TRACE_H

#include "types.h"

// Kinds of record, the first field of every record.
enum record_kind {
	RECORD_TRACE = 1,
	RECORD_PROCESS_EXIT = 2,
	RECORD_PROCESS_EXEC = 3,
	// The eBPF side lacks a process's mappings (a new process, or an
	// address outside the mappings it was given): user space should
	// (re)load them.
	RECORD_PROCESS_SYNC = 4,
	// A thread that was off the CPU (blocked) for off_cpu_ns: its stack
	// as it blocked, in the layout of RECORD_TRACE (support/ebpf/offcpu.h).
	RECORD_OFF_CPU = 5,
	// Sent only to wake the reader for the urgent record before it
	// (wake_reader in maps.h): nothing follows the kind.
	RECORD_WAKEUP = 6,
};

// Frame types; trace.FrameType in Go is checked against them.
enum frame_type {
	FRAME_NATIVE = 1,
	FRAME_KERNEL = 2,
	// The unwinder stopped early; addr holds an error code below.
	FRAME_ERROR = 3,
	// A Python frame: addr is the code object's address, aux the
	// instruction (f_lasti, or the instruction pointer's offset from the
	// code object), extra a fingerprint of the code object.
	FRAME_CPYTHON = 4,
	// HotSpot frames (support/ebpf/hotspot.h). An interpreted method:
	// addr is its Method*, aux the bytecode index, extra a check value of
	// the method's class (a Method* freed and reused is told apart).
	FRAME_JVM_INTERPRETED = 5,
	// A compiled method (C1, C2, a native method wrapper): addr is its
	// nmethod, aux the pc's offset from it, extra a check value of its
	// compile id and its method.
	FRAME_JVM_COMPILED = 6,
	// Other VM code (stubs, adapters): addr is its code blob, aux the
	// pc's offset from it.
	FRAME_JVM_STUB = 7,
	// V8 frames (support/ebpf/v8.h). An interpreted function: addr is its
	// SharedFunctionInfo, aux the bytecode offset (from the BytecodeArray's
	// tagged address), extra a check of the SharedFunctionInfo.
	FRAME_V8JS_INTERPRETED = 8,
	// Code of a JavaScript function (Sparkplug, Maglev, TurboFan, or a
	// builtin with JavaScript linkage): addr is its SharedFunctionInfo,
	// aux and aux_hi the pc, extra a check of the SharedFunctionInfo.
	FRAME_V8JS_CODE = 9,
	// A typed V8 frame (entry, exit, stub, ...): addr is the pc, aux the
	// frame type (StackFrame::Type).
	FRAME_V8JS_STUB = 10,
};

// Error codes carried by FRAME_ERROR frames (trace.Error* in Go).
enum unwind_error {
	UNWIND_ERR_MAX_DEPTH = 1,
	UNWIND_ERR_READ_FAILED = 2,
	// An address outside every executable mapping the process was given.
	UNWIND_ERR_NO_MAPPING = 3,
	// No unwind information covers the address.
	UNWIND_ERR_NO_CFI = 4,
	// The process's mappings were not loaded yet (its first samples).
	UNWIND_ERR_NOT_READY = 5,
	// The caller's frame did not lie above its callee's: corrupt data.
	UNWIND_ERR_BAD_FRAME = 6,
	// An interpreter's frames could not be read (its thread state not
	// found, or memory unreadable); native unwinding goes on.
	UNWIND_ERR_INTERP = 7,
};

// Frame flags.
enum frame_flags {
	// addr is a return address: the call instruction lies just before it.
	FRAME_FLAG_RETURN_ADDRESS = 1,
	// A native frame of a mapping found in the kernel, not among the
	// process's mappings user space gave: addr is the file offset, the
	// file's inode is aux (low 32 bits) and extra (high), its device
	// file_dev. User space names it by the file, without the process.
	FRAME_FLAG_FILE = 2,
};

// Bounds of one trace. Kernel stacks are limited by the kernel itself
// (PERF_MAX_STACK_DEPTH, 127 by default); user stacks by --max-stack-depth,
// which may not exceed MAX_USER_FRAMES. (Constants shared with Go are enum
// values, not macros, so that they reach the object's BTF.)
enum trace_bounds {
	MAX_KERNEL_FRAMES = 127,
	MAX_USER_FRAMES = 128,
	MAX_FRAMES = MAX_KERNEL_FRAMES + MAX_USER_FRAMES + 1,
};

// One frame. Every unwinder emits the same shape, told apart by type, so
// interpreter unwinders (Python, JVM, ...) can add frames whose addr names a
// code object and whose aux holds an instruction offset.
struct frame {
	u64 addr;
	u32 aux;
	// Runtime-specific check value, so that code freed and replaced at the
	// same address is told apart (Python: a fingerprint of the code
	// object; HotSpot: a compile id, or a check of the method's class).
	u32 extra;
	u8 type;
	u8 flags;
	// Runtime-specific: bits 32-47 of a 48-bit aux (V8: of the pc).
	u16 aux_hi;
	// FRAME_FLAG_FILE: the device of the frame's file (the kernel's
	// dev_t, major << 20 | minor); 0 otherwise.
	u32 file_dev;
};

struct record_header {
	u32 kind;
	u32 pid; // thread group id
	u32 tid;
	u32 cpu;
	u64 ktime_ns; // CLOCK_MONOTONIC
	char comm[16];
};

// A sampled stack. Only header + num_frames frames are sent: the record is
// variable-length on the ring buffer. Kernel frames come first, leaf first,
// then user frames, leaf first.
struct trace {
	struct record_header hdr;
	u16 num_frames;
	u16 num_kernel_frames;
	u32 pad;
	// RECORD_OFF_CPU: how long the thread was off the CPU, in
	// nanoseconds, until hdr.ktime_ns; 0 in CPU samples.
	u64 off_cpu_ns;
	struct frame frames[MAX_FRAMES];
};

// Process lifecycle events (exit of the last thread, exec), and a
// process's request for its mappings.
struct process_event {
	struct record_header hdr;
	// RECORD_PROCESS_EXEC: the new executable's inode and device (the
	// kernel's dev_t), so that user space reads a new process at once
	// only when it runs a file not known yet; 0 in other events.
	u64 exe_inode;
	u32 exe_dev;
	u32 pad;
};

#endif
