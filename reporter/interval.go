package reporter

import (
	"encoding/binary"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/stackline-dev/stackline/trace"
)

// interval is what the reporter gathers between two exports: the folded
// samples and the metadata pinned for them.
type interval struct {
	start time.Time
	// id tells the interval from the others of its reporter (see
	// Reporter.ReportAgain).
	id uint64

	frames pinnedFrames
	execs  map[trace.FileID]trace.ExecutableInfo

	seed   maphash.Seed
	stacks []stack
	// stackIndex maps a stack's hash to its index in stacks; collisions
	// are resolved by probing the next hash value.
	stackIndex map[uint64]int32

	samples   map[sampleKey]*sample
	processes map[uint32]*processInfo
	numTraces int
}

type stack struct {
	frames []trace.FrameID
}

// sampleKey is a sample's identity: identical (stack, pid, tid, thread
// name) fold into one sample, CPU samples and off-CPU waits apart.
type sampleKey struct {
	stack    int32
	pid, tid uint32
	comm     string
	offCPU   bool
}

type sample struct {
	timestamps []uint64
	// waits holds, for off-CPU samples, the nanoseconds waited until
	// each timestamp (not scaled).
	waits []uint64
}

// processInfo is what a process's resource is built from: the latest
// process metadata the tracer gave for it in the interval.
type processInfo struct {
	executablePath string
	name           string
	meta           *trace.ProcessMeta
}

// newInterval returns an empty interval id starting at start, with room
// for about frames pinned frames (what the previous interval pinned).
func newInterval(id uint64, start time.Time, frames int) *interval {
	return &interval{
		id:         id,
		start:      start,
		frames:     newPinnedFrames(frames, rand.Uint64()),
		execs:      make(map[trace.FileID]trace.ExecutableInfo),
		seed:       maphash.MakeSeed(),
		stackIndex: make(map[uint64]int32),
		samples:    make(map[sampleKey]*sample),
		processes:  make(map[uint32]*processInfo),
	}
}

func (iv *interval) hashStack(frames []trace.FrameID) uint64 {
	var h maphash.Hash
	h.SetSeed(iv.seed)
	var buf [25]byte
	for _, f := range frames {
		copy(buf[:16], f.File[:])
		binary.LittleEndian.PutUint64(buf[16:24], f.Addr)
		buf[24] = byte(f.Type)
		h.Write(buf[:])
	}
	return h.Sum64()
}

// internStack returns the index of frames in iv.stacks, adding a copy when
// it is new.
func (iv *interval) internStack(frames []trace.FrameID) int32 {
	h := iv.hashStack(frames)
	for {
		idx, ok := iv.stackIndex[h]
		if !ok {
			idx = int32(len(iv.stacks))
			iv.stacks = append(iv.stacks, stack{frames: slices.Clone(frames)})
			iv.stackIndex[h] = idx
			return idx
		}
		if slices.Equal(iv.stacks[idx].frames, frames) {
			return idx
		}
		h++
	}
}

func (iv *interval) add(frames []trace.FrameID, meta *trace.TraceMeta) {
	key := sampleKey{
		stack:  iv.internStack(frames),
		pid:    meta.PID,
		tid:    meta.TID,
		comm:   meta.Comm,
		offCPU: meta.OffCPUNS != 0,
	}
	s, ok := iv.samples[key]
	if !ok {
		s = &sample{}
		iv.samples[key] = s
	}
	s.timestamps = append(s.timestamps, meta.TimestampNS)
	if key.offCPU {
		s.waits = append(s.waits, meta.OffCPUNS)
	}
	// The tracer gives a new ProcessMeta when it learns more of the
	// process (its runtime, once attached): a pointer comparison per
	// trace tells.
	if p, ok := iv.processes[meta.PID]; !ok || meta.Process != nil && p.meta != meta.Process {
		iv.processes[meta.PID] = &processInfo{executablePath: meta.ExecutablePath, name: meta.ProcessName, meta: meta.Process}
	}
	iv.numTraces++
}
