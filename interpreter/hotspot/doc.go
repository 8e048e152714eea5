// Package hotspot reads and decodes the data of HotSpot, the OpenJDK Java
// virtual machine (JDK 17, 21 and 25), from a Java process's memory, for
// the eBPF unwinder of Java frames and for naming them.
//
// The VM describes its own layout for the serviceability agent: libjvm.so
// exports tables of the fields of its C++ classes (offset, or address for
// statics), the sizes of its types and its constants. ReadLayout reads them
// into a Layout, so nothing here hard-codes an offset that the VM states.
//
// What the VM does not state is the format of its compressed data, decoded
// here from byte slices the caller reads from the process:
//
//   - the UNSIGNED5 variable-length integers of its compressed streams
//     (Encoding: JDK 17's, and JDK 21's and later, which never use the zero
//     byte);
//   - a method's line number table, after its bytecodes in ConstMethod
//     (DecodeLineTable);
//   - a compiled method's PcDesc table and scope data, which give the
//     methods inlined at a code address, innermost first (FindPcDesc,
//     DecodeScopes);
//   - method descriptors, turned into readable Java names (JavaName).
//
// Every decoder works on untrusted bytes: it is bounded, returns an error
// for data that is cut short or malformed, and never panics.
package hotspot
