// SPDX-License-Identifier: GPL-2.0-only
// The native unwinder: one step per frame, run by bpf_loop so its cost in
// verified instructions does not grow with the stack depth.
//
// Each step finds the mapping of the current pc, then the row of the file's
// stack-delta table that covers it, computes the canonical frame address
// (CFA) from the row and reads the caller's return address and frame
// pointer. Mappings without a table (no CFI, anonymous or JIT code) are
// stepped by frame pointer.
#ifndef STACKLINE_NATIVE_H
#define STACKLINE_NATIVE_H

#include "types.h"
#include "trace.h"
#include "maps.h"
#include "frames.h"
#include "unwind_maps.h"
#include "interp.h"
#include "python.h"
#include "hotspot.h"
#include "vma.h"

// Offsets in the kernel's x86-64 signal frame, from the stack pointer the
// signal trampoline (__restore_rt) runs with: it points at the ucontext,
// whose uc_mcontext (struct sigcontext) starts 40 bytes in.
#define SIGCONTEXT_OFF 40
#define SIGCONTEXT_RBP (SIGCONTEXT_OFF + 80)
#define SIGCONTEXT_RSP (SIGCONTEXT_OFF + 120)
#define SIGCONTEXT_RIP (SIGCONTEXT_OFF + 128)

#define ENOENT 2

static __always_inline int read_user_u64(u64 *out, u64 addr)
{
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr);
}

// Copies the mapping of process pid holding pc (its mappings are sorted by
// start) into out, and returns 1; or returns 0 when there is none (or the
// process's mappings are not given).
//
// It is a global function, which the verifier checks once, for any
// arguments, rather than at every path that reaches a call (the native
// step and V8's walker): its binary search, a bounded loop, is checked
// step by step. out is never NULL; the verifier wants it checked.
__noinline int find_mapping(u32 pid, u64 pc, struct exec_mapping *out)
{
	if (!out)
		return 0;
	struct process_info *info = bpf_map_lookup_elem(&processes, &pid);
	if (!info)
		return 0;
	struct mapping_key key = {.pid = pid};
	u32 gen = (info->gen & 1) << MAPPING_GEN_SHIFT;
	u32 lo = 0, hi = info->num_mappings;
	// Invariant: the mapping, if any, has an index in [lo, hi).
	for (int i = 0; i < MAX_MAPPINGS_LOG2 + 1; i++) {
		if (hi - lo <= 1)
			break;
		u32 mid = lo + (hi - lo) / 2;
		key.slot = gen | mid;
		struct exec_mapping *m = bpf_map_lookup_elem(&process_mappings, &key);
		if (!m)
			return 0;
		if (m->start <= pc)
			lo = mid;
		else
			hi = mid;
	}
	key.slot = gen | lo;
	struct exec_mapping *m = bpf_map_lookup_elem(&process_mappings, &key);
	if (!m || pc < m->start || pc >= m->end)
		return 0;
	*out = *m;
	return 1;
}

// What find_rule returns when the table is not in unwind_tables: not a
// rule (no rule has kind 15).
#define RULE_NO_TABLE 0xffffffffU

// Returns the rule of the last row at or before off among the n rows of
// table, or RULE_INVALID when off precedes them all, or RULE_NO_TABLE when
// the table is not loaded. For a table built by region (n has
// ROWS_REGIONAL), the rows searched are those of off's region, from its
// index entry, or the entry gives the rule of a region not built (see
// unwind_bounds).
//
// A global function, as find_mapping: the verifier checks its binary
// search once.
__noinline u32 find_rule(u64 table, u32 n, u64 off)
{
	void *rows = bpf_map_lookup_elem(&unwind_tables, &table);
	if (!rows)
		return RULE_NO_TABLE;
	if (off > 0xffffffffULL)
		return RULE_INVALID;
	u32 lo = 0, hi = n;
	if (n & ROWS_REGIONAL) {
		u32 regions = n & ~ROWS_REGIONAL;
		u32 region = off >> REGION_SHIFT;
		if (region >= regions)
			region = regions - 1; // the last reaches to the end
		u64 *e = bpf_map_lookup_elem(rows, &region);
		if (!e)
			return RULE_INVALID;
		// One load: user space writes the entry with one store.
		u64 entry = *(volatile u64 *)e;
		u32 count = (u32)entry;
		lo = entry >> 32;
		if (count == 0)
			return lo;
		hi = lo + count;
	}
	// Invariant: the row, if any, has an index in [lo, hi).
	for (int i = 0; i < MAX_ROWS_LOG2 + 1; i++) {
		if (hi - lo <= 1)
			break;
		u32 mid = lo + (hi - lo) / 2;
		u64 *r = bpf_map_lookup_elem(rows, &mid);
		// The rows of a table's count are there: a row missing is a
		// table gone wrong, whose rules mean nothing.
		if (!r)
			return RULE_INVALID;
		if (ROW_ADDR(*r) > off)
			hi = mid;
		else
			lo = mid;
	}
	u64 *r = bpf_map_lookup_elem(rows, &lo);
	if (!r || ROW_ADDR(*r) > off)
		return RULE_INVALID;
	return ROW_RULE(*r);
}

