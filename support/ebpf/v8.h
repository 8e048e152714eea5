// SPDX-License-Identifier: GPL-2.0-only
// The V8 frame walker: frames of node (or another V8 embedder) whose pc
// lies in V8's embedded builtins (a range of the V8 file's text, without
// CFI) or in anonymous executable memory (V8's JIT code: Sparkplug,
// Maglev, TurboFan). Every such frame keeps a frame pointer, so the walk
// is by rbp; what the frame is comes from the slots below it:
//   fp-8   a Smi frame type marker (entry, exit, stub, construct, ...
//          frames: a "typed" frame), else the function's context;
//   fp-16  the JSFunction, in JavaScript frames;
//   fp-32  the BytecodeArray and fp-40 the bytecode offset (a Smi), in
//          interpreted frames (a Sparkplug frame keeps its feedback
//          vector in the offset slot).
// These offsets are the same in every V8 stackline supports (the v8dbg
// off_fp_* constants; interpreter/v8 checks them).
//
// A frame is emitted as one of:
//   FRAME_V8JS_INTERPRETED  addr: the SharedFunctionInfo, aux: the bytecode
//                         offset from the BytecodeArray's tagged address;
//   FRAME_V8JS_CODE         addr: the SharedFunctionInfo, aux and aux_hi:
//                         the pc (Sparkplug, Maglev, TurboFan code, or a
//                         builtin with JavaScript linkage);
//   FRAME_V8JS_STUB         addr: pc, aux: the frame type, for a typed
//                         frame in JIT code.
// extra is a check of the SharedFunctionInfo (its address, name or scope
// info and script, the script's id) so that user space, reading V8's heap later, never
// names a frame after an object the GC moved or freed meanwhile.
// Typed frames in the builtins (entry, exit, stub frames of builtins) and
// frameless builtins stay native frames, stepped by rbp here: the
// symbolizer names them Builtins_*. A frameless builtin on top of the
// stack is stepped through the return address at sp.
#ifndef STACKLINE_V8_H
#define STACKLINE_V8_H

#include "types.h"
#include "trace.h"
#include "maps.h"
#include "frames.h"
#include "interp.h"
#include "unwind_maps.h"

// What interpreter/v8 reads from V8's postmortem constants (v8dbg_*),
// written into interp_proc.config.
struct v8_config {
	// The embedded builtins' code in the process, [start, end).
	u64 builtins_start;
	u64 builtins_end;
	u32 map;               // HeapObject::map
	u32 map_instance_type; // Map::instance_type (u16)
	u32 function_shared;   // JSFunction::shared
	u32 sfi_name;          // SharedFunctionInfo::name_or_scope_info
	u32 sfi_script;        // SharedFunctionInfo::script
	u32 bytecode_length;   // BytecodeArray::length (Smi)
	u32 bytecode_data;     // BytecodeArray's first bytecode, from its untagged address
	u16 first_jsfunction;  // instance types
	u16 last_jsfunction;
	u16 type_sfi;
	u16 type_bytecode_array;
	u32 max_frame_type;    // frame type markers are at most this
	u16 type_script;
	u16 pad;
	u32 script_id;         // Script::id (Smi)
	u32 pad2;
};

// V8's tagging on x86-64 without pointer compression: heap object
// pointers end in 01, Smis in 0 with their value in the upper half.
#define V8_TAG_MASK 3
#define V8_HEAP_TAG 1
#define V8_SMI_SHIFT 32

// Frame slots, in words from rbp (off_fp_*), and the window read.
#define V8_WINDOW_FROM (-48)
#define V8_SLOT(off) (((off) - V8_WINDOW_FROM) / 8)
#define V8_FP_CONTEXT V8_SLOT(-8)
#define V8_FP_FUNCTION V8_SLOT(-16)
#define V8_FP_BYTECODE_ARRAY V8_SLOT(-32)
#define V8_FP_BYTECODE_OFFSET V8_SLOT(-40)
#define V8_FP_SAVED_FP V8_SLOT(0)
#define V8_FP_RETURN V8_SLOT(8)
#define V8_WINDOW_WORDS (V8_FP_RETURN + 1)

// A frame is at most this large: an fp further above sp is not one.
#define V8_MAX_FRAME_BYTES (1 << 20)

// Functions (interpreted) and JIT code addresses recently seen in each
// process: a trace with one not in here wakes the reader at once, so that
// the GC has little time to move or free it before user space reads it.
struct v8_seen_key {
	u32 pid;
	u32 check;
	u64 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct v8_seen_key);
	__type(value, u8);
} v8_seen SEC(".maps");

