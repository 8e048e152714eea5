// SPDX-License-Identifier: GPL-2.0-only
// Finding the mapping (VMA) of an address in the sampled task's address
// space, for a process whose mappings user space has not given yet: one
// that was just exec'd, lives a few milliseconds, or mapped code since it
// was read.
//
// Why not bpf_find_vma alone: in the sampling interrupt it cannot take the
// mmap lock for real; it defers releasing it to a per-CPU irq_work, and
// until that has run every further call on the CPU fails with EBUSY. So
// only the first frame of a sample could be looked up: main's caller in
// libc, or the dynamic loader, ended the stack ("process not loaded yet").
//
// Instead the unwinder walks the address space's maple tree (mm->mm_mt,
// Linux 6.1 and later) itself, without a lock, the way the kernel's own
// lockless lookup (mtree_load) does: from the root, in each node take the
// first slot whose pivot (the last index it covers) is at or above the
// address; leaves hold the vm_area_struct pointers. A node is read in one
// piece into per-CPU scratch. The tree may change under the walk, and its
// nodes be freed: the walk is bounded, every read may fail, and its result
// is never trusted blindly, only a VMA with vm_start <= pc < vm_end is
// taken. A racy walk costs a miss (the unwinder then tries bpf_find_vma),
// never a wrong frame.
#ifndef STACKLINE_VMA_H
#define STACKLINE_VMA_H

#include "types.h"
#include "maps.h"

// The fields of the kernel's maple tree read here (include/linux/
// maple_tree.h), relocated against the running kernel's BTF.
struct maple_tree {
	void *ma_root;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct maple_tree mm_mt;
	// The executable (read by the exec hook).
	struct file *exe_file;
} __attribute__((preserve_access_index));

// An internal node of an address space's tree (it tracks gaps, so its
// internal nodes are "allocation range" nodes).
struct maple_arange_64 {
	unsigned long pivot[9];
	void *slot[10];
} __attribute__((preserve_access_index));

// A leaf (and a plain range node): 15 pivots, 16 slots.
struct maple_range_64 {
	unsigned long pivot[15];
	void *slot[16];
} __attribute__((preserve_access_index));

// The encoding of node pointers: nodes are 256-byte aligned; bits 3-6 of a
// pointer to a node hold its type; the root pointer, when it points to a
// node, has its low two bits 10 (an "internal" entry) and is above 4096.
enum maple_layout {
	MAPLE_NODE_BYTES = 256,
	MAPLE_NODE_WORDS = MAPLE_NODE_BYTES / 8,
	MAPLE_TYPE_SHIFT = 3,
	MAPLE_TYPE_MASK = 0xf,
	MAPLE_LEAF_64 = 1,
	MAPLE_RANGE_64 = 2,
	MAPLE_ARANGE_64 = 3,
	MAPLE_RANGE_PIVOTS = 15,
	MAPLE_ARANGE_PIVOTS = 9,
	MAPLE_RESERVED = 4096,
	// An address space of a million mappings is 6 levels deep (at least
	// 5 children a node); this bounds a walk of a tree being changed.
	MAPLE_MAX_DEPTH = 8,
	// A walk's state, in the scratch words after the node's (see
	// maple_step).
	MAPLE_WALK_ENTRY = MAPLE_NODE_WORDS,
	MAPLE_WALK_PC,
	MAPLE_WALK_VMA,
	MAPLE_SCRATCH_WORDS,
};

// One node, read whole, and the walk's state, per scratch slot (enum
// scratch_slot): the off-CPU program may be interrupted by the sampling
// program on its CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCRATCH_SLOTS);
	__type(key, u32);
	__type(value, u64[MAPLE_SCRATCH_WORDS]);
} maple_scratch SEC(".maps");

// A walk of the maple tree in progress (maple_step's argument): the
// slot's scratch words, which hold the node read and the walk's state
// (MAPLE_WALK_*): the node pointer to descend into, the pc, and the
// result, the VMA's address or 0.
struct maple_walk {
	u64 *words;
};