// Unwind rows asked for: a frame in a file whose table is not built yet
// (table 0: by process and mapping), or in a region of a table built by
// region not built yet (by table and region). User space builds them when
// it reads the trace that stopped there: the first such trace is urgent,
// the others until the rows are in are not (a file it will not build, over
// the table budget, costs one wake-up, not one a sample).
struct rows_wanted_key {
	u32 pid;    // 0 for a region of a table
	u32 region; // the region, or ~0 for a whole table
	u64 where;  // the table, or the mapping's start
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rows_wanted_key);
	__type(value, u8);
} rows_wanted SEC(".maps");

static __always_inline void want_rows(struct unwind_state *st, u32 pid, u32 region, u64 where)
{
	struct rows_wanted_key key = {.pid = pid, .region = region, .where = where};
	if (!bpf_map_lookup_elem(&rows_wanted, &key)) {
		u8 one = 1;
		bpf_map_update_elem(&rows_wanted, &key, &one, BPF_ANY);
		st->urgent = 1;
	}
}

// Asks user space, at most once per SYNC_INTERVAL_NS per process, to load
// the process's mappings.
static __always_inline void request_sync(u32 pid)
{
	u64 now = bpf_ktime_get_ns();
	u64 *last = bpf_map_lookup_elem(&sync_requests, &pid);
	if (last && now - *last < SYNC_INTERVAL_NS)
		return;
	bpf_map_update_elem(&sync_requests, &pid, &now, BPF_ANY);
	struct process_event ev = {};
	ev.hdr.kind = RECORD_PROCESS_SYNC;
	ev.hdr.pid = pid;
	ev.hdr.ktime_ns = now;
	if (submit_record(&ev, sizeof(ev), 1))
		count(COUNTER_LOST_EVENTS);
	else
		count(COUNTER_SYNC_REQUESTS);
}

// find_vma_mapping's result.
struct vma_lookup {
	struct exec_mapping *out;
	int found;      // the address is in a mapping
	int table_known; // user space said whether the file has a table
	// The mapped file: its device (the kernel's dev_t) and inode; 0 for
	// anonymous memory.
	u32 dev;
	u64 inode;
};

// Fills l from vma, the mapping of the address looked up. vma may come
// from the lockless walk of vma.h: every field is read with a probe read.
static __always_inline void vma_fill(struct vm_area_struct *vma, struct vma_lookup *l)
{
	struct exec_mapping *m = l->out;
	u64 start = BPF_CORE_READ(vma, vm_start);
	m->start = start;
	m->end = BPF_CORE_READ(vma, vm_end);
	m->bias = start - (BPF_CORE_READ(vma, vm_pgoff) << 12);
	m->table = 0;
	m->num_rows = 0;
	m->flags = MAPPING_FLAG_VMA;
	l->found = 1;
	struct file *f = BPF_CORE_READ(vma, vm_file);
	if (!f) {
		// Anonymous executable memory (JIT code): frame pointers.
		m->flags |= MAPPING_FLAG_ANON;
		l->table_known = 1;
		return;
	}
	u32 dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	u64 inode = BPF_CORE_READ(f, f_inode, i_ino);
	l->dev = dev;
	l->inode = inode;
	struct file_key key = {};
	key.dev = (u64)(dev >> 20) << 32 | (dev & 0xfffff);
	key.inode = inode;
	struct file_table *ft = bpf_map_lookup_elem(&file_tables, &key);
	if (ft) {
		m->table = ft->table;
		m->num_rows = ft->num_rows;
		l->table_known = 1;
	}
}

