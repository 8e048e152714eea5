// Package ksymname holds the kernel namer: a BPF_PROG_TYPE_SYSCALL program
// that asks the kernel to name kernel addresses (bpf_snprintf with "%pS",
// the format of the kernel's own backtraces) and to give the bounds of the
// kernel image (bpf_kallsyms_lookup_name), run by user space with
// BPF_PROG_RUN. Package kallsyms uses it instead of reading all of
// /proc/kallsyms. The generated object and bindings are committed, like
// support/ebpf's.
package ksymname

//go:generate go tool bpf2go -cc clang-16 -cflags "-O2 -g -Wall -Werror -I/usr/include/$MULTIARCH" -target amd64 -type ksym_batch Ksymname ksymname.bpf.c
