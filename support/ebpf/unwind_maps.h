// SPDX-License-Identifier: GPL-2.0-only
// What the native unwinder reads: each process's executable mappings and
// each file's stack-delta table, both written by user space
// (tracer/sync.go and tracer/tables.go, with the Go types and constants
// bpf2go generates from these declarations).
//
// Tables are a hash-of-maps with exactly-sized inner arrays
// (BPF_F_INNER_MAP lets inner arrays differ in length): a file's table is
// loaded once and shared by every process that maps the file. Mappings
// are a flat hash (below).
#ifndef STACKLINE_UNWIND_MAPS_H
#define STACKLINE_UNWIND_MAPS_H

#include "types.h"
#include "interp.h"
#include "maps.h"

// One executable mapping of a process. A process's mappings are sorted by
// start and do not overlap.
struct exec_mapping {
	u64 start;
	u64 end;
	// File offset of an address = address - bias.
	u64 bias;
	// Key of the file's table in unwind_tables.
	u64 table;
	// Rows in that table; 0 when the file has none (no CFI, too large,
	// anonymous or JIT code): frame pointers are followed there. A table
	// built by region says ROWS_REGIONAL | its number of regions (see
	// "Tables built by region" below), which stays right as user space
	// adds regions to it.
	u32 num_rows;
	// MAPPING_FLAG_* below.
	u32 flags;
};

// Mapping flags.
enum mapping_flags {
	// Anonymous executable memory (a JIT's code).
	MAPPING_FLAG_ANON = 1,
	// Found in the kernel (the process's mappings were not given), not
	// written by user space.
	MAPPING_FLAG_VMA = 2,
};

// A row of a stack-delta table is a u64: the low 32 bits are the first
// file offset the row covers (it holds up to the next row's), the high 32
// bits its rule, packed as RULE_* below.
#define ROW_ADDR(row) ((u32)(row))
#define ROW_RULE(row) ((u32)((row) >> ROW_RULE_SHIFT))

// Rule kinds (tracer/nativeunwind.CFAKind, translated by the tracer).
enum rule_kind {
	RULE_INVALID = 0, // no unwind information
	RULE_END = 1,     // outermost frame: the stack is complete
	RULE_SP = 2,      // CFA = rsp + offset
	RULE_FP = 3,      // CFA = rbp + offset
	RULE_PLT = 4,     // CFA = rsp + offset (+8 when (rip & 15) >= 11)
	RULE_SIGNAL = 5,  // signal trampoline: registers in the signal frame
	RULE_GO_MCALL = 6, // Go's runtime.mcall: the end of the system stack;
	                   // off-CPU traces go on in the goroutine it parked
	RULE_UNBUILT = 7,  // the start of a region of a table built by region
	                   // whose rows are not built yet: stop, as in a file
	                   // whose table is not built (user space builds it)
};

// rule = kind | fp_slot << RULE_FP_SLOT_SHIFT | cfa_offset << RULE_CFA_SHIFT.
// The caller's rbp is saved at CFA - 8 * fp_slot; fp_slot 0 means rbp still
// holds it.
enum rule_layout {
	RULE_KIND_MASK = 0xf,
	RULE_FP_SLOT_SHIFT = 4,
	RULE_FP_SLOT_MASK = 0x7ff,
	RULE_CFA_SHIFT = 15,
	ROW_RULE_SHIFT = 32,
};

#define RULE_KIND(r) ((r) & RULE_KIND_MASK)
#define RULE_FP_SLOT(r) (((r) >> RULE_FP_SLOT_SHIFT) & RULE_FP_SLOT_MASK)
#define RULE_CFA_OFFSET(r) ((r) >> RULE_CFA_SHIFT)

// Bounds of the searches: 2^13 mappings per process, 2^24 rows per table.
// A mapping's slot holds its generation above MAPPING_GEN_SHIFT (see
// mapping_key).
//
// Tables built by region. A file with much code gets the rows of the
// aligned ranges of 1 << REGION_SHIFT bytes of file offsets (regions)
// that samples reach, added as they are reached. Its table's array
// starts with an index of one u64 per region (num_rows, without
// ROWS_REGIONAL, says how many), followed by the rows of the regions
// built, each region's rows together and sorted, the first at the
// region's start (the rule in effect there). An index entry holds the
// region's row count in its low 32 bits and the index of its first row
// in its high 32 bits; a count of 0 says the region is not built, and
// the high bits then hold the rule to use there (RULE_UNBUILT; for Go
// code, RULE_INVALID: frame pointers). The last region reaches to the
// end of the file offsets. User space adds a region by writing its rows
// into room no index entry covers, then its index entry (one aligned
// 8-byte store), so a lookup sees either the region's rows whole or the
// region not built.
enum unwind_bounds {
	MAX_MAPPINGS_LOG2 = 13,
	MAX_ROWS_LOG2 = 24,
	MAPPING_GEN_SHIFT = 16,
	REGION_SHIFT = 16,
	ROWS_REGIONAL = 1 << 30,
};

