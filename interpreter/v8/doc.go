// Package v8 finds V8 (node.js, libnode.so.N, embedders) in a mapped
// file and names JavaScript frames from the memory of a process running
// it. It is the host side of node support; the eBPF frame walker that
// will feed it comes later (see "What the frame walker needs" below).
//
// # Detection and layout
//
// A file holds V8 when it has V8's postmortem constants, the ~450-530
// v8dbg_* symbols (ints: class field offsets, instance types, frame type
// markers, frame-pointer offsets, tags and masks), in .dynsym or .symtab
// (node 24.11 and later keep them in .symtab only); its name does not
// matter. The version is v8::internal::Version::{major_,minor_,build_,
// patch_}, read from the file's data. NewLayout turns the constants into
// a typed Layout for V8 10.2 (node 18) to 13.6 (node 24). Where a V8
// version lost a constant (the metadata script missed fields as classes
// moved to Torque and trusted space) the offset is derived from a
// neighbouring constant by that version's rule, each checked against
// live node 20, 22 and 24 objects; a constant missing with no rule is an
// error that names it. The differences that matter:
//
//	node (V8)     JSFunction -> code          Code: deopt data, positions   BytecodeArray positions
//	18 (10.2)     code field (+48)            +16, +24; instructions inline   length+24 (+32)
//	20 (11.3)     code field (+48)            +16, +24; instruction_start +40 length+24 (+32)
//	22 (12.4)     code field (+24)            wrapper-16, wrapper-8 (+8, +16) wrapper+8 (+24)
//	24 (13.6)     dispatch handle (+24) ->    +8, +16                         +24
//	              JSDispatchTable -> Code
//
// Node 24 (leaptiering): a JSFunction holds a 32-bit dispatch handle; the
// process's JSDispatchTable has 16-byte entries at (handle >> 8) * 16,
// the entrypoint then the Code's tagged pointer shifted left by 16 over
// the parameter count. The table's base is a field of the IsolateGroup
// that IsolateGroup::default_isolate_group_ (a .symtab symbol) points to:
// +0x960 in 13.6, else found by scanning the group for a page-aligned
// pointer whose entry for a known handle holds a Code whose instructions
// start at the entry's entrypoint.
//
// Node 18 is not run by the tests: Debian's libnode108 needs Debian's
// nodejs 18 packages for its externalized builtins, which cannot be
// installed beside nodejs 20. Its layout is built from its constants
// (testdata/node18.consts) and checked against V8 10.2's sources only.
//
// # Naming
//
// Process names what a frame holds: NameInterpreted takes the JSFunction
// from the frame's function slot and the bytecode offset; NameBaseline
// takes the JSFunction, the Sparkplug Code and the pc offset, mapped to
// the bytecode through the code's bytecode offset table and V8's
// bytecode size table (Bytecodes::kBytecodeSizes, read from the file);
// NameOptimized takes a Maglev or TurboFan Code and the pc offset and
// returns the inlined functions innermost first (deoptimization data:
// inlined SharedFunctionInfos in the literal array, inlining positions);
// FunctionCode gives the Code a JSFunction runs now. A name is the
// function's name (from its SharedFunctionInfo: a string, or the
// ScopeInfo's function or inferred name; Anonymous when empty), the
// script's name (a path, node:internal/...; empty for eval and new
// Function) and the 1-based line and column of the source position
// (VLQ-encoded tables), from the script's line ends; V8 computes them
// lazily, and when they are absent the source is scanned for V8's line
// terminators, at most 256 KiB of it, in 16 KiB reads. Strings are read
// as V8 lays them out: sequential one- and two-byte, cons, thin, sliced
// and (cached) external, at most 1 KiB of a name, 16 levels deep.
//
// What is read is cached per process in a least-recently-used cache
// bounded in bytes per process (DefaultProcessCacheBytes) and, through a
// shared Budget, for all processes (DefaultGlobalCacheBytes). Each entry
// has a check value, fields of the object read again on every use: a
// SharedFunctionInfo's name or scope info, function data, script and
// the script's id (ids are never reused: V8 allocates alike code alike,
// and a collected function's successor can sit at the same address with
// its name, bytecode and script at the same addresses too); a Script's
// source, name and id; optimized Code's tables, instruction start, flags
// and size and its compilation's optimization id. Sparkplug code has no
// such id and is not cached. So a moved or collected object is never
// named from a stale entry (TestLiveChurn).
//
// # What the frame walker needs
//
// From Layout.Frame, the same in node 18 to 24 on x86-64: a V8 frame
// keeps the caller's fp at fp+0 and the return address at fp+8. At fp-8
// (Frame.Context) a JavaScript frame has its context, a heap object
// pointer (low bits HeapObjectTag, 1); a typed frame (entry, exit, stub,
// internal, construct, builtin...) has its type marker there instead,
// V8's StackFrame::TypeToMarker(type) = type << 1 (low bit 0, not a
// heap object), with the type numbers in Frame.Types (they differ per
// version: InterpretedFrame is 12 in node 18, 13 in 20 and 22, 14 in 24).
// A JavaScript frame has its JSFunction at fp-16 (Frame.Function); an
// interpreted frame also its BytecodeArray at fp-32 (Frame.BytecodeArray)
// and the current bytecode offset at fp-40 (Frame.BytecodeOffset), a Smi
// (value = word >> SmiShift) counted from the BytecodeArray's tagged
// address: subtract BytecodeArrayData - HeapObjectTag for the offset
// NameInterpreted takes. Which kind of JavaScript frame it is follows
// from its pc: in the embedded builtins (Layout.Builtins, the Builtins_*
// symbols' range of the file, plus the load bias) at
// Builtins_InterpreterEntryTrampoline (or ...ForProfiling,
// InterpreterEnterAtBytecode, InterpreterEnterAtNextBytecode) it is
// interpreted; elsewhere in the builtins it is a builtin frame (named by
// the symbol); in V8's anonymous executable mappings (the code space) it
// is Sparkplug, Maglev or TurboFan code, told apart by the Code's kind
// (flags >> CodeKindShift & CodeKindMask: CodeKindBaseline is Sparkplug,
// above it Maglev then TurboFan). The walker records the JSFunction, the
// pc (and whether it is a return address) and, for interpreted frames,
// the bytecode array and offset; the host gets the Code with
// FunctionCode and checks the pc lies in [instruction start, + size)
// (code that was replaced since, by OSR or deoptimization, is then left
// unnamed and counted). A marker EntryFrame or ConstructEntryFrame ends
// the JavaScript frames of one entry from C++: native unwinding goes on
// from the entry frame's caller fp and return address. ExitFrame,
// BuiltinExitFrame and the Api*ExitFrame markers are where JavaScript
// called C++: the native frames above them came first in the walk. The
// embedded builtins and JIT code have frame pointers and no CFI: unwind
// them by frame pointer.
package v8
