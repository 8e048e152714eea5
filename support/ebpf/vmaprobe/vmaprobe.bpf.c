//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only
// The maple-tree walk of ../vma.h, run for addresses user space gives, in
// the address space of one process: the test compares what it finds with
// /proc/PID/maps. It runs at the process's next system call (raw
// tracepoint sys_enter), in the process's context, as the unwinder does.

#include "../vma.h"

char LICENSE[] SEC("license") = "GPL";

// The process to look the addresses up in (set by the loader).
volatile const u32 target_tgid = 0;

enum probe_bounds {
	PROBE_ADDRS = 512,
};

// What the walk found for one address; found 0 when nothing.
struct probe_result {
	u64 start;
	u64 end;
	u64 pgoff;
	u64 inode;
	u32 dev;
	u32 found;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PROBE_ADDRS);
	__type(key, u32);
	__type(value, u64);
} probe_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PROBE_ADDRS);
	__type(key, u32);
	__type(value, struct probe_result);
} probe_results SEC(".maps");

// Element 0 counts the runs: the addresses are looked up once.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} probe_runs SEC(".maps");

static long probe_one(u64 i, void *ctx)
{
	u32 k = i;
	u64 *addr = bpf_map_lookup_elem(&probe_addrs, &k);
	struct probe_result *r = bpf_map_lookup_elem(&probe_results, &k);
	if (!addr || !r)
		return 1;
	struct vm_area_struct *vma = maple_find_vma(SLOT_CPU, *addr);
	if (!vma) {
		r->found = 0;
		return 0;
	}
	r->found = 1;
	r->start = BPF_CORE_READ(vma, vm_start);
	r->end = BPF_CORE_READ(vma, vm_end);
	r->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	struct file *f = BPF_CORE_READ(vma, vm_file);
	r->inode = 0;
	r->dev = 0;
	if (f) {
		r->inode = BPF_CORE_READ(f, f_inode, i_ino);
		r->dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	}
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int vma_probe(struct bpf_raw_tracepoint_args *ctx)
{
	if (bpf_get_current_pid_tgid() >> 32 != target_tgid)
		return 0;
	u32 zero = 0;
	u32 *runs = bpf_map_lookup_elem(&probe_runs, &zero);
	if (!runs || *runs)
		return 0;
	bpf_loop(PROBE_ADDRS, probe_one, NULL, 0);
	*runs = 1;
	return 0;
}

// Makes the types user space shares reach the object's BTF for bpf2go.
struct shared_types {
	struct probe_result probe_result;
	enum probe_bounds probe_bounds;
};

const volatile struct shared_types *const shared_types = 0;