static __always_inline int v8_read(void *dst, u32 size, u64 addr)
{
	return bpf_probe_read_user(dst, size, (void *)addr);
}

// Returns the instance type of the heap object v, or 0.
static __always_inline u16 v8_type(struct v8_config *c, u64 v)
{
	if ((v & V8_TAG_MASK) != V8_HEAP_TAG)
		return 0;
	u64 map = 0;
	u16 t = 0;
	if (v8_read(&map, 8, v - V8_HEAP_TAG + c->map) || (map & V8_TAG_MASK) != V8_HEAP_TAG ||
	    v8_read(&t, 2, map - V8_HEAP_TAG + c->map_instance_type))
		return 0;
	return t;
}

static __always_inline void v8_seen_check(struct unwind_state *st, u64 addr, u32 check)
{
	struct v8_seen_key key = {.pid = st->pid, .check = check, .addr = addr};
	if (!bpf_map_lookup_elem(&v8_seen, &key)) {
		u8 one = 1;
		bpf_map_update_elem(&v8_seen, &key, &one, BPF_ANY);
		st->urgent = 1;
	}
}

// Reports whether pc, in the file mapping m, is in the embedded builtins:
// in the V8 file's own text, or in a copy V8 mapped from the same file
// pages next to its JIT code (so that JIT code calls builtins with short
// calls). A copy has the file's table and the builtins' file offsets; the
// mapping of the original (its table and bias) is found once a sample.
static __always_inline int v8_in_builtins(struct unwind_state *st, struct v8_config *c, struct exec_mapping *m,
					  u64 pc)
{
	if (pc >= c->builtins_start && pc < c->builtins_end)
		return 1;
	if (!m->table || !c->builtins_start)
		return 0;
	if (!st->v8_init) {
		st->v8_init = 1;
		st->v8_table = 0;
		struct exec_mapping orig;
		if (find_mapping(st->pid, c->builtins_start, &orig)) {
			st->v8_table = orig.table;
			st->v8_bias = orig.bias;
		}
	}
	if (!st->v8_table || m->table != st->v8_table)
		return 0;
	u64 off = pc - m->bias;
	return off >= c->builtins_start - st->v8_bias && off < c->builtins_end - st->v8_bias;
}