// One level of the walk: reads the node the walk's entry points to and
// takes the slot holding its pc. It returns 1 to end the walk (the result
// is set when a VMA was found) and 0 to descend into the new entry.
//
// It runs under bpf_loop, so the verifier checks one level, not every
// level of an unrolled loop: the walk unrolled was half of the native
// unwinder's verified instructions (37k of 79k). The walk's state is in
// map memory, whose words the verifier does not track, rather than on the
// stack: the verifier checks a callback again while what it finds on the
// caller's stack changes from one call to the next, and this one, once.
static long maple_step(u64 depth, void *arg)
{
	struct maple_walk *w = arg;
	u64 *words = w->words;
	u64 entry = words[MAPLE_WALK_ENTRY];
	u64 pc = words[MAPLE_WALK_PC];
	u32 type = (entry >> MAPLE_TYPE_SHIFT) & MAPLE_TYPE_MASK;
	// Word offsets of the pivots and slots in each kind of node
	// (constants once relocated).
	u32 piv, slots, n;
	switch (type) {
	case MAPLE_LEAF_64:
	case MAPLE_RANGE_64:
		piv = bpf_core_field_offset(struct maple_range_64, pivot) / 8;
		slots = bpf_core_field_offset(struct maple_range_64, slot) / 8;
		n = MAPLE_RANGE_PIVOTS;
		break;
	case MAPLE_ARANGE_64:
		piv = bpf_core_field_offset(struct maple_arange_64, pivot) / 8;
		slots = bpf_core_field_offset(struct maple_arange_64, slot) / 8;
		n = MAPLE_ARANGE_PIVOTS;
		break;
	default:
		return 1;
	}
	void *node = (void *)(entry & ~(u64)(MAPLE_NODE_BYTES - 1));
	if (bpf_probe_read_kernel(words, MAPLE_NODE_BYTES, node))
		return 1;
	// The first slot whose pivot is at or above pc; past the last
	// pivot, the last slot (it ends at the node's maximum). Pivots past
	// the node's data are 0, below any pc there.
	u32 i = 0;
	for (; i < MAPLE_RANGE_PIVOTS; i++) {
		if (i >= n)
			break;
		u32 k = piv + i;
		if (k >= MAPLE_NODE_WORDS)
			return 1;
		if (words[k] >= pc)
			break;
	}
	u32 k = slots + i;
	if (k >= MAPLE_NODE_WORDS)
		return 1;
	entry = words[k];
	if (type == MAPLE_LEAF_64) {
		struct vm_area_struct *vma = (void *)entry;
		if (!vma)
			return 1;
		u64 start = BPF_CORE_READ(vma, vm_start);
		u64 end = BPF_CORE_READ(vma, vm_end);
		if (start <= pc && pc < end)
			words[MAPLE_WALK_VMA] = entry;
		return 1;
	}
	if (!entry)
		return 1;
	words[MAPLE_WALK_ENTRY] = entry;
	return 0;
}

// Returns the VMA of the current task holding pc, found by walking its
// address space's maple tree, or NULL: no mapping there, a kernel without
// the maple tree, or a walk that raced a change of the tree.
static __always_inline struct vm_area_struct *maple_find_vma(u32 slot, u64 pc)
{
	if (!bpf_core_field_exists(struct mm_struct, mm_mt))
		return NULL;
	struct maple_walk w = {.words = bpf_map_lookup_elem(&maple_scratch, &slot)};
	u64 *words = w.words;
	if (!words)
		return NULL;
	struct task_struct *task = bpf_get_current_task_btf();
	u64 root = (u64)BPF_CORE_READ(task, mm, mm_mt.ma_root);
	if ((root & 3) != 2 || root <= MAPLE_RESERVED)
		// Empty, or a single entry at address 0: no code there.
		return NULL;
	words[MAPLE_WALK_ENTRY] = root;
	words[MAPLE_WALK_PC] = pc;
	words[MAPLE_WALK_VMA] = 0;
	bpf_loop(MAPLE_MAX_DEPTH, maple_step, &w, 0);
	return (struct vm_area_struct *)words[MAPLE_WALK_VMA];
}

#endif
