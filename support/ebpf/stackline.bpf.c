//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only
// stackline's eBPF programs: the sampling entry point, the unwinders it
// tail-calls, and the process lifecycle hooks. Each concern lives in its own
// header.

#include "types.h"
#include "trace.h"
#include "maps.h"

// Set by the loader before the programs are loaded.
// max_user_frames is --max-stack-depth (at most MAX_USER_FRAMES).
volatile const u32 max_user_frames = MAX_USER_FRAMES;

#include "frames.h"
#include "regs.h"
#include "unwind_maps.h"
#include "native.h"

char LICENSE[] SEC("license") = "GPL";

// The types user space shares with these programs that no map or variable
// carries. clang emits BTF only for types reachable from a map, a variable
// or a function, so this pointer (never read, 8 bytes of .rodata) makes them
// reachable: bpf2go then generates their Go declarations (gen.go lists
// them with -type), and support/ebpf's tests compare those with this BTF.
struct shared_types {
	enum record_kind record_kind;
	enum frame_type frame_type;
	enum frame_flags frame_flags;
	enum unwind_error unwind_error;
	enum trace_bounds trace_bounds;
	enum counter counter;
	enum rule_kind rule_kind;
	enum rule_layout rule_layout;
	enum unwind_bounds unwind_bounds;
	enum sync_timing sync_timing;
	enum unwinder unwinder;
	enum interp_kind interp_kind;
	enum py_frame_model py_frame_model;
	enum py_constants py_constants;
	enum scratch_slot scratch_slot;
	enum hotspot_bounds hotspot_bounds;
	enum mapping_flags mapping_flags;
	struct process_event process_event;
	struct py_offsets py_offsets;
	struct hotspot_config hotspot_config;
	struct v8_config v8_config;
};

const volatile struct shared_types *const shared_types = 0;

