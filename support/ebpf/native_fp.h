// SPDX-License-Identifier: GPL-2.0-only
// User-space unwinding by frame pointers.
//
// This is the fallback unwinder: correct for code built with frame pointers
// (Go, node, -fno-omit-frame-pointer C), wrong for the rest, where the
// .eh_frame unwinder takes over.
#ifndef STACKLINE_NATIVE_FP_H
#define STACKLINE_NATIVE_FP_H

#include "types.h"
#include "trace.h"
#include "maps.h"

// The user-mode registers of the current task. When the sample interrupted
// user code they are the perf event's registers; when it interrupted the
// kernel (a system call, a page fault), they are the ones saved on kernel
// entry, found through the task.
static __always_inline int user_regs(struct bpf_perf_event_data *ctx, struct pt_regs *out)
{
	if ((ctx->regs.cs & 3) == 3) {
		*out = ctx->regs;
		return 0;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	// Kernel threads have no user half.
	if (!BPF_CORE_READ(task, mm))
		return -1;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs || bpf_probe_read_kernel(out, sizeof(*out), regs))
		return -1;
	return 0;
}

static __always_inline void push_frame(struct trace *t, u64 addr, u8 type, u8 flags)
{
	u32 n = t->num_frames;
	if (n >= MAX_FRAMES)
		return;
	t->frames[n].addr = addr;
	t->frames[n].aux = 0;
	t->frames[n].type = type;
	t->frames[n].flags = flags;
	t->frames[n].pad = 0;
	t->num_frames = n + 1;
}

// Walks the frame-pointer chain from regs, appending up to max_depth frames.
// A walk that ends early for lack of data ends with an error frame, so a
// truncated stack never looks complete.
static __always_inline void unwind_frame_pointers(struct trace *t, struct pt_regs *regs, u32 max_depth)
{
	u64 fp = regs->rbp;
	u64 pc = regs->rip;

	push_frame(t, pc, FRAME_NATIVE, 0);
	for (u32 i = 1; i < MAX_USER_FRAMES; i++) {
		// The outermost frame has a zero (or misaligned, in code that
		// uses rbp for data) frame pointer: the walk is complete.
		if (fp == 0 || (fp & 7))
			return;
		if (i >= max_depth) {
			count(COUNTER_MAX_DEPTH);
			push_frame(t, UNWIND_ERR_MAX_DEPTH, FRAME_ERROR, 0);
			return;
		}
		u64 pair[2]; // saved frame pointer, return address
		if (bpf_probe_read_user(pair, sizeof(pair), (void *)fp)) {
			count(COUNTER_USER_READ_ERR);
			push_frame(t, UNWIND_ERR_READ_FAILED, FRAME_ERROR, 0);
			return;
		}
		if (pair[1] == 0)
			return;
		push_frame(t, pair[1], FRAME_NATIVE, FRAME_FLAG_RETURN_ADDRESS);
		// Stacks grow down: a caller's frame lies above its callee's.
		// Anything else is the end of a chain or garbage.
		if (pair[0] <= fp)
			return;
		fp = pair[0];
	}
	if (fp != 0 && !(fp & 7)) {
		count(COUNTER_MAX_DEPTH);
		push_frame(t, UNWIND_ERR_MAX_DEPTH, FRAME_ERROR, 0);
	}
}

#endif
