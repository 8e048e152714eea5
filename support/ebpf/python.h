// SPDX-License-Identifier: GPL-2.0-only
// The CPython unwinder: emits the Python frames of one activation of the
// eval loop (_PyEval_EvalFrameDefault), one frame per bpf_loop step, when
// the native unwinder reaches that activation's native frame.
//
// How Python frames map onto eval loop activations depends on the version:
//   3.8-3.10  each Python frame runs in its own call of the eval loop:
//             one PyFrameObject per activation, chained by f_back.
//   3.11      one call runs many _PyInterpreterFrames (Python-to-Python
//             calls are inlined); the first frame of each call has
//             is_entry set.
//   3.12+     each call pushes a shim frame owned by the C stack below
//             its first frame.
// The thread's current frame comes from its PyThreadState, found by
// walking the main interpreter's thread list for the thread whose
// thread_id (pthread_self(), the FS base on x86-64) is the sampled
// thread's.
#ifndef STACKLINE_PYTHON_H
#define STACKLINE_PYTHON_H

#include "types.h"
#include "trace.h"
#include "maps.h"
#include "frames.h"
#include "interp.h"
#include "unwind_maps.h"

// How a version's frames map onto eval loop activations (see above).
enum py_frame_model {
	PY_FRAMES_PER_CALL = 0, // 3.8-3.10
	PY_FRAMES_IS_ENTRY = 1, // 3.11
	PY_FRAMES_SHIM = 2,     // 3.12+
};

// CPython's own constants: _PyInterpreterFrame.owner of the 3.12+ shim
// frames (interpreter/python checks it against CPython's debug info).
enum py_constants {
	PY_FRAME_OWNED_BY_CSTACK = 3,
};

// Threads of the main interpreter searched for the sampled one. The list
// holds the newest first, the main thread last.
#define PY_MAX_THREADS 256

// Code objects recently seen in each process. User space names a Python
// frame by reading its code object from the process, which must still be
// alive then; a trace with a code object not in here wakes the reader at
// once instead of waiting for its timer (a second), so short-lived processes
// and new code get named too. Known code costs no wake-up.
struct py_code_key {
	u32 pid;
	u32 pad;
	u64 code;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct py_code_key);
	__type(value, u8);
} py_code_seen SEC(".maps");

// A version's offsets, written by interpreter/python (the same order, all
// little-endian u32) into interp_proc.config. data[0] is _PyRuntime's
// address.
struct py_offsets {
	u32 frame_model;
	// The frame's instruction field is a pointer into the code object
	// (3.11+), not an int f_lasti.
	u32 instr_is_pointer;
	// PyThreadState's frame field points to a _PyCFrame (3.11, 3.12).
	u32 frame_via_cframe;
	u32 runtime_interpreters_main;
	u32 interp_threads_head;
	u32 tstate_next;
	u32 tstate_thread_id;
	u32 tstate_frame;
	u32 cframe_current_frame;
	u32 frame_back;
	u32 frame_code;
	u32 frame_instr;
	u32 frame_is_entry;
	u32 frame_owner;
	u32 code_firstlineno;
	u32 code_name;
};

static __always_inline int read_ptr(u64 *out, u64 addr)
{
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr);
}

// A search of the interpreter's thread states for the sampled thread's
// (py_thread_step's argument).
struct py_thread_search {
	u64 ts;    // the thread state to look at next
	u64 self;  // the sampled thread's id (its fsbase)
	u64 id_off, next_off; // offsets of the id and the link in a thread state
	int found; // ts is the sampled thread's
};

// Looks at one thread state: it returns 1 to end the search (found is set
// when ts is the sampled thread's) and 0 to go on to the next. It runs
// under bpf_loop, so the verifier checks one step, not PY_MAX_THREADS.
static long py_thread_step(u64 index, void *arg)
{
	struct py_thread_search *s = arg;
	if (!s->ts)
		return 1;
	u64 id;
	if (read_ptr(&id, s->ts + s->id_off))
		return 1;
	if (id == s->self) {
		s->found = 1;
		return 1;
	}
	if (read_ptr(&s->ts, s->ts + s->next_off))
		return 1;
	return 0;
}

