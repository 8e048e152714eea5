// Package ebpf holds stackline's eBPF C sources and the objects and Go
// bindings generated from them by bpf2go. The generated files are committed,
// so building stackline needs no clang; `make generate` rebuilds them.
//
// Every type and constant the Go side shares with the C side is generated
// from the C declarations: the structs and enums listed with -type below
// (constants shared with Go are enum values, not macros, so that they reach
// the object's BTF). The tests compare the generated Go types with the BTF
// of the committed object.
//
// The programs include the kernel's UAPI headers, whose <asm/...> part
// Debian and Ubuntu keep in a multiarch directory (/usr/include/$MULTIARCH)
// that clang does not search for the BPF target; `make generate` sets
// $MULTIARCH from the C compiler (empty on distributions that keep them in
// /usr/include).
package ebpf

//go:generate go tool bpf2go -cc clang-16 -cflags "-O2 -g -Wall -Werror -I/usr/include/$MULTIARCH" -target amd64 -type trace -type record_header -type frame -type process_event -type exec_mapping -type process_info -type mapping_key -type file_key -type file_table -type interp_proc -type py_offsets -type record_kind -type frame_type -type frame_flags -type unwind_error -type trace_bounds -type counter -type rule_kind -type rule_layout -type unwind_bounds -type sync_timing -type unwinder -type interp_kind -type py_frame_model -type py_constants -type scratch_slot -type hotspot_config -type hotspot_heap -type hotspot_bounds -type v8_config -type mapping_flags Stackline stackline.bpf.c