static long vma_found(struct task_struct *task, struct vm_area_struct *vma, void *arg)
{
	vma_fill(vma, arg);
	return 0;
}

// Finds the mapping of pc in the current task's address space and the
// file's table, for a process user space has not synced (yet), into
// st->mapping, and the mapped file's identity into st. It returns 0 when
// the mapping and whether its file has a table are known.
//
// The walk of the maple tree (vma.h) works for every frame of a sample;
// bpf_find_vma, tried when the walk misses (a kernel before 6.1, a tree
// changed under the walk), only for the first in the sampling interrupt.
//
// A global function, which the verifier checks once rather than on every
// path of the native unwinder that reaches it: the walk's and
// bpf_find_vma's callbacks are checked again for each. st is never NULL;
// the verifier wants it checked.
__noinline int find_vma_mapping(struct unwind_state *st, u64 pc)
{
	if (!st)
		return UNWIND_ERR_NO_MAPPING;
	struct vma_lookup l = {.out = &st->mapping};
	u32 slot = st->off_cpu ? SLOT_OFF_CPU : SLOT_CPU;
	struct vm_area_struct *vma = maple_find_vma(slot, pc);
	long err = 0;
	if (vma) {
		vma_fill(vma, &l);
	} else {
		struct task_struct *task = bpf_get_current_task_btf();
		err = bpf_find_vma(task, pc, vma_found, &l, 0);
	}
	if (err == -ENOENT || (!err && !l.found))
		return UNWIND_ERR_NO_MAPPING;
	// The file, even when its table is not known: the frame is named
	// by it, and asks user space for the table.
	st->vma_dev = l.found ? l.dev : 0;
	st->vma_inode = l.found ? l.inode : 0;
	if (err || !l.table_known)
		return UNWIND_ERR_NOT_READY;
	return 0;
}

// Tells user space which file the frame just pushed for pc lies in, when
// its mapping was found in the kernel (the process's mappings were not
// given): it names the frame by the file, without reading the process,
// which may be gone by then. The frame's address becomes the file offset.
static __always_inline void tag_file_frame(struct trace *t, struct unwind_state *st)
{
	struct exec_mapping *m = &st->mapping;
	if (!(m->flags & MAPPING_FLAG_VMA) || !st->vma_inode)
		return;
	u32 n = t->num_frames;
	if (n == 0 || n > MAX_FRAMES)
		return;
	struct frame *f = &t->frames[(n - 1) & 511];
	if (f->type != FRAME_NATIVE)
		return;
	f->addr = st->pc - m->bias;
	f->flags |= FRAME_FLAG_FILE;
	f->aux = (u32)st->vma_inode;
	f->extra = (u32)(st->vma_inode >> 32);
	f->file_dev = st->vma_dev;
}

// Reports whether pc lies in one of the interpreter's eval loop ranges.
static __always_inline int in_handoff(struct unwind_state *st, u64 pc)
{
	for (int i = 0; i < INTERP_HANDOFFS; i++)
		if (pc >= st->handoff_start[i] && pc < st->handoff_end[i])
			return 1;
	return 0;
}

// Reports whether pc lies in one of the runtime's owned ranges.
static __always_inline int in_owned(struct unwind_state *st, u64 pc)
{
	for (int i = 0; i < INTERP_OWNED; i++)
		if (pc >= st->owned_start[i] && pc < st->owned_end[i])
			return 1;
	return 0;
}

// The V8 frame walker needs find_mapping.
#include "v8.h"

// Unwinds a frame in one of the runtime's owned ranges with the runtime's
// own unwinder, which emits its frames and steps to the caller.
static __always_inline int owned_step(struct trace *t, struct unwind_state *st)
{
	u32 pid = st->pid;
	struct interp_proc *ip = bpf_map_lookup_elem(&interp_procs, &pid);
	if (ip && ip->kind == INTERP_HOTSPOT) {
		// The verifier knows nothing of what a global function
		// returns: keep it one of the two (see v8_step).
		int r = hotspot_step(t, st, ip);
		asm volatile("" : "+r"(r));
		return r == STEP_CONTINUE ? STEP_CONTINUE : STEP_DONE;
	}
	push_error(t, UNWIND_ERR_NO_CFI, COUNTER_NO_CFI);
	return STEP_DONE;
}