static __always_inline void fill_header(struct record_header *h, u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();
	h->kind = kind;
	h->pid = id >> 32;
	h->tid = (u32)id;
	h->cpu = bpf_get_smp_processor_id();
	h->ktime_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

// collect_kernel_stack writes a frame's fields after addr as two words.
_Static_assert(offsetof(struct frame, aux) == 8 && offsetof(struct frame, extra) == 12 &&
		       offsetof(struct frame, type) == 16 && offsetof(struct frame, flags) == 17 &&
		       offsetof(struct frame, aux_hi) == 18 && offsetof(struct frame, file_dev) == 20 &&
		       sizeof(struct frame) == 24,
	       "struct frame's layout");

// Copies the kernel stack into the trace. bpf_get_stack writes addresses
// only, so they go into the frames array's tail first and are spread into
// frames afterwards.
static __always_inline void collect_kernel_stack(void *ctx, struct trace *t)
{
	// Reuse the user part of the frames array as a u64 buffer: it is
	// filled only after the kernel frames have been spread out.
	u64 *buf = (u64 *)&t->frames[MAX_KERNEL_FRAMES];
	long n = bpf_get_stack(ctx, buf, MAX_KERNEL_FRAMES * sizeof(u64), 0);
	if (n < 0) {
		count(COUNTER_KERNEL_STACK_ERR);
		return;
	}
	n /= sizeof(u64);
	// buf holds n <= 127 u64s = at most 64 frames' worth of bytes, so
	// frames[i] for i < n never overlaps buf[j] for j >= i: copying in
	// ascending order is safe.
	//
	// The loop is unrolled for the verifier, so each frame is written
	// with as few instructions as it can be: its other fields are two
	// 8-byte words, aux and extra (0), then type, flags, aux_hi and
	// file_dev.
	u32 i = 0;
	for (; i < MAX_KERNEL_FRAMES; i++) {
		if (i >= n)
			break;
		struct frame *f = &t->frames[i];
		f->addr = buf[i];
		*(u64 *)&f->aux = 0;
		*(u64 *)&f->type = FRAME_KERNEL | (u64)(i ? FRAME_FLAG_RETURN_ADDRESS : 0) << 8;
	}
	t->num_frames = i;
	t->num_kernel_frames = i;
}

// Sends the finished trace: only its used frames go on the ring buffer. A
// trace the full buffer cannot take is counted in lost.
static __always_inline void send_trace(struct trace *t, int urgent, u32 lost)
{
	u32 n = t->num_frames;
	if (n > MAX_FRAMES)
		n = MAX_FRAMES;
	u64 size = offsetof(struct trace, frames) + (u64)n * sizeof(struct frame);
	if (submit_record(t, size, urgent))
		count(lost);
}

SEC("perf_event")
int sample(struct bpf_perf_event_data *ctx)
{
	count(COUNTER_SAMPLES);

	u64 id = bpf_get_current_pid_tgid();
	if ((u32)id == 0) {
		// The idle task: nothing ran.
		count(COUNTER_IDLE);
		return 0;
	}

	u32 slot = SLOT_CPU;
	struct trace *t = bpf_map_lookup_elem(&trace_scratch, &slot);
	struct unwind_state *st = bpf_map_lookup_elem(&unwind_states, &slot);
	if (!t || !st)
		return 0;
	fill_header(&t->hdr, RECORD_TRACE);
	t->num_frames = 0;
	t->num_kernel_frames = 0;
	t->pad = 0;
	t->off_cpu_ns = 0;

	if ((ctx->regs.cs & 3) != 3)
		collect_kernel_stack(ctx, t);

	struct pt_regs regs;
	if (user_regs(ctx, &regs) == 0) {
		start_unwind(st, &regs, id >> 32, 0);
		bpf_tail_call(ctx, &unwinders, UNWINDER_NATIVE);
		// Only reached when the unwinder is missing.
		push_frame(t, st->pc, FRAME_NATIVE, 0);
	}
	send_trace(t, 0, COUNTER_LOST_TRACES);
	return 0;
}

// The native unwinder, entered by tail call with the user registers in
// unwind_state. It ends the trace and sends it.
SEC("perf_event")
int unwind_native(struct bpf_perf_event_data *ctx)
{
	u32 slot = SLOT_CPU;
	struct trace *t = bpf_map_lookup_elem(&trace_scratch, &slot);
	struct unwind_state *st = bpf_map_lookup_elem(&unwind_states, &slot);
	if (!t || !st)
		return 0;
	unwind_user(SLOT_CPU);
	send_trace(t, st->urgent, COUNTER_LOST_TRACES);
	return 0;
}

static __always_inline void send_process_event(u32 kind, u32 tgid)
{
	struct process_event ev = {};
	fill_header(&ev.hdr, kind);
	ev.hdr.pid = tgid;
	if (submit_record(&ev, sizeof(ev), 0))
		count(COUNTER_LOST_EVENTS);
}

// sched_process_exit fires for every exiting thread; only the exit of the
// last thread of a group ends the process. signal->live has already been
// decremented when the tracepoint fires.
SEC("raw_tracepoint/sched_process_exit")
int process_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	u32 tgid = BPF_CORE_READ(task, tgid);
	// The process's mappings are of no more use; user space drops them
	// too, but a pid reused before it does must not inherit them.
	bpf_map_delete_elem(&processes, &tgid);
	bpf_map_delete_elem(&interp_procs, &tgid);
	send_process_event(RECORD_PROCESS_EXIT, tgid);
	return 0;
}

// After exec a process has new mappings: forget the old ones at once, and
// have user space load the new ones.
SEC("raw_tracepoint/sched_process_exec")
int process_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	u32 tgid = BPF_CORE_READ(task, tgid);
	bpf_map_delete_elem(&processes, &tgid);
	bpf_map_delete_elem(&interp_procs, &tgid);
	// A sample before exec may have asked for the old image's mappings
	// just now: the new image's first sample must be able to ask again
	// (and wake user space) at once, not after SYNC_INTERVAL_NS.
	bpf_map_delete_elem(&sync_requests, &tgid);
	struct process_event ev = {};
	fill_header(&ev.hdr, RECORD_PROCESS_EXEC);
	ev.hdr.pid = tgid;
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	if (exe) {
		ev.exe_inode = BPF_CORE_READ(exe, f_inode, i_ino);
		ev.exe_dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	}
	if (submit_record(&ev, sizeof(ev), 0))
		count(COUNTER_LOST_EVENTS);
	return 0;
}

// Off-CPU profiling (attached only with --off-cpu).
#include "offcpu.h"
