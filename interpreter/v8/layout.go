package v8

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Supported V8 versions: node 18 (V8 10.2) to node 24 (V8 13.6).
var (
	minVersion = Version{Major: 10, Minor: 2}
	maxVersion = Version{Major: 13, Minor: 6}
)

// ErrUnsupportedVersion says the V8 is outside the versions whose
// layouts stackline knows.
var ErrUnsupportedVersion = errors.New("unsupported V8 version")

// ErrMissingConstants is wrapped by the error naming the constants a
// layout needs and the file lacks.
var ErrMissingConstants = errors.New("V8 constants missing")

// pointerSize is the size of a tagged value and of a pointer: these node
// builds do not compress pointers (v8dbg_TaggedSize is checked).
const pointerSize = 8

// Layout is what the host and the eBPF frame walker need to know about
// one V8 build: tagging, instance types, field offsets of the objects
// a frame leads to, and the frame layout. Offsets are from an object's
// untagged address (tagged pointer minus HeapObjectTag).
type Layout struct {
	Version Version

	// Tagging. A heap object pointer has (p & HeapObjectTagMask) ==
	// HeapObjectTag; a small integer (Smi) has (v & SmiTagMask) == 0 and
	// its value in the upper bits: int64(v) >> SmiShift.
	HeapObjectTag, HeapObjectTagMask uint64
	SmiTagMask                       uint64
	SmiShift                         uint

	Types   InstanceTypes
	Strings StringLayout

	// Offsets of fields.
	MapOffset          uint32 // HeapObject::map
	MapInstanceType    uint32 // Map::instance_type (uint16)
	FixedArrayLength   uint32 // FixedArrayBase::length (Smi)
	FixedArrayData     uint32 // FixedArray::data, first element
	JSFunctionShared   uint32 // JSFunction::shared
	JSFunctionCode     uint32 // JSFunction::code; 0 with leaptiering
	JSFunctionDispatch uint32 // JSFunction::dispatch_handle (uint32); 0 without leaptiering

	SFINameOrScopeInfo uint32 // SharedFunctionInfo::name_or_scope_info
	SFIFunctionData    uint32 // SharedFunctionInfo::function_data (trusted_function_data from V8 12)
	SFIScript          uint32 // SharedFunctionInfo::script_or_debug_info / script
	SFIWrapperShared   uint32 // SharedFunctionInfoWrapper::shared_info (V8 12.x+); 0 when absent

	ScriptSource   uint32 // Script::source
	ScriptName     uint32 // Script::name
	ScriptLineEnds uint32 // Script::line_ends
	// ScriptID is Script::id (Smi), unique among an isolate's scripts
	// and never reused: the part of check values that tells a new
	// script (and its functions) from a collected one whose memory it
	// reuses, down to the addresses of its objects.
	ScriptID uint32

	BytecodeArrayLength    uint32 // BytecodeArray::length (Smi)
	BytecodeArrayPositions uint32 // BytecodeArray::source_position_table
	BytecodeArrayData      uint32 // BytecodeArray::data, first bytecode

	CodeDeoptData         uint32 // Code::deoptimization_data (bytecode array of baseline code)
	CodePositions         uint32 // Code::source_position_table (bytecode offset table of baseline code)
	CodeInstructionStart  uint32 // Code::instruction_start (Address); 0 when the body is inline
	CodeInlineBody        uint32 // V8 10.2: offset of the instructions inside the Code object
	CodeInstructionSize   uint32 // Code::instruction_size (int)
	CodeFlags             uint32 // Code::flags (uint32); kind = flags>>CodeKindShift & CodeKindMask
	CodeKindMask          uint32
	CodeKindShift         uint32
	CodeKindBaseline      uint32
	CodeKindInterpreted   uint32
	InstructionStreamBody uint32 // InstructionStream::instruction_start, from the stream's address

	ScopeInfo ScopeInfoLayout
	Deopt     DeoptLayout
	Frame     FrameLayout

	// Leaptiering (V8 13, node 24): a JSFunction holds a handle into the
	// process's JSDispatchTable, whose entries hold the Code.
	Leaptiering bool
	// IsolateGroup is the file's address of
	// IsolateGroup::default_isolate_group_ (a pointer to the group).
	IsolateGroup uint64

	// BytecodeSizes is V8's bytecode size table (three rows: operand
	// scale 1, 2 and 4), which maps a Sparkplug pc to its bytecode;
	// nil when the file lacks it (Sparkplug frames then get no line).
	BytecodeSizes []byte
	// Builtins is the file's range of embedded builtins code
	// [start, end), which has frame pointers and no CFI; empty when the
	// file has no .symtab.
	Builtins [2]uint64
}