// v8_frame does v8_step's work. It is a global function, which the
// verifier checks once on its own, for any arguments of its types, rather
// than once for every path of the native unwinder that reaches it: the
// native unwinder's verification goes from 20,772 to 16,776 instructions
// (V8's frame walker branches a lot). Its pointers are never null; the
// verifier wants them checked.
__noinline int v8_frame(struct trace *t, struct unwind_state *st, u64 pc, struct exec_mapping *m)
{
	if (!t || !st || !m)
		return -1;
	u32 pid = st->pid;
	struct interp_proc *ip = bpf_map_lookup_elem(&interp_procs, &pid);
	if (!ip || ip->kind != INTERP_V8)
		return -1;
	struct v8_config *c = (struct v8_config *)ip->config;
	int anon = m->flags & MAPPING_FLAG_ANON;
	int builtin = !anon && v8_in_builtins(st, c, m, pc);
	if (!builtin && !anon)
		return -1;
	u64 fp = st->fp;
	if (!fp || (fp & 7) || fp < st->sp || fp - st->sp > V8_MAX_FRAME_BYTES)
		return -1;
	u64 w[V8_WINDOW_WORDS];
	if (v8_read(w, sizeof(w), fp + V8_WINDOW_FROM))
		return -1;
	u32 n = t->num_frames;
	if (n == 0 || n > MAX_FRAMES)
		return -1;
	struct frame *f = &t->frames[(n - 1) & 511];
	if ((void *)(f + 1) > (void *)(t + 1))
		return -1;
	u64 marker = w[V8_FP_CONTEXT];
	if ((marker & 1) == 0) {
		// A typed frame: the marker is its type shifted left by one.
		u64 type = marker >> 1;
		if (type == 0 || type > c->max_frame_type)
			return -1;
		// In the builtins the frame stays native: the symbolizer
		// names the builtin (Builtins_CEntry_..., Builtins_JSEntry).
		if (builtin && st->depth == 1 && !st->return_address)
			st->v8_handler = 1;
		if (!builtin) {
			f->type = FRAME_V8JS_STUB;
			f->aux = type;
			f->extra = 0;
		}
	} else {
		u64 function = w[V8_FP_FUNCTION];
		u16 ft = v8_type(c, function);
		if (!ft || ft < c->first_jsfunction || ft > c->last_jsfunction)
			return -1;
		u64 sfi = 0, name = 0, script = 0, id = 0;
		if (v8_read(&sfi, 8, function - V8_HEAP_TAG + c->function_shared) || v8_type(c, sfi) != c->type_sfi ||
		    v8_read(&name, 8, sfi - V8_HEAP_TAG + c->sfi_name) ||
		    v8_read(&script, 8, sfi - V8_HEAP_TAG + c->sfi_script)) {
			count(COUNTER_V8JS_ERRORS);
			return -1;
		}
		// The script's id tells apart functions whose objects were
		// allocated where a collected function's were (the same
		// addresses come back for the same sequence of allocations).
		if ((script & V8_TAG_MASK) == V8_HEAP_TAG)
			v8_read(&id, 8, script - V8_HEAP_TAG + c->script_id);
		u32 check = (u32)sfi ^ (u32)(sfi >> 32) ^ ((u32)name * 0x9e3779b1u) ^ (u32)(name >> 32) ^
			    ((u32)script * 0x85ebca6bu) ^ (u32)(script >> 32) ^ ((u32)(id >> 32) * 0xc2b2ae35u);
		u64 bca = w[V8_FP_BYTECODE_ARRAY], bco = w[V8_FP_BYTECODE_OFFSET];
		int interpreted = builtin && (bco & 1) == 0 && v8_type(c, bca) == c->type_bytecode_array;
		if (builtin && !interpreted && st->depth == 1 && !st->return_address &&
		    v8_type(c, script) == c->type_script) {
			// The sampled pc is in a builtin without a frame of its
			// own (Sparkplug and optimized code call many), called
			// by the user function whose frame fp is: the builtin
			// stays a native frame, and its return address, on top
			// of the stack, leads to that function's code.
			u64 ra = 0;
			if (v8_read(&ra, 8, st->sp))
				return -1;
			count(COUNTER_V8JS_FRAMES);
			st->pc = ra;
			st->sp += 8;
			st->return_address = 1;
			return STEP_CONTINUE;
		}
		if (interpreted) {
			// Interpreted: the frame's bytecode offset is saved when
			// the interpreter calls out; while it runs a bytecode
			// handler (the sampled frame, or the caller of a sampled
			// handler with a frame of its own) the live one is in r9
			// (its register on entry to a handler).
			u64 off = bco >> V8_SMI_SHIFT;
			if ((st->depth == 1 && !st->return_address) || (st->depth == 2 && st->v8_handler)) {
				u64 len = 0;
				u64 r9 = st->top_r9;
				if (!v8_read(&len, 8, bca - V8_HEAP_TAG + c->bytecode_length) &&
				    r9 >= c->bytecode_data - V8_HEAP_TAG &&
				    r9 < c->bytecode_data - V8_HEAP_TAG + (len >> V8_SMI_SHIFT))
					off = r9;
			}
			f->type = FRAME_V8JS_INTERPRETED;
			f->addr = sfi;
			f->aux = off;
		} else {
			f->type = FRAME_V8JS_CODE;
			f->addr = sfi;
			f->aux = (u32)st->pc;
			f->aux_hi = (u16)(st->pc >> 32);
		}
		f->extra = check;
		// User space names JIT code by the code object holding the pc
		// (its source positions), interpreted code by its function: a
		// function's new code (optimized again, or moved) is new to it,
		// so the key of a JIT frame is its pc, the top bit set for a
		// return address, as for the JVM's compiled frames.
		u64 seen = f->addr;
		if (!interpreted)
			seen = st->pc | (st->return_address ? 1ULL << 63 : 0);
		v8_seen_check(st, seen, check);
	}
	count(COUNTER_V8JS_FRAMES);
	st->fp = w[V8_FP_SAVED_FP];
	st->pc = w[V8_FP_RETURN];
	st->sp = fp + 16;
	st->unextended_sp = 0;
	st->return_address = 1;
	if (st->pc == 0)
		return STEP_DONE;
	return STEP_CONTINUE;
}

// Turns the native frame just pushed for pc into a V8 frame when it is
// one, and steps to its caller by rbp. It returns -1 when the frame is
// not V8's (or not readable as such): native unwinding goes on with it.
// m is pc's mapping.
static __always_inline int v8_step(struct trace *t, struct unwind_state *st, u64 pc, struct exec_mapping *m)
{
	int r = v8_frame(t, st, pc, m);
	// The verifier knows nothing of what a global function returns:
	// bound it where the compiler cannot drop the check (it knows
	// v8_frame's returns and would otherwise fold the bound away).
	asm volatile("" : "+r"(r));
	if (r < -1 || r > STEP_DONE)
		return -1;
	return r;
}

#endif
