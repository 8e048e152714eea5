// Package ebpf holds stackline's eBPF C sources and the objects and Go
// bindings generated from them by bpf2go. The generated files are committed,
// so building stackline needs no clang; `make generate` rebuilds them.
package ebpf

//go:generate go tool bpf2go -cc clang-16 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target amd64 -type trace -type record_header -type frame -type exec_mapping -type process_info -type mapping_key -type file_key -type file_table -type interp_proc Stackline stackline.bpf.c
