// SPDX-License-Identifier: GPL-2.0-only
// Interpreters: where the native unwinder hands over to a runtime's own
// unwinder. User space (tracer, interpreter/<runtime>) fills interp_procs
// for each process running a known interpreter, with the Go types bpf2go
// generates from these declarations.
//
// The native unwinder walks the machine stack as usual. A runtime meets it
// in one of two ways:
//   - hand-off ranges (CPython's eval loop): when a frame's pc lies in one,
//     the runtime's unwinder first emits the interpreted frames that this
//     activation of the eval loop runs, then the native frame itself is
//     recorded and native unwinding goes on below it;
//   - owned ranges (a JIT's code cache, HotSpot's): a frame whose pc lies
//     in one is the runtime's alone. Its unwinder emits the frame (or the
//     frames it stands for) and computes the caller's pc, sp and fp itself;
//     the caller may be native again, or owned too.
// Interpreted frames thus sit exactly where they ran among native ones.
#ifndef STACKLINE_INTERP_H
#define STACKLINE_INTERP_H

#include "types.h"

// Interpreter kinds (interpreter.Kind in Go).
enum interp_kind {
	INTERP_NONE = 0,
	INTERP_PYTHON = 1,
	INTERP_HOTSPOT = 2,
	INTERP_V8 = 3,
};

#define INTERP_HANDOFFS 2
#define INTERP_OWNED 2
#define INTERP_CONFIG_BYTES 256

// One process's interpreter, as user space describes it.
struct interp_proc {
	u32 kind;
	u32 pad;
	// Address ranges [start, end) of the eval loop (e.g. a function and
	// its compiler-split .cold part); unused ones are empty.
	u64 handoff_start[INTERP_HANDOFFS];
	u64 handoff_end[INTERP_HANDOFFS];
	// Address ranges [start, end) the runtime unwinds itself (a JIT's code
	// cache); unused ones are empty.
	u64 owned_start[INTERP_OWNED];
	u64 owned_end[INTERP_OWNED];
	// Runtime-specific addresses in the process (Python: _PyRuntime).
	u64 data[2];
	// Runtime-specific constants (Python: struct py_offsets; HotSpot:
	// struct hotspot_config; V8: struct v8_config).
	u8 config[INTERP_CONFIG_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u32); // pid
	__type(value, struct interp_proc);
} interp_procs SEC(".maps");

#endif
