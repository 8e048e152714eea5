// SPDX-License-Identifier: GPL-2.0-only
// Appending frames to the trace being built, shared by every unwinder.
#ifndef STACKLINE_FRAMES_H
#define STACKLINE_FRAMES_H

#include "types.h"
#include "trace.h"
#include "maps.h"

// What an unwinder step returns to bpf_loop: go on with the next step, or
// end the stack.
enum step_result {
	STEP_CONTINUE = 0,
	STEP_DONE = 1,
};

static __always_inline void push_frame(struct trace *t, u64 addr, u8 type, u8 flags)
{
	u32 n = t->num_frames;
	if (n >= MAX_FRAMES)
		return;
	t->frames[n].addr = addr;
	t->frames[n].aux = 0;
	t->frames[n].type = type;
	t->frames[n].flags = flags;
	t->frames[n].extra = 0;
	t->frames[n].aux_hi = 0;
	t->frames[n].file_dev = 0;
	t->num_frames = n + 1;
}

// Appends a frame of a runtime's own unwinder.
static __always_inline void push_interp_frame(struct trace *t, u64 addr, u32 aux, u32 extra, u8 type, u8 flags)
{
	u32 n = t->num_frames;
	if (n >= MAX_FRAMES)
		return;
	t->frames[n].addr = addr;
	t->frames[n].aux = aux;
	t->frames[n].extra = extra;
	t->frames[n].type = type;
	t->frames[n].flags = flags;
	t->frames[n].aux_hi = 0;
	t->frames[n].file_dev = 0;
	t->num_frames = n + 1;
}

// Ends a user stack early with an error frame saying why, so a truncated
// stack never looks complete, and counts the reason.
static __always_inline void push_error(struct trace *t, u64 code, u32 counter)
{
	count(counter);
	push_frame(t, code, FRAME_ERROR, 0);
}

#endif
