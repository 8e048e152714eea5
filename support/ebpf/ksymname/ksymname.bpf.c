//go:build ignore

// SPDX-License-Identifier: GPL-2.0-only
// The kernel namer: names a batch of kernel addresses the way the kernel's
// own backtraces do ("%pS": function+0xoffset/0xsize [module]), for user
// space to parse. It is a syscall program, run on demand with
// BPF_PROG_RUN; user space writes the addresses into the one element of
// batch (mmapped) and reads the names from it.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;

char LICENSE[] SEC("license") = "GPL";

enum ksym_bounds {
	// Addresses named per run.
	KSYM_BATCH = 32,
	// Bytes of output per address: a kernel symbol name is at most 512
	// bytes (KSYM_NAME_LEN), a module name 56; longer output is cut and
	// reported by its length.
	KSYM_OUTPUT = 640,
};

// One run's input and output. count addresses of addrs are named into
// names; lens[i] is bpf_snprintf's result for addrs[i] (the output's
// length plus one, which may exceed KSYM_OUTPUT when it was cut, or a
// negative error). A run with count 0 fills image_start and image_end
// instead, the bounds of the kernel image's code (_stext, and _einittext
// or else _etext; 0 when the kernel would not say).
struct ksym_batch {
	u32 count;
	u32 pad;
	u64 image_start;
	u64 image_end;
	u64 addrs[KSYM_BATCH];
	s32 lens[KSYM_BATCH];
	char names[KSYM_BATCH][KSYM_OUTPUT];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, struct ksym_batch);
} batch SEC(".maps");

static const char symbol_format[] = "%pS";
static const char image_start_name[] = "_stext";
static const char image_end_name[] = "_einittext";
static const char text_end_name[] = "_etext";

// image_bounds fills the bounds of the kernel image's code.
static __always_inline int image_bounds(struct ksym_batch *b)
{
	u64 addr = 0;
	if (bpf_kallsyms_lookup_name(image_start_name, sizeof(image_start_name), 0, &addr) == 0)
		b->image_start = addr;
	else
		b->image_start = 0;
	addr = 0;
	if (bpf_kallsyms_lookup_name(image_end_name, sizeof(image_end_name), 0, &addr) == 0 ||
	    bpf_kallsyms_lookup_name(text_end_name, sizeof(text_end_name), 0, &addr) == 0)
		b->image_end = addr;
	else
		b->image_end = 0;
	return 0;
}

SEC("syscall")
int name_addresses(void *ctx)
{
	u32 key = 0;
	struct ksym_batch *b = bpf_map_lookup_elem(&batch, &key);
	if (!b)
		return 1;
	u32 n = b->count;
	if (n == 0)
		return image_bounds(b);
	for (u32 i = 0; i < KSYM_BATCH; i++) {
		if (i >= n)
			break;
		u64 arg = b->addrs[i];
		b->lens[i] = bpf_snprintf(b->names[i], KSYM_OUTPUT, symbol_format, &arg, sizeof(arg));
	}
	return 0;
}
