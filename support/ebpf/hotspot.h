// SPDX-License-Identifier: GPL-2.0-only
// The HotSpot unwinder: frames whose pc lies in the JVM's code cache (an
// owned range of the process, see interp.h), one machine frame per step.
//
// The code cache is a few CodeHeaps. A heap's segment map has a byte per
// segment of its memory: 0xff for an unused segment, 0 for the first
// segment of a block, and otherwise how many segments to go back towards
// the block's first (at most 254 at a time). A block holds a HeapBlock
// header, then a CodeBlob. The blob is one of:
//   - the template interpreter (its range is given apart, and checked
//     first): an interpreted frame keeps its Method* and bytecode pointer
//     in fixed slots below rbp, and the top frame's live bytecode pointer
//     is in r13. Interpreted frames are rbp-chained.
//   - an nmethod (C1 or C2 code, or a native method wrapper): a frame of
//     the blob's fixed size, saved rbp and return address at its top,
//     found from sp (compiled code does not keep a frame pointer).
//   - other VM code (stubs, adapters, the call stub): the blob's frame
//     size if it has one, else the rbp chain.
// The frames emitted name what user space needs to find the method again
// (Method* or nmethod), where in it (bytecode index, pc offset), and a
// check value that tells reused memory apart (a compile id, or a check of
// the method's class).
#ifndef STACKLINE_HOTSPOT_H
#define STACKLINE_HOTSPOT_H

#include "types.h"
#include "trace.h"
#include "maps.h"
#include "frames.h"
#include "interp.h"
#include "unwind_maps.h"

enum hotspot_bounds {
	// Code heaps searched: non-nmethods, profiled and non-profiled
	// nmethods (one heap when the code cache is not segmented).
	HOTSPOT_HEAPS = 3,
	// Steps back through a segment map: each goes back up to 254
	// segments (of 64 or 128 bytes), so 64 reach back 1-2 MiB.
	HOTSPOT_SEGMAP_HOPS = 64,
	// The bytecode index of an interpreted frame whose bytecode pointer
	// lies outside its method.
	HOTSPOT_BCI_UNKNOWN = 0xffffffff,
};

// One CodeHeap: its reserved range and segment map.
struct hotspot_heap {
	u64 low;
	u64 high;
	u64 segmap;
	u32 log2_segment_size;
	u32 pad;
};

// What interpreter/hotspot reads from the VM's own description of its
// layout (gHotSpotVMStructs and friends), written into interp_proc.config.
// Field offsets are in bytes.
struct hotspot_config {
	struct hotspot_heap heaps[HOTSPOT_HEAPS];
	// The template interpreter's code.
	u64 interp_start;
	u64 interp_end;
	u32 heap_block_size;    // sizeof(HeapBlock)
	u32 blob_name;          // CodeBlob::_name (const char*)
	u32 blob_size;          // CodeBlob::_size (int)
	u32 blob_frame_size;    // CodeBlob::_frame_size (int, in words)
	u32 blob_frame_complete; // CodeBlob::_frame_complete_offset (from code begin)
	u32 frame_complete_is_16; // 1: _frame_complete_offset is an int16_t (JDK 25), else an int
	u32 blob_code_begin;    // CodeBlob::_code_begin (pointer) or _code_offset (int)
	u32 code_begin_is_offset; // 1: blob_code_begin is an int offset from the blob
	u32 nmethod_compile_id; // nmethod::_compile_id (int)
	u32 nmethod_method;     // nmethod::_method
	u32 method_const_method; // Method::_constMethod
	u32 const_method_size;  // sizeof(ConstMethod): the bytecodes follow it
	u32 const_method_constants; // ConstMethod::_constants
	u32 const_method_code_size; // ConstMethod::_code_size (u2)
	u32 cpool_holder;       // ConstantPool::_pool_holder
	u32 klass_name;         // Klass::_name
	u32 symbol_length;      // Symbol::_length (u2)
	u32 symbol_body;        // Symbol::_body
};

// Code blobs, methods and compiled code addresses recently seen in each
// process. User space names a frame by reading the VM's memory, where an
// nmethod may be freed soon after; a trace with code not in here wakes the
// reader at once. User space names a compiled frame by its pc (the methods
// inlined there), reading the nmethod's debug data for each new pc: its
// key is the pc, not the nmethod, or the first sample of an nmethod would
// be read at once and those of its other pcs maybe after it is freed.
struct hotspot_seen_key {
	u32 pid;
	u32 check;
	u64 addr; // the method or blob; a compiled frame's pc (seen_pc)
};