// Steps from a frame without unwind information by its frame pointer: the
// saved rbp and the return address lie at rbp.
static __always_inline int step_frame_pointer(struct trace *t, struct unwind_state *st)
{
	// A zero frame pointer ends the chain; a misaligned one is data in a
	// function that uses rbp as a general register.
	if (st->fp == 0)
		return STEP_DONE;
	if ((st->fp & 7) || st->fp < st->sp) {
		push_error(t, UNWIND_ERR_BAD_FRAME, COUNTER_BAD_FRAME);
		return STEP_DONE;
	}
	u64 pair[2]; // saved rbp, return address
	if (bpf_probe_read_user(pair, sizeof(pair), (void *)st->fp)) {
		push_error(t, UNWIND_ERR_READ_FAILED, COUNTER_USER_READ_ERR);
		return STEP_DONE;
	}
	count(COUNTER_FP_FRAMES);
	st->sp = st->fp + 16;
	st->pc = pair[1];
	st->fp = pair[0];
	st->return_address = 1;
	return STEP_CONTINUE;
}

// Offsets in Go's runtime.g of g.sched.sp and g.sched.pc (struct gobuf
// starts with sp, pc), the same from Go 1.4 to 1.26.
#define GO_G_SCHED_SP 56
#define GO_G_SCHED_PC 64

// Steps from runtime.mcall, the outermost frame of a Go thread's system
// stack, to the goroutine that called it. mcall saved that goroutine's sp
// and pc in g.sched and pushed g, as the argument of the function it
// calls, just above that function's return address: at sp here. The
// thread blocked in that function (park_m: the scheduler found nothing to
// run) while the goroutine waited, so an off-CPU trace goes on with the
// goroutine's stack (main.waitInner <- ...). A goroutine that runs again
// has had its g.sched.sp cleared (gogo): the stack ends at mcall then.
static __always_inline int step_go_mcall(struct trace *t, struct unwind_state *st)
{
	u64 g, regs[2];
	if (read_user_u64(&g, st->sp) || !g)
		return STEP_DONE;
	if (bpf_probe_read_user(regs, sizeof(regs), (void *)(g + GO_G_SCHED_SP)) || !regs[0] || regs[0] & 7)
		return STEP_DONE;
	st->sp = regs[0];
	st->pc = regs[1];
	st->fp = 0;
	// Every Go function has a stack-delta row: no frame pointer needed.
	st->return_address = 1;
	count(COUNTER_CFI_FRAMES);
	return STEP_CONTINUE;
}

// Steps from a frame by its stack-delta rule.
static __always_inline int step_rule(struct trace *t, struct unwind_state *st, u32 rule)
{
	u64 cfa;
	switch (RULE_KIND(rule)) {
	case RULE_END:
		return STEP_DONE;
	case RULE_SP:
		cfa = st->sp + RULE_CFA_OFFSET(rule);
		break;
	case RULE_FP:
		cfa = st->fp + RULE_CFA_OFFSET(rule);
		break;
	case RULE_PLT:
		cfa = st->sp + RULE_CFA_OFFSET(rule) + ((st->pc & 15) >= 11 ? 8 : 0);
		break;
	case RULE_SIGNAL: {
		// The interrupted registers, saved by the kernel. The pc they
		// hold is exact, not a return address.
		u64 sp = st->sp;
		u64 regs[3];
		if (bpf_probe_read_user(&regs[0], 8, (void *)(sp + SIGCONTEXT_RBP)) ||
		    bpf_probe_read_user(&regs[1], 16, (void *)(sp + SIGCONTEXT_RSP))) {
			push_error(t, UNWIND_ERR_READ_FAILED, COUNTER_USER_READ_ERR);
			return STEP_DONE;
		}
		count(COUNTER_CFI_FRAMES);
		st->fp = regs[0];
		st->sp = regs[1];
		st->pc = regs[2];
		st->return_address = 0;
		return STEP_CONTINUE;
	}
	case RULE_GO_MCALL:
		if (!st->off_cpu)
			return STEP_DONE;
		return step_go_mcall(t, st);
	case RULE_UNBUILT:
		// A region of the file whose rows are not built yet: the
		// frame just pushed asks user space for them.
	default:
		push_error(t, UNWIND_ERR_NO_CFI, COUNTER_NO_CFI);
		return STEP_DONE;
	}
	// The stack grows down: the caller's frame lies above.
	if (cfa <= st->sp) {
		push_error(t, UNWIND_ERR_BAD_FRAME, COUNTER_BAD_FRAME);
		return STEP_DONE;
	}
	u64 ra;
	if (bpf_probe_read_user(&ra, sizeof(ra), (void *)(cfa - 8))) {
		push_error(t, UNWIND_ERR_READ_FAILED, COUNTER_USER_READ_ERR);
		return STEP_DONE;
	}
	u32 slot = RULE_FP_SLOT(rule);
	if (slot) {
		u64 fp;
		if (bpf_probe_read_user(&fp, sizeof(fp), (void *)(cfa - 8 * (u64)slot))) {
			push_error(t, UNWIND_ERR_READ_FAILED, COUNTER_USER_READ_ERR);
			return STEP_DONE;
		}
		st->fp = fp;
	}
	count(COUNTER_CFI_FRAMES);
	st->sp = cfa;
	st->pc = ra;
	st->return_address = 1;
	return STEP_CONTINUE;
}

