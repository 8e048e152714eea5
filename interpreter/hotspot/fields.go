package hotspot

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/stackline-dev/stackline/interpreter"
	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// fields are the offsets and sizes, from a VM's Layout, that the eBPF
// unwinder and the naming of frames read. Names say the class and field
// (blobName is CodeBlob::_name).
type fields struct {
	blobName, blobSize, blobFrameSize, blobFrameComplete, blobCodeBegin uint64
	codeBeginIsOffset                                                   bool
	// frameComplete16: CodeBlob::_frame_complete_offset is an int16_t.
	frameComplete16 bool

	nmethodMethod, nmethodCompileID uint64
	// JDK 17 and 21: offsets from the nmethod of its PcDesc table and of
	// what follows it, the scope data's address, the metadata's offset.
	nmethodScopesPcsOffset, nmethodDependenciesOffset, nmethodScopesDataBegin, nmethodMetadataOffset uint64
	// JDK 23 and later: the immutable data (PcDescs, scopes) and the
	// mutable data (metadata), with offsets into them.
	nmethodImmutableData, nmethodMutableData                           uint64
	nmethodScopesDataOffset, nmethodMetadataOffsetMutable              uint64
	nmethodImmutableDataSize, nmethodMutableDataSize, nmethodRelocSize uint64
	hasImmutable                                                       bool

	methodConstMethod uint64

	constMethodSize, constMethodConstants, constMethodCodeSize, constMethodNameIndex,
	constMethodSignatureIndex, constMethodFlags, constMethodTotalSize uint64
	hasLineTableFlag uint32

	cpoolSize, cpoolHolder, cpoolSourceFile uint64
	klassName                               uint64
	symbolLength, symbolBody                uint64
	pcDesc                                  PcDescLayout
	heapBlockSize                           uint64
	// heapBlockUsed is HeapBlock::_header._used (bool); nmethodState
	// nmethod::_state (a signed byte: 3 and up are JDK 17's zombie and
	// unloaded code).
	heapBlockUsed, nmethodState uint64
	// nmethodStubOffset is nmethod::_stub_offset, the stub section's
	// offset from the nmethod (its deoptimization handlers).
	nmethodStubOffset uint64

	// Code heaps and the interpreter: codeHeaps and interpreterCode are
	// static fields, given as the file's virtual addresses.
	heapMemory, heapSegmap, heapLog2Segment uint64
	vsLowBoundary, vsHighBoundary, vsLow    uint64
	arrayLen, arrayData                     uint64
	codeHeaps, interpreterCode              uint64
	stubQueueBuffer, stubQueueLimit         uint64
}