// hotspot_seen_addr is a compiled frame's key in hotspot_seen: its pc, the
// top bit set for a return address (user space names the two apart; user
// addresses never have it).
static __always_inline u64 hotspot_seen_addr(u64 addr, u32 aux, u8 type, u8 flags)
{
	if (type != FRAME_JVM_COMPILED)
		return addr;
	u64 pc = addr + aux;
	if (flags & FRAME_FLAG_RETURN_ADDRESS)
		pc |= 1ULL << 63;
	return pc;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hotspot_seen_key);
	__type(value, u8);
} hotspot_seen SEC(".maps");

// The first eight bytes of the names HotSpot gives nmethods ("nmethod")
// and native method wrappers ("native nmethod"), little-endian.
#define HOTSPOT_NAME_NMETHOD 0x00646f6874656d6eULL
#define HOTSPOT_NAME_NATIVE 0x6e2065766974616eULL

// Interpreter frame slots, in words from rbp (frame_x86.hpp, the same in
// JDK 17 to 25): the sender's sp, Method*, the bytecode pointer.
#define HS_INTERP_SENDER_SP (-1)
#define HS_INTERP_METHOD (-3)
#define HS_INTERP_BCP (-8)

static __always_inline void hotspot_emit(struct trace *t, struct unwind_state *st, u64 addr, u32 aux, u32 check,
					 u8 type, u8 flags)
{
	push_interp_frame(t, addr, aux, check, type, flags);
	st->depth++;
	count(COUNTER_JVM_FRAMES);
	struct hotspot_seen_key key = {.pid = st->pid, .check = check, .addr = hotspot_seen_addr(addr, aux, type, flags)};
	if (!bpf_map_lookup_elem(&hotspot_seen, &key)) {
		u8 one = 1;
		bpf_map_update_elem(&hotspot_seen, &key, &one, BPF_ANY);
		st->urgent = 1;
	}
}

static __always_inline int hotspot_fail(struct trace *t)
{
	push_error(t, UNWIND_ERR_INTERP, COUNTER_JVM_ERRORS);
	return STEP_DONE;
}

// A walk back through a code heap's segment map (hotspot_hop's
// argument).
struct hotspot_segmap_walk {
	u64 segmap; // the map's address
	u64 idx;    // the segment to look at next
	int result; // 0: idx is the blob's first segment; -1: no blob
};

// Looks at one segment: it returns 1 to end the walk (result says how)
// and 0 to hop back to the segment the map points to. It runs under
// bpf_loop, so the verifier checks one hop, not HOTSPOT_SEGMAP_HOPS.
static long hotspot_hop(u64 index, void *arg)
{
	struct hotspot_segmap_walk *w = arg;
	u8 v;
	if (bpf_probe_read_user(&v, 1, (void *)(w->segmap + w->idx)))
		return 1;
	if (v == 0xff)
		return 1;
	if (v == 0) {
		w->result = 0;
		return 1;
	}
	if (v > w->idx)
		return 1;
	w->idx -= v;
	return 0;
}

// Finds the code blob holding pc through its heap's segment map.
static __always_inline int hotspot_find_blob(struct hotspot_config *c, u64 pc, u64 *blob)
{
	for (int h = 0; h < HOTSPOT_HEAPS; h++) {
		struct hotspot_heap *hp = &c->heaps[h];
		if (pc < hp->low || pc >= hp->high)
			continue;
		u32 shift = hp->log2_segment_size & 31;
		struct hotspot_segmap_walk w = {.segmap = hp->segmap, .idx = (pc - hp->low) >> shift, .result = -1};
		bpf_loop(HOTSPOT_SEGMAP_HOPS, hotspot_hop, &w, 0);
		if (w.result)
			return -1;
		*blob = hp->low + (w.idx << shift) + c->heap_block_size;
		return 0;
	}
	return -1;
}

static __always_inline int hs_read(void *dst, u32 size, u64 addr)
{
	return bpf_probe_read_user(dst, size, (void *)addr);
}