// One native frame: record st->pc, then step to its caller.
static __always_inline int native_step(struct trace *t, struct unwind_state *st)
{
	if (st->depth >= max_user_frames) {
		push_error(t, UNWIND_ERR_MAX_DEPTH, COUNTER_MAX_DEPTH);
		return STEP_DONE;
	}
	// A return address points after the call, which may be the last
	// instruction of a function: look up the call itself.
	u64 pc = st->return_address ? st->pc - 1 : st->pc;
	if (st->interp_kind && !st->interp_done && in_handoff(st, pc)) {
		// An activation of the interpreter's eval loop: its
		// interpreted frames go first, then this native frame.
		st->interp_pending = 1;
		st->interp_done = 1;
		return STEP_CONTINUE;
	}
	if (st->interp_kind && in_owned(st, pc)) {
		int r = owned_step(t, st);
		if (r == STEP_CONTINUE && st->pc == 0) {
			// A runtime's frame always has a caller: its stack
			// was misread (a frame sampled while being set up).
			push_error(t, UNWIND_ERR_BAD_FRAME, COUNTER_BAD_FRAME);
			return STEP_DONE;
		}
		return r;
	}
	st->interp_done = 0;
	st->unextended_sp = 0;
	push_frame(t, st->pc, FRAME_NATIVE, st->return_address ? FRAME_FLAG_RETURN_ADDRESS : 0);
	st->depth++;
	struct exec_mapping *m = &st->mapping;
	if (!st->has_mapping || pc < m->start || pc >= m->end) {
		u32 pid = st->pid;
		if (!find_mapping(pid, pc, m)) {
			// Not synced yet, or mapped since: ask user space,
			// and meanwhile look the mapping up in the kernel.
			request_sync(pid);
			int err = find_vma_mapping(st, pc);
			// What a global function returns is unknown to the
			// verifier: keep it one of the three.
			asm volatile("" : "+r"(err));
			if (err && err != UNWIND_ERR_NO_MAPPING)
				err = UNWIND_ERR_NOT_READY;
			if (err == UNWIND_ERR_NO_MAPPING) {
				push_error(t, err, COUNTER_NO_MAPPING);
				return STEP_DONE;
			}
			if (err) {
				if (st->interp_kind != INTERP_V8)
					tag_file_frame(t, st);
				push_error(t, err, COUNTER_NOT_READY);
				return STEP_DONE;
			}
			count(COUNTER_VMA_LOOKUPS);
		}
		st->has_mapping = 1;
	}
	if (st->interp_kind != INTERP_V8)
		tag_file_frame(t, st);
	int r;
	if (st->interp_kind == INTERP_V8) {
		// V8's builtins and JIT code: its frame walker, by rbp.
		r = v8_step(t, st, pc, m);
		if (r >= 0)
			return r;
	}
	if (m->num_rows == 0) {
		r = step_frame_pointer(t, st);
	} else {
		u64 table = m->table;
		u32 rule = find_rule(table, m->num_rows, pc - m->bias);
		if (rule == RULE_NO_TABLE) {
			// Table 0: user space builds the file's table, asked
			// by this frame; it gives the mappings again with it.
			// Another: the table was unloaded under us, the
			// process's mappings are stale.
			if (table)
				request_sync(st->pid);
			else
				want_rows(st, st->pid, ~0U, m->start);
			push_error(t, UNWIND_ERR_NO_CFI, COUNTER_NO_CFI);
			return STEP_DONE;
		}
		if (RULE_KIND(rule) == RULE_UNBUILT)
			want_rows(st, 0, (u32)((pc - m->bias) >> REGION_SHIFT), table);
		if (rule == RULE_INVALID) {
			// Code the file's unwind information leaves out (a
			// runtime's hand-written code, node's embedded
			// builtins): its frame pointer is all there is.
			count(COUNTER_NO_CFI_FP);
			r = step_frame_pointer(t, st);
		} else {
			r = step_rule(t, st, rule);
		}
	}
	// A zero return address is how some runtimes end their stacks.
	if (r == STEP_CONTINUE && st->pc == 0)
		return STEP_DONE;
	return r;
}