// fieldsOf collects the fields from l, or says which one is missing.
func fieldsOf(l *Layout) (*fields, error) {
	f := &fields{}
	var missing []string
	field := func(dst *uint64, typ string, names ...string) bool {
		for _, n := range names {
			if off, ok := l.FieldOrSuper(typ, n); ok {
				*dst = off
				return true
			}
		}
		return false
	}
	need := func(dst *uint64, typ string, names ...string) {
		if !field(dst, typ, names...) {
			missing = append(missing, typ+"::"+names[0])
		}
	}
	size := func(dst *uint64, typ string) {
		v, ok := l.Size(typ)
		if !ok || v == 0 {
			missing = append(missing, "sizeof("+typ+")")
		}
		*dst = v
	}
	static := func(dst *uint64, typ, name string) {
		v, ok := l.Static(typ, name)
		if !ok {
			missing = append(missing, typ+"::"+name)
		}
		*dst = v
	}

	need(&f.blobName, "CodeBlob", "_name")
	need(&f.blobSize, "CodeBlob", "_size")
	need(&f.blobFrameSize, "CodeBlob", "_frame_size")
	need(&f.blobFrameComplete, "CodeBlob", "_frame_complete_offset")
	f.frameComplete16 = fieldWidth(l, "CodeBlob", f.blobFrameComplete, codeBlobFields) < 4
	if !field(&f.blobCodeBegin, "CodeBlob", "_code_begin") {
		need(&f.blobCodeBegin, "CodeBlob", "_code_offset")
		f.codeBeginIsOffset = true
	}
	need(&f.nmethodMethod, "nmethod", "_method")
	need(&f.nmethodCompileID, "nmethod", "_compile_id")
	if field(&f.nmethodImmutableData, "nmethod", "_immutable_data") {
		f.hasImmutable = true
		need(&f.nmethodScopesPcsOffset, "nmethod", "_scopes_pcs_offset")
		need(&f.nmethodScopesDataOffset, "nmethod", "_scopes_data_offset")
		need(&f.nmethodImmutableDataSize, "nmethod", "_immutable_data_size")
		field(&f.nmethodMutableData, "nmethod", "_mutable_data")
		field(&f.nmethodMutableDataSize, "nmethod", "_mutable_data_size")
		field(&f.nmethodRelocSize, "nmethod", "_relocation_size")
		field(&f.nmethodMetadataOffsetMutable, "nmethod", "_metadata_offset")
	} else {
		need(&f.nmethodScopesPcsOffset, "nmethod", "_scopes_pcs_offset")
		need(&f.nmethodDependenciesOffset, "nmethod", "_dependencies_offset")
		need(&f.nmethodScopesDataBegin, "nmethod", "_scopes_data_begin")
		need(&f.nmethodMetadataOffset, "nmethod", "_metadata_offset")
	}
	need(&f.methodConstMethod, "Method", "_constMethod")
	size(&f.constMethodSize, "ConstMethod")
	need(&f.constMethodConstants, "ConstMethod", "_constants")
	need(&f.constMethodCodeSize, "ConstMethod", "_code_size")
	need(&f.constMethodNameIndex, "ConstMethod", "_name_index")
	need(&f.constMethodSignatureIndex, "ConstMethod", "_signature_index")
	need(&f.constMethodFlags, "ConstMethod", "_flags", "_flags._flags")
	need(&f.constMethodTotalSize, "ConstMethod", "_constMethod_size")
	f.hasLineTableFlag = 1
	for _, n := range []string{"ConstMethod::_has_linenumber_table", "ConstMethodFlags::_misc_has_linenumber_table"} {
		if v, ok := l.Int(n); ok && v > 0 {
			f.hasLineTableFlag = uint32(v)
			break
		}
	}
	size(&f.cpoolSize, "ConstantPool")
	need(&f.cpoolHolder, "ConstantPool", "_pool_holder")
	if !field(&f.cpoolSourceFile, "ConstantPool", "_source_file_name_index") {
		f.cpoolSourceFile = noField
	}
	need(&f.klassName, "Klass", "_name")
	need(&f.symbolLength, "Symbol", "_length")
	need(&f.symbolBody, "Symbol", "_body")
	if d, err := PcDescLayoutOf(l); err != nil {
		missing = append(missing, "PcDesc")
	} else {
		f.pcDesc = d
	}
	size(&f.heapBlockSize, "HeapBlock")
	var header, used uint64
	need(&header, "HeapBlock", "_header")
	need(&used, "HeapBlock::Header", "_used")
	f.heapBlockUsed = header + used
	need(&f.nmethodState, "nmethod", "_state")
	need(&f.nmethodStubOffset, "nmethod", "_stub_offset")

	need(&f.heapMemory, "CodeHeap", "_memory")
	need(&f.heapSegmap, "CodeHeap", "_segmap")
	need(&f.heapLog2Segment, "CodeHeap", "_log2_segment_size")
	need(&f.vsLowBoundary, "VirtualSpace", "_low_boundary")
	need(&f.vsHighBoundary, "VirtualSpace", "_high_boundary")
	need(&f.vsLow, "VirtualSpace", "_low")
	if !field(&f.arrayLen, "GrowableArrayBase", "_len") && !field(&f.arrayLen, "GenericGrowableArray", "_len") {
		missing = append(missing, "GrowableArrayBase::_len")
	}
	need(&f.arrayData, "GrowableArray<int>", "_data")
	static(&f.codeHeaps, "CodeCache", "_heaps")
	static(&f.interpreterCode, "AbstractInterpreter", "_code")
	need(&f.stubQueueBuffer, "StubQueue", "_stub_buffer")
	need(&f.stubQueueLimit, "StubQueue", "_buffer_limit")
	if len(missing) > 0 {
		return nil, fmt.Errorf("VM layout lacks %s", strings.Join(missing, ", "))
	}
	return f, nil
}

// codeBlobFields are the fields of CodeBlob in JDK 17 to 25 (the VM states
// each field's offset, not its width: a field is as wide as the gap to the
// next one at most).
var codeBlobFields = []string{
	"_name", "_size", "_header_size", "_relocation_size", "_content_offset", "_code_offset",
	"_frame_complete_offset", "_data_offset", "_frame_size", "_kind", "_code_begin", "_code_end",
	"_content_begin", "_data_end", "_relocation_begin", "_relocation_end", "_oop_maps",
	"_caller_must_gc_arguments", "_mutable_data", "_mutable_data_size",
}

// fieldWidth returns the bytes from off to the next of typ's fields (of
// names), at most 8.
func fieldWidth(l *Layout, typ string, off uint64, names []string) uint64 {
	w := uint64(8)
	for _, n := range names {
		if o, ok := l.Field(typ, n); ok && o > off {
			w = min(w, o-off)
		}
	}
	return w
}

// noField marks an optional field the VM lacks.
const noField = ^uint64(0)

// maxHeaps is how many code heaps the eBPF unwinder searches.
const maxHeaps = int(progs.StacklineHotspotBoundsHOTSPOT_HEAPS)