// Mixes x's bits (MurmurHash3's finalizer), so that check values of
// similar inputs (consecutive compile ids, names one letter apart) differ
// in unrelated ways.
static __always_inline u64 hotspot_mix(u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

// The check value of the method at method: its ConstMethod's and its
// class name's addresses, and the name's length and last eight bytes.
// Metadata freed with an unloaded class is reused for the next classes
// loaded, name symbols too: their contents tell them apart.
static __always_inline int hotspot_method_check(struct hotspot_config *c, u64 method, u64 *cm_out, u32 *check)
{
	u64 cm = 0, constants = 0, holder = 0, name = 0;
	if (hs_read(&cm, 8, method + c->method_const_method) ||
	    hs_read(&constants, 8, cm + c->const_method_constants) ||
	    hs_read(&holder, 8, constants + c->cpool_holder) || hs_read(&name, 8, holder + c->klass_name))
		return -1;
	u16 len = 0;
	u64 tail = 0;
	if (hs_read(&len, 2, name + c->symbol_length))
		return -1;
	u64 tail_at = name + c->symbol_body + (len >= 8 ? len - 8 : 0);
	if (len && hs_read(&tail, len >= 8 ? 8 : (len & 7), tail_at))
		return -1;
	*cm_out = cm;
	u64 h = hotspot_mix(cm);
	h = hotspot_mix(h ^ name);
	h = hotspot_mix(h ^ tail);
	h = hotspot_mix(h ^ len);
	*check = (u32)(h ^ (h >> 32));
	return 0;
}

// An interpreted frame: its Method* and bytecode pointer from the frame's
// slots (r13 for the top frame), then its caller through rbp.
static __always_inline int hotspot_interpreted(struct trace *t, struct unwind_state *st, struct hotspot_config *c)
{
	u64 fp = st->fp;
	if (!fp || (fp & 7) || fp < st->sp) {
		push_error(t, UNWIND_ERR_BAD_FRAME, COUNTER_BAD_FRAME);
		return STEP_DONE;
	}
	// Words fp-64 .. fp+8: bcp at [0], sender sp at [7], Method* at
	// [5], the saved rbp at [8] and the return address at [9].
	u64 w[10];
	if (hs_read(w, sizeof(w), fp + 8 * HS_INTERP_BCP))
		return hotspot_fail(t);
	u64 method = w[HS_INTERP_METHOD - HS_INTERP_BCP];
	u64 bcp = w[0];
	u64 cm = 0;
	u32 check;
	u16 code_size = 0;
	if (hotspot_method_check(c, method, &cm, &check) || hs_read(&code_size, 2, cm + c->const_method_code_size))
		return hotspot_fail(t);
	u64 code = cm + c->const_method_size;
	u32 bci = HOTSPOT_BCI_UNKNOWN;
	u64 r13 = st->top_r13;
	if (st->depth == 0 && !st->return_address && r13 >= code && r13 < code + code_size)
		bci = r13 - code;
	else if (bcp >= code && bcp < code + code_size)
		bci = bcp - code;
	hotspot_emit(t, st, method, bci, check, FRAME_JVM_INTERPRETED, 0);
	st->pc = w[9];
	st->fp = w[8];
	st->sp = fp + 16;
	st->unextended_sp = w[HS_INTERP_SENDER_SP - HS_INTERP_BCP];
	st->return_address = 1;
	return STEP_CONTINUE;
}

// Steps from a frame of a code blob of frame_size words: saved rbp and
// return address lie at the top of the frame, which begins at the
// caller's sp before any extension (sp for the top frame).
static __always_inline int hotspot_step_sized(struct trace *t, struct unwind_state *st, s32 frame_size, int built)
{
	u64 usp = st->unextended_sp ? st->unextended_sp : st->sp;
	u64 pair[2]; // saved rbp, return address
	if (!built) {
		// The top frame, before its prologue has built it: the
		// return address is at sp, rbp is still the caller's.
		if (hs_read(&pair[1], 8, st->sp))
			return hotspot_fail(t);
		st->sp += 8;
	} else {
		u64 sender_sp = usp + 8 * (u64)frame_size;
		if (hs_read(pair, sizeof(pair), sender_sp - 16))
			return hotspot_fail(t);
		st->fp = pair[0];
		st->sp = sender_sp;
	}
	st->pc = pair[1];
	st->unextended_sp = 0;
	st->return_address = 1;
	return STEP_CONTINUE;
}

// Steps from a frame by the rbp chain.
static __always_inline int hotspot_step_fp(struct trace *t, struct unwind_state *st)
{
	u64 fp = st->fp;
	u64 pair[2];
	if (!fp || (fp & 7) || fp < st->sp) {
		push_error(t, UNWIND_ERR_BAD_FRAME, COUNTER_BAD_FRAME);
		return STEP_DONE;
	}
	if (hs_read(pair, sizeof(pair), fp))
		return hotspot_fail(t);
	st->fp = pair[0];
	st->pc = pair[1];
	st->sp = fp + 16;
	st->unextended_sp = 0;
	st->return_address = 1;
	return STEP_CONTINUE;
}

// One frame in the code cache: emits it and steps to its caller.
//
// A global function, which the verifier checks once, for any arguments
// of its types, rather than on every path of the native unwinder that
// reaches it (as v8_frame). Its pointers are never NULL; the verifier
// wants them checked.
__noinline int hotspot_step(struct trace *t, struct unwind_state *st, struct interp_proc *ip)
{
	if (!t || !st || !ip)
		return STEP_DONE;
	struct hotspot_config *c = (struct hotspot_config *)ip->config;
	u64 pc = st->return_address ? st->pc - 1 : st->pc;
	int top = st->depth == 0 && !st->return_address;
	if (pc >= c->interp_start && pc < c->interp_end)
		return hotspot_interpreted(t, st, c);
	u64 blob;
	if (hotspot_find_blob(c, pc, &blob))
		return hotspot_fail(t);
	u64 name = 0, namep = 0;
	s32 size = 0, frame_size = 0, complete = 0;
	u64 code_begin = 0;
	if (hs_read(&namep, 8, blob + c->blob_name) || hs_read(&size, 4, blob + c->blob_size) ||
	    hs_read(&frame_size, 4, blob + c->blob_frame_size) ||
	    hs_read(&complete, 4, blob + c->blob_frame_complete))
		return hotspot_fail(t);
	if (c->frame_complete_is_16)
		complete = (__s16)complete;
	if (c->code_begin_is_offset) {
		s32 off = 0;
		if (hs_read(&off, 4, blob + c->blob_code_begin))
			return hotspot_fail(t);
		code_begin = blob + off;
	} else if (hs_read(&code_begin, 8, blob + c->blob_code_begin)) {
		return hotspot_fail(t);
	}
	if (size <= 0 || pc >= blob + (u64)size)
		return hotspot_fail(t);
	hs_read(&name, 8, namep);
	u32 off = st->pc - blob;
	// The frame is built once pc passed the prologue; a caller's always is.
	int built = !top || complete <= 0 || st->pc >= code_begin + complete;
	if (name == HOTSPOT_NAME_NMETHOD || name == HOTSPOT_NAME_NATIVE) {
		// The check: the compile id, which a recompiled method
		// changes, and the method's own check: an nmethod of an
		// unloaded class may stay in the code cache a while after its
		// method's memory went to another class.
		s32 compile_id = 0;
		u64 method = 0, cm;
		u32 mcheck;
		if (hs_read(&compile_id, 4, blob + c->nmethod_compile_id) || hs_read(&method, 8, blob + c->nmethod_method) ||
		    hotspot_method_check(c, method, &cm, &mcheck))
			return hotspot_fail(t);
		u64 h = hotspot_mix((u64)(u32)compile_id << 32 | mcheck);
		hotspot_emit(t, st, blob, off, (u32)(h ^ (h >> 32)), FRAME_JVM_COMPILED,
			     st->return_address ? FRAME_FLAG_RETURN_ADDRESS : 0);
		if (frame_size <= 0 || frame_size > 0x10000)
			return hotspot_fail(t);
		return hotspot_step_sized(t, st, frame_size, built);
	}
	hotspot_emit(t, st, blob, off, 0, FRAME_JVM_STUB, st->return_address ? FRAME_FLAG_RETURN_ADDRESS : 0);
	if (frame_size > 0 && frame_size <= 0x10000)
		return hotspot_step_sized(t, st, frame_size, built);
	return hotspot_step_fp(t, st);
}

#endif