// InstanceTypes are the Map::instance_type values of the objects read.
type InstanceTypes struct {
	FirstNonstring                       uint16
	FirstJSFunction, LastJSFunction      uint16
	SharedFunctionInfo, Script           uint16
	ScopeInfo, BytecodeArray, Code       uint16
	SharedFunctionInfoWrapper            uint16 // 0 when the build has none
	FixedArrays                          []uint16
	ByteArrays                           []uint16
	UncachedExternalOne, UncachedExtTwo  uint16 // 0 when absent
	ExternalOneByte, ExternalTwoByteType uint16
}

// StringLayout is how V8 strings are told apart and read.
type StringLayout struct {
	// An instance type below Types.FirstNonstring is a string; its
	// representation is type & RepresentationMask, its encoding
	// type & EncodingMask.
	RepresentationMask, EncodingMask uint16
	SeqTag, ConsTag, ExternalTag     uint16
	SlicedTag, ThinTag               uint16
	OneByteTag                       uint16

	Length          uint32 // String::length (int32)
	SeqOneByteChars uint32
	SeqTwoByteChars uint32
	ConsFirst       uint32
	ConsSecond      uint32
	ThinActual      uint32
	SlicedParent    uint32
	SlicedOffset    uint32 // Smi
	// ExternalData is the cached pointer to an external string's
	// characters (ExternalString::resource + one pointer).
	ExternalData uint32
}

// ScopeInfoLayout locates the function name in a ScopeInfo: slots (of
// pointerSize, from Data) FirstVars + 2*context locals onwards hold it.
type ScopeInfoLayout struct {
	Data           uint32 // offset of slot 0
	FirstVars      uint32
	NContextLocals uint32
}

// DeoptLayout indexes DeoptimizationData, a fixed array.
type DeoptLayout struct {
	InlinedFunctionCount, LiteralArray, InliningPositions uint32
	// SharedFunctionInfo is the index of the optimized function's
	// SharedFunctionInfo; WrappedSFI says it holds a
	// SharedFunctionInfoWrapper (V8 12.x+).
	SharedFunctionInfo uint32
	WrappedSFI         bool
	// OptimizationID is the index of the compilation's id (a Smi,
	// unique in the isolate): part of optimized code's check value.
	OptimizationID uint32
}

// FrameLayout is a JavaScript frame as seen from its frame pointer (fp):
// the caller's fp at fp+0, the return address at fp+8, and below fp the
// context (or, in a typed frame, a Smi frame type marker), the
// JSFunction, and in interpreted frames the BytecodeArray and the
// bytecode offset (a Smi, counted from the BytecodeArray's tagged
// address: subtract BytecodeArrayData-HeapObjectTag for the offset into
// the bytecodes).
type FrameLayout struct {
	Context, Function, BytecodeArray, BytecodeOffset int32
	Args                                             int32
	// Types are the frame type markers by name (EntryFrame, ExitFrame,
	// InterpretedFrame, BaselineFrame, MaglevFrame, TurbofanJSFrame, ...).
	Types map[string]int64
}

// lookup reads constants by name, remembering the ones missing.
type lookup struct {
	c       *Constants
	missing []string
}

// get returns the first of names present. A missing one is recorded
// (all the alternatives, joined by "|").
func (l *lookup) get(names ...string) int64 {
	for _, n := range names {
		if v, ok := l.c.Values[n]; ok {
			return v
		}
	}
	l.missing = append(l.missing, strings.Join(names, "|"))
	return 0
}

// opt returns the first of names present, or def.
func (l *lookup) opt(def int64, names ...string) int64 {
	for _, n := range names {
		if v, ok := l.c.Values[n]; ok {
			return v
		}
	}
	return def
}

