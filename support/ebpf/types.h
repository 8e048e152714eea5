// SPDX-License-Identifier: GPL-2.0-only
// Common includes and the few kernel structures stackline reads.
//
// Instead of a multi-megabyte generated vmlinux.h, the structures below list
// only the fields we read. preserve_access_index makes clang emit CO-RE
// relocations for them, so libbpf-style loaders (cilium/ebpf) fix the offsets
// against the running kernel's BTF at load time.
#ifndef STACKLINE_TYPES_H
#define STACKLINE_TYPES_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;

struct mm_struct;

struct super_block {
	u32 s_dev; // dev_t: major << 20 | minor
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_pgoff;
	struct file *vm_file;
} __attribute__((preserve_access_index));

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	// Threads of the group still alive; 0 once the last one has exited.
	atomic_t live;
} __attribute__((preserve_access_index));

struct thread_struct {
	// The thread pointer (FS base): what pthread_self() returns.
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_struct thread;
	struct mm_struct *mm;
	int pid;
	int tgid;
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

#endif
