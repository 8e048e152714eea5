package v8

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/namecache"
	"github.com/stackline-dev/stackline/reporter/semconv"
	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// Runtime finds V8 (node, libnode.so.N, other embedders) among the files
// a process maps, for the tracer: its eBPF frame walker (support/ebpf/v8.h)
// and the naming of the frames it emits.
type Runtime struct {
	// Budget bounds the bytes all processes' caches hold together; nil:
	// DefaultGlobalCacheBytes for each file found.
	Budget *namecache.Budget
	// ProcessCacheBytes bounds one process's cache
	// (DefaultProcessCacheBytes when 0).
	ProcessCacheBytes int64
	// Stats counts what naming did; nil: not counted.
	Stats *RuntimeStats
}

// RuntimeStats counts the V8 frames named, and those that could not be.
// It is safe for concurrent use.
type RuntimeStats struct {
	// Named frames got a function name; Unnamed could not be named (the
	// function moved, died or changed since the sample, or its objects
	// did not read as expected); Stale are the Unnamed whose check value
	// no longer matched. NoLine were named without a line.
	Named, Unnamed, Stale, NoLine atomic.Uint64
}

// Name implements interpreter.Runtime. It is the process.runtime.name of
// a V8 process's samples.
func (Runtime) Name() string { return semconv.RuntimeNode }

// Detect implements interpreter.Runtime: V8 is recognised by its v8dbg_*
// symbols, whatever the file's name.
func (rt Runtime) Detect(f interpreter.File) (interpreter.Loader, error) {
	l, err := Detect(f)
	if err != nil || l == nil {
		return nil, err
	}
	if err := checkFrameLayout(l.layout); err != nil {
		return nil, fmt.Errorf("v8: %s: %w", f.Path, err)
	}
	budget := rt.Budget
	if budget == nil {
		budget = namecache.NewBudget(DefaultGlobalCacheBytes)
	}
	stats := rt.Stats
	if stats == nil {
		stats = new(RuntimeStats)
	}
	return &runtimeLoader{l: l, cfg: Config{CacheBytes: rt.ProcessCacheBytes, Budget: budget}, stats: stats}, nil
}

// ErrFrameLayout says a V8's frames are not laid out as the eBPF frame
// walker reads them.
var ErrFrameLayout = errors.New("unexpected V8 frame layout")

// checkFrameLayout checks the frame slots and tagging the eBPF frame
// walker assumes (support/ebpf/v8.h).
func checkFrameLayout(lay *Layout) error {
	f := lay.Frame
	if f.Context != -8 || f.Function != -16 || f.BytecodeArray != -32 || f.BytecodeOffset != -40 {
		return fmt.Errorf("%w: context %d, function %d, bytecode array %d, offset %d", ErrFrameLayout,
			f.Context, f.Function, f.BytecodeArray, f.BytecodeOffset)
	}
	if lay.HeapObjectTag != 1 || lay.HeapObjectTagMask != 3 || lay.SmiTagMask != 1 || lay.SmiShift != 32 {
		return fmt.Errorf("%w: tagging %d/%d, Smi mask %d shift %d", ErrFrameLayout,
			lay.HeapObjectTag, lay.HeapObjectTagMask, lay.SmiTagMask, lay.SmiShift)
	}
	return nil
}

// runtimeLoader is a V8 file as the tracer attaches it to processes.
type runtimeLoader struct {
	l     *Loader
	cfg   Config
	stats *RuntimeStats
}

// Attach implements interpreter.Loader.
func (rl *runtimeLoader) Attach(pid uint32, m interpreter.Mapping, mem interpreter.Memory) (interpreter.Instance, error) {
	p, err := rl.l.Attach(pid, m, mem, rl.cfg)
	if err != nil {
		return nil, err
	}
	return newInstance(p, rl.stats)
}

// config returns the eBPF frame walker's struct v8_config for a process
// whose V8 file is loaded with bias.
func config(lay *Layout, bias uint64) progs.StacklineV8Config {
	c := progs.StacklineV8Config{
		Map:               lay.MapOffset,
		MapInstanceType:   lay.MapInstanceType,
		FunctionShared:    lay.JSFunctionShared,
		SfiName:           lay.SFINameOrScopeInfo,
		SfiScript:         lay.SFIScript,
		BytecodeLength:    lay.BytecodeArrayLength,
		BytecodeData:      lay.BytecodeArrayData,
		FirstJsfunction:   lay.Types.FirstJSFunction,
		LastJsfunction:    lay.Types.LastJSFunction,
		TypeSfi:           lay.Types.SharedFunctionInfo,
		TypeBytecodeArray: lay.Types.BytecodeArray,
		TypeScript:        lay.Types.Script,
		ScriptId:          lay.ScriptID,
	}
	if lay.Builtins[1] > lay.Builtins[0] {
		c.BuiltinsStart, c.BuiltinsEnd = lay.Builtins[0]+bias, lay.Builtins[1]+bias
	}
	for _, t := range lay.Frame.Types {
		if t > 0 && uint32(t) > c.MaxFrameType {
			c.MaxFrameType = uint32(t)
		}
	}
	return c
}

// struct v8_config fits in interp_proc.config.
var _ [interpreter.ConfigBytes - unsafe.Sizeof(progs.StacklineV8Config{})]byte

func encodeConfig(c progs.StacklineV8Config) ([interpreter.ConfigBytes]byte, error) {
	var out [interpreter.ConfigBytes]byte
	_, err := binary.Encode(out[:], binary.LittleEndian, &c)
	return out, err
}
