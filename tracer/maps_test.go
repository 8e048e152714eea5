package tracer

import (
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// memMaps keeps in memory what the tracer writes into the eBPF maps, for
// tests of its bookkeeping without root.
type memMaps struct {
	processes map[uint32]progs.StacklineProcessInfo
	mappings  map[progs.StacklineMappingKey]progs.StacklineExecMapping
	interps   map[uint32]progs.StacklineInterpProc
	tables    map[uint64][]uint64
	files     map[fileKey]progs.StacklineFileTable
}

func newMemMaps() *memMaps {
	return &memMaps{
		processes: map[uint32]progs.StacklineProcessInfo{},
		mappings:  map[progs.StacklineMappingKey]progs.StacklineExecMapping{},
		interps:   map[uint32]progs.StacklineInterpProc{},
		tables:    map[uint64][]uint64{},
		files:     map[fileKey]progs.StacklineFileTable{},
	}
}

func (m *memMaps) putProcess(pid uint32, info progs.StacklineProcessInfo) error {
	m.processes[pid] = info
	return nil
}

func (m *memMaps) deleteProcess(pid uint32) error {
	delete(m.processes, pid)
	return nil
}

func (m *memMaps) putMappings(keys []progs.StacklineMappingKey, entries []progs.StacklineExecMapping) error {
	for i, k := range keys {
		m.mappings[k] = entries[i]
	}
	return nil
}

func (m *memMaps) deleteMappings(keys []progs.StacklineMappingKey) error {
	for _, k := range keys {
		delete(m.mappings, k)
	}
	return nil
}

func (m *memMaps) putInterpreter(pid uint32, v *progs.StacklineInterpProc) error {
	m.interps[pid] = *v
	return nil
}

func (m *memMaps) deleteInterpreter(pid uint32) error {
	delete(m.interps, pid)
	return nil
}

// memTable is a table of memMaps: its rows.
type memTable []uint64

func (t memTable) size() uint64 { return uint64(len(t)) * rowBytes }
func (memTable) close() error   { return nil }

func (t memTable) read(n int, fn func(rows []uint64)) error {
	fn(t[:n])
	return nil
}

func (t memTable) write(off, n int, fn func(rows []uint64) error) error {
	return fn(t[off : off+n])
}

func (t memTable) clone() (rowTable, error) { return t, nil }

func (m *memMaps) newTable(_ uint64, n int, fill func(rows []uint64) error) (rowTable, error) {
	rows := make(memTable, n)
	if err := fill(rows); err != nil {
		return nil, err
	}
	return rows, nil
}

func (m *memMaps) putTable(key uint64, tab rowTable) error {
	m.tables[key] = tab.(memTable)
	return nil
}

func (m *memMaps) deleteTable(key uint64) error {
	delete(m.tables, key)
	return nil
}

func (m *memMaps) putFileTable(file fileKey, v progs.StacklineFileTable) error {
	m.files[file] = v
	return nil
}

func (m *memMaps) deleteFileTable(file fileKey) error {
	delete(m.files, file)
	return nil
}

// newTestTracer returns a tracer of the processes under /proc whose eBPF
// maps are maps, with its workers started (stopped at the end of the test).
func newTestTracer(t testing.TB, maps unwinderMaps, maxTableBytes uint64) *Tracer {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	files, _ := newFileCache(256)
	tr := &Tracer{
		cfg:           Config{ProcRoot: "/proc", MaxUnwindTableBytes: maxTableBytes, Reporter: &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}},
		log:           log,
		proc:          newProcFS("/proc", log),
		maps:          maps,
		processes:     make(map[uint32]*process),
		inflight:      make(map[uint32]inflightSync),
		symbolLoads:   make(map[trace.FileID]uint64),
		symbolsLoaded: newSymbolsLoaded(256),
		exited:        newExited(),
		files:         files,
		tables:        newTableStore(maps, maxTableBytes, log),
	}
	tr.w = tr.startWorkers(context.Background(), nil)
	t.Cleanup(tr.w.stop)
	return tr
}

