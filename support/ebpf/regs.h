// SPDX-License-Identifier: GPL-2.0-only
// Finding the user-mode registers of the sampled task.
#ifndef STACKLINE_REGS_H
#define STACKLINE_REGS_H

#include "types.h"

// The user-mode registers of the current task, saved on its entry into the
// kernel; -1 for kernel threads, which have no user half.
static __always_inline int current_user_regs(struct pt_regs *out)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (!BPF_CORE_READ(task, mm))
		return -1;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs || bpf_probe_read_kernel(out, sizeof(*out), regs))
		return -1;
	return 0;
}

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
	return current_user_regs(out);
}

#endif