// config reads the code heaps and interpreter of the process that maps
// libjvm with bias and returns the
// eBPF unwinder's configuration with the code cache's address range. It
// returns an error wrapping interpreter.ErrNotReady while the VM has not
// set them up.
func (f *fields) config(mem interpreter.Memory, bias uint64) (progs.StacklineHotspotConfig, interpreter.Range, error) {
	var c progs.StacklineHotspotConfig
	var owned interpreter.Range
	r := reader{mem: mem}
	heaps := r.ptr(f.codeHeaps + bias)
	interp := r.ptr(f.interpreterCode + bias)
	if r.err != nil {
		return c, owned, r.err
	}
	if heaps == 0 || interp == 0 {
		return c, owned, fmt.Errorf("%w: code cache not set up", interpreter.ErrNotReady)
	}
	n := int(int32(r.u32(heaps + f.arrayLen)))
	data := r.ptr(heaps + f.arrayData)
	if r.err != nil {
		return c, owned, r.err
	}
	if n <= 0 || n > maxHeaps || data == 0 {
		return c, owned, fmt.Errorf("%w: %d code heaps", interpreter.ErrNotReady, n)
	}
	for i := range n {
		h := r.ptr(data + 8*uint64(i))
		if r.err != nil {
			return c, owned, r.err
		}
		hp := &c.Heaps[i]
		hp.Low = r.ptr(h + f.heapMemory + f.vsLowBoundary)
		hp.High = r.ptr(h + f.heapMemory + f.vsHighBoundary)
		hp.Segmap = r.ptr(h + f.heapSegmap + f.vsLow)
		hp.Log2SegmentSize = r.u32(h + f.heapLog2Segment)
		if r.err != nil {
			return c, owned, r.err
		}
		if hp.Low == 0 || hp.High <= hp.Low || hp.Segmap == 0 {
			return c, owned, fmt.Errorf("%w: code heap %d not set up", interpreter.ErrNotReady, i)
		}
		if hp.Log2SegmentSize < 4 || hp.Log2SegmentSize > 16 {
			return c, owned, fmt.Errorf("code heap %d: segment size 2^%d", i, hp.Log2SegmentSize)
		}
		if owned.End == 0 {
			owned = interpreter.Range{Start: hp.Low, End: hp.High}
		} else {
			owned.Start, owned.End = min(owned.Start, hp.Low), max(owned.End, hp.High)
		}
	}
	c.InterpStart = r.ptr(interp + f.stubQueueBuffer)
	c.InterpEnd = c.InterpStart + uint64(r.u32(interp+f.stubQueueLimit))
	if r.err != nil {
		return c, owned, r.err
	}
	if c.InterpStart == 0 || c.InterpEnd <= c.InterpStart {
		return c, owned, fmt.Errorf("%w: interpreter not generated", interpreter.ErrNotReady)
	}
	u32 := func(v uint64) uint32 { return uint32(v) }
	c.HeapBlockSize = u32(f.heapBlockSize)
	c.BlobName = u32(f.blobName)
	c.BlobSize = u32(f.blobSize)
	c.BlobFrameSize = u32(f.blobFrameSize)
	c.BlobFrameComplete = u32(f.blobFrameComplete)
	c.BlobCodeBegin = u32(f.blobCodeBegin)
	if f.codeBeginIsOffset {
		c.CodeBeginIsOffset = 1
	}
	if f.frameComplete16 {
		c.FrameCompleteIs16 = 1
	}
	c.NmethodCompileId = u32(f.nmethodCompileID)
	c.NmethodMethod = u32(f.nmethodMethod)
	c.MethodConstMethod = u32(f.methodConstMethod)
	c.ConstMethodSize = u32(f.constMethodSize)
	c.ConstMethodConstants = u32(f.constMethodConstants)
	c.ConstMethodCodeSize = u32(f.constMethodCodeSize)
	c.CpoolHolder = u32(f.cpoolHolder)
	c.KlassName = u32(f.klassName)
	c.SymbolLength = u32(f.symbolLength)
	c.SymbolBody = u32(f.symbolBody)
	return c, owned, nil
}

// reader reads little-endian values from process memory, keeping the
// first error.
type reader struct {
	mem interpreter.Memory
	err error
	buf [8]byte
}

func (r *reader) read(n int, addr uint64) []byte {
	if r.err != nil {
		return r.buf[:n]
	}
	if err := r.mem.ReadAt(r.buf[:n], addr); err != nil {
		r.err = err
		clear(r.buf[:])
	}
	return r.buf[:n]
}

func (r *reader) ptr(addr uint64) uint64 { return binary.LittleEndian.Uint64(r.read(8, addr)) }
func (r *reader) u32(addr uint64) uint32 { return binary.LittleEndian.Uint32(r.read(4, addr)) }
func (r *reader) u16(addr uint64) uint16 { return binary.LittleEndian.Uint16(r.read(2, addr)) }
