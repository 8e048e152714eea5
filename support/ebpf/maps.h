// SPDX-License-Identifier: GPL-2.0-only
// Maps shared by the programs.
#ifndef STACKLINE_MAPS_H
#define STACKLINE_MAPS_H

#include "types.h"
#include "trace.h"

// Slots of the per-CPU scratch maps (trace_scratch, unwind_states). The
// sampling program runs in an interrupt, which may arrive while the
// off-CPU program unwinds on the same CPU (it runs with interrupts
// enabled): each has a slot of its own.
enum scratch_slot {
	SLOT_CPU = 0,
	SLOT_OFF_CPU = 1,
	SCRATCH_SLOTS = 2,
};

// Everything sent to user space goes through one ring buffer, so records keep
// their order (an exit is never seen before the process's last samples).
// Its size is set by the loader (--ring-buffer-size).
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} records SEC(".maps");

// Set by the loader: a quarter of the ring buffer. Waking the reader for
// every record would cost user space a context switch per sample and per
// process event (hundreds a second on a busy host); instead it reads on a
// timer, and records wake it early only when this much is waiting or when
// they are urgent.
volatile const u64 wakeup_bytes = 1 << 18;

// The reader's state, shared with user space, which maps it
// (BPF_F_MMAPABLE) and reads and writes it without a system call.
struct reader_state {
	// armed is set by the reader before it sleeps, and cleared by the
	// urgent record that wakes it: urgent records wake a sleeping reader
	// once, and cost no wake-up while it is awake.
	u64 armed;
	// urgent counts the urgent records sent. The reader notes it when it
	// wakes, and reads again before it sleeps when it changed since.
	u64 urgent;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, struct reader_state);
} reader_state SEC(".maps");

// The record that wakes the reader for an urgent record (enum
// record_kind), sent after it: only its kind is read.
struct wakeup_record {
	u32 kind;
	u32 pad;
};

// Tells the reader of an urgent record just sent, waking it when it
// sleeps. The record is in the buffer before urgent is counted, and
// urgent counted (a locked add: a full barrier on x86) before armed is
// read; the reader sets armed (a full barrier too) before it reads
// urgent. So either the reader sees the count changed and reads the
// record before it sleeps, or this sees it armed and wakes it: no urgent
// record waits for the reader's timer.
static __always_inline void wake_reader(void)
{
	u32 zero = 0;
	struct reader_state *r = bpf_map_lookup_elem(&reader_state, &zero);
	if (!r)
		return;
	__sync_fetch_and_add(&r->urgent, 1);
	if (!r->armed)
		return;
	// Two CPUs may both wake it: harmless.
	r->armed = 0;
	struct wakeup_record w = {.kind = RECORD_WAKEUP};
	bpf_ringbuf_output(&records, &w, sizeof(w), BPF_RB_FORCE_WAKEUP);
}

// Sends a record to user space. Urgent records (a process asking for its
// mappings, a trace with code user space must read while the process
// lives) are read at once (wake_reader); the others wait for the reader's
// timer unless the buffer is filling up.
static __always_inline long submit_record(void *data, u64 size, int urgent)
{
	u64 flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	long err = bpf_ringbuf_output(&records, data, size, flags);
	if (!err && urgent)
		wake_reader();
	return err;
}

// Per-CPU scratch space for the trace being built: too large for the
// 512-byte BPF stack. One slot per program that builds traces and may
// interrupt the other on its CPU (enum scratch_slot).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCRATCH_SLOTS);
	__type(key, u32);
	__type(value, struct trace);
} trace_scratch SEC(".maps");

// Counters read by user space (self-metrics). Index = enum counter; each
// is exported by a bpfCounter row of agent/metrics.go (its test fails until
// it is).
enum counter {
	COUNTER_SAMPLES = 0,     // perf events handled
	COUNTER_IDLE,            // samples of the idle task, not sent
	COUNTER_LOST_TRACES,     // ring buffer full: trace dropped
	COUNTER_LOST_EVENTS,     // ring buffer full: process event dropped
	COUNTER_KERNEL_STACK_ERR,// bpf_get_stack failed
	COUNTER_USER_READ_ERR,   // user stack read failed mid-walk
	COUNTER_MAX_DEPTH,       // user stack deeper than the limit
	COUNTER_NO_MAPPING,      // address outside the process's mappings
	COUNTER_NO_CFI,          // address without unwind information
	COUNTER_NOT_READY,       // sample of a process whose mappings were not loaded
	COUNTER_BAD_FRAME,       // caller frame below its callee: corrupt stack
	COUNTER_SYNC_REQUESTS,   // process sync requests sent
	COUNTER_CFI_FRAMES,      // frames unwound with a stack-delta table
	COUNTER_FP_FRAMES,       // frames unwound by frame pointer
	COUNTER_VMA_LOOKUPS,     // mappings found in the kernel (process not synced)
	COUNTER_PYTHON_FRAMES,   // Python frames emitted
	COUNTER_INTERP_ERRORS,   // interpreter frames unreadable
	COUNTER_OFF_CPU_WAITS,   // switch-outs sampled for off-CPU profiling
	COUNTER_OFF_CPU_SHORT,   // sampled waits shorter than the threshold
	COUNTER_OFF_CPU_FULL,    // sampled waits not recorded: wait table full
	COUNTER_LOST_OFF_CPU,    // ring buffer full: off-CPU trace dropped
	COUNTER_NO_CFI_FP,       // frames without unwind information in a file that has some, stepped by frame pointer
	COUNTER_JVM_FRAMES,      // HotSpot frames emitted
	COUNTER_JVM_ERRORS,      // HotSpot frames whose code could not be found or read
	COUNTER_V8JS_FRAMES,       // V8 frames emitted (JavaScript and typed frames)
	COUNTER_V8JS_ERRORS,       // V8 JavaScript frames whose function could not be read
	COUNTER_NUM,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_NUM);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

// Adds one to counter which. A global function, which the verifier checks
// once, not at each of the unwinders' many call sites (on every path that
// reaches them); what it returns means nothing.
__noinline int count(u32 which)
{
	u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1;
	return 0;
}

#endif
