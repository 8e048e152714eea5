// Package vmaprobe runs the eBPF maple-tree walk of support/ebpf/vma.h (the
// unwinder's lookup of an unsynced process's mappings) for given addresses
// of a given process, so that its test can compare what the walk finds
// with /proc/PID/maps. The generated object and bindings are committed,
// like support/ebpf's.
package vmaprobe

//go:generate go tool bpf2go -cc clang-16 -cflags "-O2 -g -Wall -Werror -I/usr/include/$MULTIARCH" -target amd64 -type probe_result -type probe_bounds Vmaprobe vmaprobe.bpf.c