func (l *lookup) has(name string) bool {
	_, ok := l.c.Values[name]
	return ok
}

// NewLayout builds the layout of the V8 whose constants are c. Where a
// build lacks a constant for a field (gen-postmortem-metadata.py lost
// several as V8's classes moved to Torque and trusted space), the offset
// is derived from a neighbouring constant by the rule of that V8
// version, each rule checked against live objects of node 20, 22 and 24
// (see layout_test.go and live_test.go). Constants missing with no rule
// give an error naming them all.
func NewLayout(c *Constants) (*Layout, error) {
	v := c.Version
	if !v.AtLeast(minVersion.Major, minVersion.Minor) || v.AtLeast(maxVersion.Major, maxVersion.Minor+1) {
		return nil, fmt.Errorf("%w: V8 %s (supported: %d.%d to %d.%d)", ErrUnsupportedVersion, v,
			minVersion.Major, minVersion.Minor, maxVersion.Major, maxVersion.Minor)
	}
	l := &lookup{c: c}
	lay := &Layout{Version: v, IsolateGroup: c.IsolateGroup, BytecodeSizes: c.BytecodeSizes, Builtins: c.Builtins}

	if ts := l.opt(pointerSize, "TaggedSize"); ts != pointerSize {
		return nil, fmt.Errorf("%w: V8 %s with pointer compression (tagged size %d)", ErrUnsupportedVersion, v, ts)
	}
	lay.HeapObjectTag = uint64(l.get("HeapObjectTag"))
	lay.HeapObjectTagMask = uint64(l.get("HeapObjectTagMask"))
	lay.SmiTagMask = uint64(l.get("SmiTagMask"))
	// A Smi's value sits above its tag (SmiValueShift, the tag's size)
	// and the shift (SmiShiftSize): 32 bits up without pointer
	// compression.
	lay.SmiShift = uint(l.get("SmiShiftSize") + l.get("SmiValueShift"))
	if lay.SmiShift == 0 || lay.SmiShift > 32 {
		return nil, fmt.Errorf("%w: V8 %s with Smis shifted by %d", ErrUnsupportedVersion, v, lay.SmiShift)
	}

	t := &lay.Types
	t.FirstNonstring = uint16(l.get("FirstNonstringType"))
	t.SharedFunctionInfo = uint16(l.get("type_SharedFunctionInfo__SHARED_FUNCTION_INFO_TYPE"))
	t.Script = uint16(l.get("type_Script__SCRIPT_TYPE"))
	t.ScopeInfo = uint16(l.get("type_ScopeInfo__SCOPE_INFO_TYPE"))
	t.BytecodeArray = uint16(l.get("type_BytecodeArray__BYTECODE_ARRAY_TYPE"))
	t.Code = uint16(l.get("type_Code__CODE_TYPE"))
	t.SharedFunctionInfoWrapper = uint16(l.opt(0, "type_SharedFunctionInfoWrapper__SHARED_FUNCTION_INFO_WRAPPER_TYPE"))
	jsFunction := l.get("type_JSFunction__JS_FUNCTION_TYPE")
	t.FirstJSFunction = uint16(l.opt(jsFunction, "FirstJSFunctionType"))
	// Before V8 11 the range of JSFunction's subclasses is not exported;
	// V8 10.2's is JS_FUNCTION_TYPE and the 14 class constructor types
	// after it.
	t.LastJSFunction = uint16(l.opt(jsFunction+14, "LastJSFunctionType"))
	for _, n := range []string{
		"type_FixedArray__FIXED_ARRAY_TYPE", "type_TrustedFixedArray__TRUSTED_FIXED_ARRAY_TYPE",
		"type_ProtectedFixedArray__PROTECTED_FIXED_ARRAY_TYPE", "type_WeakFixedArray__WEAK_FIXED_ARRAY_TYPE",
		"type_TrustedWeakFixedArray__TRUSTED_WEAK_FIXED_ARRAY_TYPE",
	} {
		if x, ok := c.Values[n]; ok {
			t.FixedArrays = append(t.FixedArrays, uint16(x))
		}
	}
	for _, n := range []string{"type_ByteArray__BYTE_ARRAY_TYPE", "type_TrustedByteArray__TRUSTED_BYTE_ARRAY_TYPE"} {
		if x, ok := c.Values[n]; ok {
			t.ByteArrays = append(t.ByteArrays, uint16(x))
		}
	}
	if len(t.FixedArrays) == 0 {
		l.missing = append(l.missing, "type_FixedArray__FIXED_ARRAY_TYPE")
	}
	if len(t.ByteArrays) == 0 {
		l.missing = append(l.missing, "type_ByteArray__BYTE_ARRAY_TYPE")
	}

	s := &lay.Strings
	s.RepresentationMask = uint16(l.get("StringRepresentationMask"))
	s.EncodingMask = uint16(l.get("StringEncodingMask"))
	s.SeqTag = uint16(l.opt(0, "SeqStringTag"))
	s.ConsTag = uint16(l.get("ConsStringTag"))
	s.ExternalTag = uint16(l.get("ExternalStringTag"))
	s.SlicedTag = uint16(l.get("SlicedStringTag"))
	s.ThinTag = uint16(l.get("ThinStringTag"))
	s.OneByteTag = uint16(l.get("OneByteStringTag"))
	s.Length = uint32(l.get("class_String__length__int32_t"))
	s.SeqOneByteChars = uint32(l.get("class_SeqOneByteString__chars__char"))
	s.SeqTwoByteChars = uint32(l.get("class_SeqTwoByteString__chars__char"))
	s.ConsFirst = uint32(l.get("class_ConsString__first__String"))
	s.ConsSecond = uint32(l.get("class_ConsString__second__String"))
	s.ThinActual = uint32(l.get("class_ThinString__actual__String"))
	s.SlicedParent = uint32(l.get("class_SlicedString__parent__String"))
	s.SlicedOffset = uint32(l.get("class_SlicedString__offset__SMI"))
	s.ExternalData = uint32(l.get("class_ExternalString__resource__Object")) + pointerSize
	t.UncachedExternalOne = uint16(l.opt(0, "type_UncachedExternalString__UNCACHED_EXTERNAL_ONE_BYTE_STRING_TYPE"))
	t.UncachedExtTwo = uint16(l.opt(0, "type_UncachedExternalString__UNCACHED_EXTERNAL_TWO_BYTE_STRING_TYPE"))

	lay.MapOffset = uint32(l.opt(0, "class_HeapObject__map__Map"))
	lay.MapInstanceType = uint32(l.get("class_Map__instance_type__uint16_t"))
	lay.FixedArrayLength = uint32(l.get("class_FixedArrayBase__length__SMI"))
	lay.FixedArrayData = uint32(l.get("class_FixedArray__data__uintptr_t"))

	lay.JSFunctionShared = uint32(l.get("class_JSFunction__shared__SharedFunctionInfo"))
	switch {
	case l.has("class_JSFunction__code__Tagged_Code_") || l.has("class_JSFunction__code__CodeT"):
		lay.JSFunctionCode = uint32(l.get("class_JSFunction__code__Tagged_Code_", "class_JSFunction__code__CodeT"))
	case c.IsolateGroup != 0 && v.AtLeast(13, 0):
		// Leaptiering: the dispatch handle (a uint32) sits where the
		// code pointer was, just before shared.
		lay.Leaptiering = true
		lay.JSFunctionDispatch = lay.JSFunctionShared - pointerSize
	case !v.AtLeast(11, 7):
		// V8 11.3: shared, context, feedback cell, code.
		lay.JSFunctionCode = lay.JSFunctionShared + 3*pointerSize
	default:
		l.missing = append(l.missing, "class_JSFunction__code__Tagged_Code_")
	}

	lay.SFINameOrScopeInfo = uint32(l.get("class_SharedFunctionInfo__name_or_scope_info__Tagged_NameOrScopeInfoT_",
		"class_SharedFunctionInfo__name_or_scope_info__Tagged_Object_", "class_SharedFunctionInfo__name_or_scope_info__Object"))
	// function_data lost its constant in V8 12 (it became
	// trusted_function_data); it stayed the first field after the map.
	lay.SFIFunctionData = uint32(l.opt(int64(lay.MapOffset)+pointerSize, "class_SharedFunctionInfo__function_data__Object"))
	lay.SFIScript = uint32(l.get("class_SharedFunctionInfo__script__Tagged_HeapObject_",
		"class_SharedFunctionInfo__script_or_debug_info__HeapObject", "class_SharedFunctionInfo__script_or_debug_info__Object"))
	lay.SFIWrapperShared = uint32(l.opt(0, "class_SharedFunctionInfoWrapper__shared_info__Tagged_SharedFunctionInfo_"))

	lay.ScriptSource = uint32(l.get("class_Script__source__Object"))
	lay.ScriptName = uint32(l.get("class_Script__name__Object"))
	lay.ScriptLineEnds = uint32(l.get("class_Script__line_ends__Object"))
	// Script::id has no constant; it is the field before
	// eval_from_shared_or_wrapped_arguments (after line_ends) in V8 10.2
	// to 13.6.
	lay.ScriptID = uint32(l.get("class_Script__eval_from_shared_or_wrapped_arguments__Tagged_Object_",
		"class_Script__eval_from_shared_or_wrapped_arguments__Object",
		"class_Script__eval_from_shared_or_wrapped_arguments_or_sfi_table__Object")) - pointerSize

	lay.BytecodeArrayLength = uint32(l.opt(int64(lay.FixedArrayLength), "class_BytecodeArray__length__SMI"))
	lay.BytecodeArrayData = uint32(l.get("class_BytecodeArray__data__uintptr_t"))
	if w, ok := c.Values["class_BytecodeArray__wrapper__Tagged_BytecodeWrapper_"]; ok {
		// V8 12+: length, wrapper, source_position_table, handler
		// table, constant pool.
		lay.BytecodeArrayPositions = uint32(w) + pointerSize
	} else {
		// V8 10.2 and 11.3: length, constant pool, handler table,
		// source_position_table.
		lay.BytecodeArrayPositions = lay.BytecodeArrayLength + 3*pointerSize
	}

	lay.CodeKindMask = uint32(l.get("CodeKindFieldMask"))
	lay.CodeKindShift = uint32(l.opt(0, "CodeKindFieldShift"))
	lay.CodeKindBaseline = uint32(l.get("CodeKindBaseline"))
	lay.CodeKindInterpreted = uint32(l.opt(int64(lay.CodeKindBaseline)-1, "CodeKindInterpretedFunction"))
	lay.InstructionStreamBody = uint32(l.opt(0, "class_InstructionStream__instruction_start__uintptr_t"))
	switch {
	case l.has("class_Code__wrapper__Tagged_CodeWrapper_"):
		// V8 12 and 13: deoptimization data (or the bytecode array)
		// and the source position table (or the bytecode offset
		// table) are the two fields before the wrapper.
		w := uint32(l.get("class_Code__wrapper__Tagged_CodeWrapper_"))
		lay.CodeDeoptData = w - 2*pointerSize
		lay.CodePositions = w - pointerSize
		lay.CodeInstructionStart = uint32(l.get("class_Code__instruction_start__Address"))
		lay.CodeInstructionSize = uint32(l.get("class_Code__instruction_size__int"))
		lay.CodeFlags = uint32(l.get("class_Code__flags__uint32_t"))
	case v.AtLeast(11, 0):
		// V8 11.3 (node 20): Code is the former CodeDataContainer,
		// its instructions in a separate InstructionStream. After
		// the stream pointer: instruction_start, flags (uint32),
		// builtin id and kind-specific flags (2 x uint16),
		// instruction_size.
		lay.CodeDeoptData = uint32(l.get("class_Code__deoptimization_data__FixedArray"))
		lay.CodePositions = uint32(l.get("class_Code__source_position_table__ByteArray"))
		stream := uint32(l.get("class_Code__instruction_stream__Tagged_InstructionStream_", "class_Code__source_position_table__ByteArray"))
		if !l.has("class_Code__instruction_stream__Tagged_InstructionStream_") {
			stream += pointerSize
		}
		lay.CodeInstructionStart = uint32(l.opt(int64(stream)+pointerSize, "class_Code__instruction_start__Address"))
		lay.CodeFlags = uint32(l.opt(int64(lay.CodeInstructionStart)+pointerSize, "class_Code__flags__uint32_t"))
		lay.CodeInstructionSize = uint32(l.opt(int64(lay.CodeFlags)+8, "class_Code__instruction_size__int"))
	default:
		// V8 10.2 (node 18): the instructions are inside the Code
		// object, after its header; the two tables are the fields
		// before the code data container, which precedes
		// instruction_size.
		lay.CodeInstructionSize = uint32(l.get("class_Code__instruction_size__int"))
		lay.CodeFlags = uint32(l.get("class_Code__flags__uint32_t"))
		lay.CodeInlineBody = uint32(l.get("class_Code__instruction_start__uintptr_t"))
		lay.CodePositions = lay.CodeInstructionSize - 2*pointerSize
		lay.CodeDeoptData = lay.CodePositions - pointerSize
	}

	lay.ScopeInfo.FirstVars = uint32(l.get("scopeinfo_idx_first_vars"))
	lay.ScopeInfo.NContextLocals = uint32(l.get("scopeinfo_idx_ncontextlocals"))
	// ScopeInfo's slots follow the map (a HeapObject since V8 9.1).
	lay.ScopeInfo.Data = lay.MapOffset + pointerSize

	d := &lay.Deopt
	if !v.AtLeast(11, 0) && !l.has("DeoptimizationDataLiteralArrayIndex") {
		// V8 10.2 exports no indices; its DeoptimizationData is
		// translations, inlined function count, literals, OSR
		// bytecode offset, OSR pc offset, optimization id,
		// SharedFunctionInfo, inlining positions (the indices node 20
		// exports).
		d.InlinedFunctionCount, d.LiteralArray, d.SharedFunctionInfo, d.InliningPositions = 1, 2, 6, 7
		d.OptimizationID = 5
	} else {
		d.OptimizationID = uint32(l.get("DeoptimizationDataOptimizationIdIndex"))
		d.InlinedFunctionCount = uint32(l.get("DeoptimizationDataInlinedFunctionCountIndex"))
		d.LiteralArray = uint32(l.get("DeoptimizationDataLiteralArrayIndex"))
		d.InliningPositions = uint32(l.get("DeoptimizationDataInliningPositionsIndex"))
		if x, ok := c.Values["DeoptimizationDataWrappedSharedFunctionInfoIndex"]; ok {
			d.SharedFunctionInfo, d.WrappedSFI = uint32(x), true
		} else {
			d.SharedFunctionInfo = uint32(l.get("DeoptimizationDataSharedFunctionInfoIndex"))
		}
	}

	f := &lay.Frame
	f.Context = int32(l.get("off_fp_context"))
	f.Function = int32(l.get("off_fp_function"))
	f.BytecodeArray = int32(l.get("off_fp_bytecode_array"))
	f.BytecodeOffset = int32(l.get("off_fp_bytecode_offset"))
	f.Args = int32(l.opt(2*pointerSize, "off_fp_args"))
	f.Types = map[string]int64{}
	for n, x := range c.Values {
		if name, ok := strings.CutPrefix(n, "frametype_"); ok {
			f.Types[name] = x
		}
	}
	for _, n := range []string{"EntryFrame", "ExitFrame", "InterpretedFrame"} {
		if _, ok := f.Types[n]; !ok {
			l.missing = append(l.missing, "frametype_"+n)
		}
	}

	if len(l.missing) > 0 {
		slices.Sort(l.missing)
		return nil, fmt.Errorf("V8 %s: %w: %s", v, ErrMissingConstants, strings.Join(l.missing, ", "))
	}
	return lay, nil
}

// isFixedArray reports whether t is one of the fixed array types.
func (lay *Layout) isFixedArray(t uint16) bool { return slices.Contains(lay.Types.FixedArrays, t) }

// isByteArray reports whether t is one of the byte array types.
func (lay *Layout) isByteArray(t uint16) bool { return slices.Contains(lay.Types.ByteArrays, t) }

// isJSFunction reports whether t is JSFunction or one of its subclasses.
func (lay *Layout) isJSFunction(t uint16) bool {
	return t >= lay.Types.FirstJSFunction && t <= lay.Types.LastJSFunction
}

// CodeKindOf returns the kind in a Code object's flags.
func (lay *Layout) CodeKindOf(flags uint32) uint32 {
	return flags >> lay.CodeKindShift & lay.CodeKindMask
}