// TestSyncBookkeeping syncs this process through the workers into maps
// kept in memory: its mappings under one generation, the tables of its
// small files loaded once and entered by file, its large executable
// waiting for its table until a sample reaches it (Go code: by frame
// pointer meanwhile), then given with it, a resync switching generations
// without leaving the old one, and forgetting it leaving nothing but idle
// tables.
func TestSyncBookkeeping(t *testing.T) {
	maps := newMemMaps()
	tr := newTestTracer(t, maps, 64<<20)
	pid := uint32(os.Getpid())

	// check checks the process in eBPF and returns the mapping of its
	// executable, whose table is loaded when exeBuilt, else waited for.
	check := func(what string, exeBuilt bool) (*process, *mapping) {
		t.Helper()
		p := tr.processes[pid]
		if p == nil {
			t.Fatalf("%s: process not kept", what)
		}
		info, ok := maps.processes[pid]
		if !ok || int(info.NumMappings) != len(p.mappings) || info.Gen != p.gen {
			t.Fatalf("%s: process in eBPF %+v (%v), want %d mappings of generation %d", what, info, ok, len(p.mappings), p.gen)
		}
		if len(maps.mappings) != len(p.mappings) {
			t.Errorf("%s: %d mappings in eBPF, want %d (one generation)", what, len(maps.mappings), len(p.mappings))
		}
		var exe *mapping
		for i := range p.mappings {
			m := &p.mappings[i]
			e, ok := maps.mappings[progs.StacklineMappingKey{Pid: pid, Slot: p.gen<<mappingGenShift | uint32(i)}]
			if !ok || e.Start != m.start || e.End != m.end || e.Bias != m.start-m.offset {
				t.Errorf("%s: mapping %d in eBPF %+v (%v), want %+v", what, i, e, ok, m)
			}
			if p.isExecutable(m) {
				exe = m
			}
			waits := m.fi != nil && slices.Contains(p.waiting, m.fi.id)
			switch {
			case e.Table != pendingTable:
				if p.isExecutable(m) && !exeBuilt {
					t.Errorf("%s: the executable has table %#x before a sample reached it", what, e.Table)
				}
				rows := len(maps.tables[e.Table])
				if tb := tr.tables.tables[m.fi.id]; tb != nil && tb.regions != nil {
					// Built by region: its number of regions.
					rows = int(rowsRegional) | tb.regions.n
				}
				if rows != int(e.NumRows) {
					t.Errorf("%s: mapping %d has table %#x of %d rows, %d loaded", what, i, e.Table, e.NumRows, len(maps.tables[e.Table]))
				}
				if ft, ok := maps.files[m.key]; m.key != (fileKey{}) && (!ok || ft.Table != e.Table) {
					t.Errorf("%s: file of mapping %d entered as %+v (%v)", what, i, ft, ok)
				}
			case waits:
				if eagerTable(m) {
					t.Errorf("%s: mapping %d of %d bytes waits for its table, want it built at sync", what, i, m.end-m.start)
				}
				if e.NumRows != 0 && m.fi.isGo || e.NumRows != 1 && !m.fi.isGo {
					t.Errorf("%s: mapping %d of %s waits with %d rows (Go: %v)", what, i, m.fi.exec.FileName, e.NumRows, m.fi.isGo)
				}
				if p.isExecutable(m) && exeBuilt {
					t.Errorf("%s: the executable still waits for its table", what)
				}
			case m.fi != nil:
				t.Errorf("%s: mapping %d of %s has no table and does not wait for one", what, i, m.fi.exec.FileName)
			}
		}
		if exe == nil || exe.fi == nil {
			t.Fatalf("%s: the executable's mapping not found or not identified", what)
		}
		return p, exe
	}

	if !tr.enqueue(pid, time.Now()) {
		t.Fatal("sync not queued")
	}
	tr.settle()
	p, exe := check("first sync", false)
	listed := false
	for _, ti := range tr.Tables() {
		if ti.ID == exe.fi.id.String() {
			listed = ti.Error == errNotSampled && ti.Processes == 1
		}
	}
	if !listed {
		t.Errorf("the executable not listed as not sampled: %+v", tr.Tables())
	}
	// A sample reaches the executable.
	tr.needTable(p, exe, exe.fi, exe.offset)
	tr.apply(<-tr.w.results, time.Now())
	p, _ = check("sampled", true)
	tables := len(maps.tables)
	gen := p.gen

	if !tr.enqueue(pid, time.Now()) {
		t.Fatal("resync not queued")
	}
	tr.settle()
	p = tr.processes[pid]
	check("resync", true)
	if p.gen == gen {
		t.Errorf("resync stayed in generation %d", gen)
	}
	if len(maps.tables) != tables {
		t.Errorf("resync loaded %d tables, want the %d of the first sync", len(maps.tables), tables)
	}

	tr.forget(pid)
	if len(maps.processes) != 0 || len(maps.mappings) != 0 {
		t.Errorf("after forget: %d processes and %d mappings in eBPF", len(maps.processes), len(maps.mappings))
	}
	for _, ti := range tr.Tables() {
		if ti.Processes != 0 {
			t.Errorf("after forget: table %+v still referenced", ti)
		}
	}
	// Idle past idleTTL: every table is unloaded and its file named as no
	// longer mapped (so the symbolizer lets go of it).
	loaded := len(tr.Tables())
	gone := tr.tables.expire(time.Now().Add(idleTTL + time.Second))
	if len(gone) != loaded || len(tr.Tables()) != 0 || len(maps.tables) != 0 {
		t.Errorf("expire: %d files gone of %d tables; %d tables left, %d in eBPF", len(gone), loaded, len(tr.Tables()), len(maps.tables))
	}
}