// Emits the next interpreted frame of the eval loop activation at pc, or
// ends the activation.
static __always_inline int interp_step(struct trace *t, struct unwind_state *st)
{
	u32 pid = st->pid;
	struct interp_proc *ip = bpf_map_lookup_elem(&interp_procs, &pid);
	if (ip && ip->kind == INTERP_PYTHON)
		return python_step(t, st, ip);
	st->interp_pending = 0;
	return STEP_CONTINUE;
}

// One step of the user stack walk; arg points to the scratch slot (enum
// scratch_slot) holding the trace and the unwind state.
static long native_loop_step(u64 index, void *arg)
{
	u32 slot = *(u32 *)arg;
	struct trace *t = bpf_map_lookup_elem(&trace_scratch, &slot);
	struct unwind_state *st = bpf_map_lookup_elem(&unwind_states, &slot);
	if (!t || !st)
		return 1;
	if (st->interp_pending)
		return interp_step(t, st);
	return native_step(t, st);
}

// Prepares st to unwind the user stack whose registers are regs, in
// process pid, for an off-CPU trace when off_cpu.
static __always_inline void start_unwind(struct unwind_state *st, struct pt_regs *regs, u32 pid, u8 off_cpu)
{
	st->off_cpu = off_cpu;
	st->pc = regs->rip;
	st->sp = regs->rsp;
	st->fp = regs->rbp;
	st->pid = pid;
	st->depth = 0;
	st->return_address = 0;
	st->has_mapping = 0;
	st->interp_pending = 0;
	st->interp_done = 0;
	st->interp_init = 0;
	st->interp_frame = 0;
	st->urgent = 0;
	st->top_r13 = regs->r13;
	st->top_r9 = regs->r9;
	st->v8_init = 0;
	st->v8_handler = 0;
	st->unextended_sp = 0;
	struct interp_proc *ip = bpf_map_lookup_elem(&interp_procs, &st->pid);
	if (ip) {
		st->interp_kind = ip->kind;
		for (int i = 0; i < INTERP_HANDOFFS; i++) {
			st->handoff_start[i] = ip->handoff_start[i];
			st->handoff_end[i] = ip->handoff_end[i];
		}
		for (int i = 0; i < INTERP_OWNED; i++) {
			st->owned_start[i] = ip->owned_start[i];
			st->owned_end[i] = ip->owned_end[i];
		}
	} else {
		st->interp_kind = INTERP_NONE;
	}
}

// Unwinds the user stack prepared by start_unwind in scratch slot slot,
// appending its frames to the slot's trace: every unwinder, one step per
// frame. Both the CPU sampler and the off-CPU program walk stacks here.
static __always_inline void unwind_user(u32 slot)
{
	// One step per frame, plus one to notice a stack deeper than the
	// limit, plus up to two per interpreter activation (its hand-off,
	// and the 3.12+ Python shim frame it skips).
	bpf_loop(3 * MAX_USER_FRAMES + 1, native_loop_step, &slot, 0);
}

#endif