// A process's mappings are entries of one flat hash, keyed by pid and
// index. User space replaces them by writing the new set under the other
// generation, then switching the process's generation, then deleting the
// old set: a sample sees either set whole. (A hash-of-maps with an array
// per process would be simpler, but each update or delete of an inner map
// waits for an RCU grace period, 6-20 ms here, in the syscall.)
struct process_info {
	u32 num_mappings;
	// The generation (0 or 1) the mappings are stored under.
	u32 gen;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u32); // pid
	__type(value, struct process_info);
} processes SEC(".maps");

struct mapping_key {
	u32 pid;
	// gen << MAPPING_GEN_SHIFT | index of the mapping, sorted by start.
	u32 slot;
};

// 2^16 executable mappings of all processes together: over a thousand
// processes of 50 libraries. Entries are allocated as used; the buckets
// (16 bytes each) are not, so the bound is also 1 MiB of kernel memory.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct mapping_key);
	__type(value, struct exec_mapping);
} process_mappings SEC(".maps");

// The inner map template of unwind_tables. BPF_F_INNER_MAP lets the real
// inner maps have any length. The kernel takes an inner map only when its
// flags equal the template's: the tracer creates every table with these
// (from this template), BPF_F_MMAPABLE so that it writes a table's rows
// through a mapping of the array's memory rather than with one
// bpf(MAP_UPDATE) copy per row.
struct unwind_table_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, u64); // table key, from the file ID
	__array(values, struct unwind_table_inner);
} unwind_tables SEC(".maps");

// A mapped file as /proc/PID/maps names it: device (major << 32 | minor)
// and inode.
struct file_key {
	u64 dev;
	u64 inode;
};

// The table of a file, for processes whose mappings user space has not
// given yet (new, short-lived, or just after dlopen): the unwinder finds
// the mapping itself (vma.h) and the table here. num_rows 0 says the
// file has no table: frame pointers are followed there.
struct file_table {
	u64 table;
	u32 num_rows;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct file_key);
	__type(value, struct file_table);
} file_tables SEC(".maps");

// When each process last asked user space for its mappings, so a busy
// process without them asks once per SYNC_INTERVAL_NS, not per sample.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u32); // pid
	__type(value, u64); // ktime_ns
} sync_requests SEC(".maps");

enum sync_timing {
	SYNC_INTERVAL_NS = 50 * 1000 * 1000,
};

// The registers of the frame being unwound, carried across tail calls.
struct unwind_state {
	u64 pc;
	u64 sp;
	u64 fp;
	u32 pid;
	// Number of user frames pushed so far.
	u32 depth;
	// pc is a return address (the call lies before it), not the exact
	// address of the interrupted instruction.
	u8 return_address;
	// mapping holds the last mapping found, when has_mapping is set:
	// callers often lie in the same file as their callee.
	u8 has_mapping;
	// The process's interpreter (enum interp_kind), 0 for none.
	u8 interp_kind;
	// The interpreter's unwinder is emitting the frames of the eval loop
	// activation at pc; native unwinding resumes when it is done.
	u8 interp_pending;
	// The activation at pc was handled: record pc as a native frame.
	u8 interp_done;
	// The interpreter's thread state was looked up for this sample.
	u8 interp_init;
	// User space should read the trace at once (see py_code_seen).
	u8 urgent;
	// The stack is an off-CPU trace's (see RULE_GO_MCALL).
	u8 off_cpu;
	struct exec_mapping mapping;
	// The interpreter's hand-off ranges (struct interp_proc).
	u64 handoff_start[INTERP_HANDOFFS];
	u64 handoff_end[INTERP_HANDOFFS];
	// The next interpreted frame to emit (Python: a frame's address).
	u64 interp_frame;
	// The runtime's owned ranges (struct interp_proc).
	u64 owned_start[INTERP_OWNED];
	u64 owned_end[INTERP_OWNED];
	// Registers of the sampled (top) frame that runtimes read beyond pc,
	// sp and fp: HotSpot's interpreter keeps its bytecode pointer in r13.
	u64 top_r13;
	// V8's interpreter keeps the current bytecode offset in r9.
	u64 top_r9;
	// V8: the table and bias of the mapping of its embedded builtins,
	// looked up once a sample (v8_init).
	u64 v8_table;
	u64 v8_bias;
	u8 v8_init;
	// V8: the sampled pc is in a bytecode handler that built a frame of
	// its own, whose caller is the interpreted frame.
	u8 v8_handler;
	u8 pad2[2];
	// The device (the kernel's dev_t) of the file of mapping, when it was
	// found in the kernel (MAPPING_FLAG_VMA).
	u32 vma_dev;
	// Its inode; 0 for anonymous memory.
	u64 vma_inode;
	// The caller's stack pointer before its callee extended the caller's
	// frame (HotSpot's interpreter and adapters do), when a runtime's
	// unwinder knows it; 0 otherwise. Only the next step reads it.
	u64 unextended_sp;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCRATCH_SLOTS); // enum scratch_slot
	__type(key, u32);
	__type(value, struct unwind_state);
} unwind_states SEC(".maps");

// Unwinders reached by tail call, by index.
enum unwinder {
	UNWINDER_NATIVE = 0,
	UNWINDER_NUM,
};

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, UNWINDER_NUM);
	__type(key, u32);
	__type(value, u32);
} unwinders SEC(".maps");

#endif
