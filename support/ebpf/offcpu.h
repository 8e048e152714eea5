// SPDX-License-Identifier: GPL-2.0-only
// Off-CPU profiling: where threads wait, and for how long, with the same
// unwinders as CPU samples.
//
// Two BTF tracepoints of the scheduler:
//   sched_switch   in the context of the thread leaving the CPU. A user
//                  thread that blocked (not preempted) is sampled with
//                  probability offcpu_sample_bound / 2^32, and the time it
//                  blocked is kept in offcpu_waits, by thread.
//   sched_exit_tp  at the end of __schedule, in the context of the thread
//                  that runs again: it has not left the scheduler yet, so
//                  its kernel and user stacks are exactly those it blocked
//                  with. A sampled wait of at least offcpu_threshold_ns is
//                  unwound now, kernel stack first (which names the wait:
//                  pipe_read, futex_wait, do_nanosleep...), then the user
//                  stack by the same walk as CPU samples, and sent as a
//                  RECORD_OFF_CPU trace carrying the time waited.
// Unwinding when the thread runs again, not when it leaves, means only the
// waits that are kept are unwound, with interrupts enabled and without the
// run queue lock, instead of every sampled switch-out in the scheduler's
// critical section. sched_exit_tp came with Linux 6.16; the loader attaches
// these programs only when off-CPU profiling is on.
//
// State is bounded: one u64 per sampled thread blocked right now, in a
// preallocated hash of OFF_CPU_MAX_WAITS entries (a wait that finds it full
// is counted and not recorded), and the per-CPU scratch slot SLOT_OFF_CPU.
#ifndef STACKLINE_OFFCPU_H
#define STACKLINE_OFFCPU_H

#include "types.h"
#include "trace.h"
#include "maps.h"
#include "regs.h"
#include "native.h"

// Set by the loader: waits shorter than this are not recorded
// (--off-cpu-threshold), and a switch-out is sampled when a random u32 is
// at most offcpu_sample_bound (--off-cpu-fraction * (2^32 - 1)).
volatile const u64 offcpu_threshold_ns = 0;
volatile const u32 offcpu_sample_bound = 0xffffffff;

#define OFF_CPU_MAX_WAITS 16384

// When each sampled blocked thread left the CPU (bpf_ktime_get_ns), by
// thread ID. An entry lives from the switch-out to the thread's next run.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OFF_CPU_MAX_WAITS);
	__type(key, u32);   // thread ID
	__type(value, u64); // ktime_ns of the switch-out
} offcpu_waits SEC(".maps");

// sched_switch(preempt, prev, next, prev_state): remembers when a sampled
// user thread blocked.
SEC("tp_btf/sched_switch")
int offcpu_switch(u64 *ctx)
{
	u8 preempt = (u8)ctx[0];
	struct task_struct *prev = (struct task_struct *)ctx[1];
	unsigned int prev_state = (unsigned int)ctx[3];
	// A preempted thread is runnable: it waits for a CPU, not for an
	// event. Kernel threads (no mm) have no user stack to blame.
	if (preempt || prev_state == 0 || !prev->mm)
		return 0;
	if (offcpu_sample_bound != 0xffffffff && bpf_get_prandom_u32() > offcpu_sample_bound)
		return 0;
	u32 tid = prev->pid;
	u64 now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&offcpu_waits, &tid, &now, BPF_ANY)) {
		count(COUNTER_OFF_CPU_FULL);
		return 0;
	}
	count(COUNTER_OFF_CPU_WAITS);
	return 0;
}

// sched_exit_tp(is_switch): the current thread runs again. When its wait
// was sampled and long enough, sends its stack and the time it waited.
// This runs at every pass through the scheduler: what is not a user
// thread coming back from a switch returns before the table lookup.
SEC("tp_btf/sched_exit_tp")
int offcpu_resume(u64 *ctx)
{
	if (!(u8)ctx[0])
		return 0; // no switch: the thread never left
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	if (tid == 0 || !bpf_get_current_task_btf()->mm)
		return 0;
	u64 *start = bpf_map_lookup_elem(&offcpu_waits, &tid);
	if (!start)
		return 0;
	u64 now = bpf_ktime_get_ns();
	u64 waited = now - *start;
	bpf_map_delete_elem(&offcpu_waits, &tid);
	if (waited < offcpu_threshold_ns || waited == 0) {
		count(COUNTER_OFF_CPU_SHORT);
		return 0;
	}

	u32 slot = SLOT_OFF_CPU;
	struct trace *t = bpf_map_lookup_elem(&trace_scratch, &slot);
	struct unwind_state *st = bpf_map_lookup_elem(&unwind_states, &slot);
	if (!t || !st)
		return 0;
	fill_header(&t->hdr, RECORD_OFF_CPU);
	t->hdr.ktime_ns = now;
	t->num_frames = 0;
	t->num_kernel_frames = 0;
	t->pad = 0;
	t->off_cpu_ns = waited;
	collect_kernel_stack(ctx, t);
	struct pt_regs regs;
	if (current_user_regs(&regs) == 0) {
		start_unwind(st, &regs, id >> 32, 1);
		unwind_user(SLOT_OFF_CPU);
	}
	send_trace(t, st->urgent, COUNTER_LOST_OFF_CPU);
	return 0;
}

#endif