// Finds the sampled thread's current Python frame; 0 when it has none.
static __always_inline int py_current_frame(struct interp_proc *ip, struct py_offsets *o, u64 *frame)
{
	u64 interp;
	if (read_ptr(&interp, ip->data[0] + o->runtime_interpreters_main) || !interp)
		return -1;
	struct py_thread_search s = {.id_off = o->tstate_thread_id, .next_off = o->tstate_next};
	if (read_ptr(&s.ts, interp + o->interp_threads_head))
		return -1;
	struct task_struct *task = bpf_get_current_task_btf();
	s.self = task->thread.fsbase;
	bpf_loop(PY_MAX_THREADS, py_thread_step, &s, 0);
	if (!s.found)
		return -1;
	u64 ts = s.ts;
	u64 f;
	if (read_ptr(&f, ts + o->tstate_frame))
		return -1;
	if (o->frame_via_cframe && f && read_ptr(&f, f + o->cframe_current_frame))
		return -1;
	*frame = f;
	return 0;
}

// Ends the current activation's Python frames with an error frame, which
// counts against the depth like any frame.
static __always_inline int py_fail(struct trace *t, struct unwind_state *st)
{
	push_error(t, UNWIND_ERR_INTERP, COUNTER_INTERP_ERRORS);
	st->depth++;
	st->interp_frame = 0;
	st->interp_pending = 0;
	return STEP_CONTINUE;
}

// One step of the Python unwinder: emits the next Python frame of the
// activation, or ends it.
static __always_inline int python_step(struct trace *t, struct unwind_state *st, struct interp_proc *ip)
{
	struct py_offsets *o = (struct py_offsets *)ip->config;
	if (!st->interp_init) {
		st->interp_init = 1;
		if (py_current_frame(ip, o, &st->interp_frame))
			return py_fail(t, st);
	}
	u64 f = st->interp_frame;
	if (!f) {
		// The eval loop runs no Python frame yet (or any more).
		st->interp_pending = 0;
		return STEP_CONTINUE;
	}
	if (st->depth >= max_user_frames) {
		push_error(t, UNWIND_ERR_MAX_DEPTH, COUNTER_MAX_DEPTH);
		return STEP_DONE;
	}
	u64 code, back, instr;
	if (read_ptr(&code, f + o->frame_code) || read_ptr(&back, f + o->frame_back) ||
	    read_ptr(&instr, f + o->frame_instr))
		return py_fail(t, st);
	u8 flag = 0;
	if (o->frame_model == PY_FRAMES_SHIM) {
		if (bpf_probe_read_user(&flag, 1, (void *)(f + o->frame_owner)))
			return py_fail(t, st);
		if (flag == PY_FRAME_OWNED_BY_CSTACK) {
			// The bottom of this activation.
			st->interp_frame = back;
			st->interp_pending = 0;
			return STEP_CONTINUE;
		}
	} else if (o->frame_model == PY_FRAMES_IS_ENTRY) {
		if (bpf_probe_read_user(&flag, 1, (void *)(f + o->frame_is_entry)))
			return py_fail(t, st);
	}

	// A cheap fingerprint of the code object: a code object freed and
	// another allocated at the same address almost always differs in
	// name or first line.
	s32 firstlineno = 0;
	u64 name = 0;
	if (bpf_probe_read_user(&firstlineno, sizeof(firstlineno), (void *)(code + o->code_firstlineno)) ||
	    read_ptr(&name, code + o->code_name))
		return py_fail(t, st);
	u32 h = (u32)name ^ (u32)(name >> 32) ^ ((u32)firstlineno * 0x9e3779b1u);

	u32 aux = o->instr_is_pointer ? (u32)(instr - code) : (u32)instr;
	push_interp_frame(t, code, aux, h, FRAME_CPYTHON, 0);
	count(COUNTER_PYTHON_FRAMES);
	struct py_code_key key = {.pid = st->pid, .code = code};
	if (!bpf_map_lookup_elem(&py_code_seen, &key)) {
		u8 one = 1;
		bpf_map_update_elem(&py_code_seen, &key, &one, BPF_ANY);
		st->urgent = 1;
	}
	st->depth++;
	st->interp_frame = back;
	if (o->frame_model == PY_FRAMES_PER_CALL || (o->frame_model == PY_FRAMES_IS_ENTRY && flag))
		st->interp_pending = 0;
	return STEP_CONTINUE;
}

#endif
