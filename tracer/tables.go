package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// The packed row and rule of support/ebpf/unwind_maps.h.
const (
	ruleInvalid = uint32(progs.StacklineRuleKindRULE_INVALID)
	ruleEnd     = uint32(progs.StacklineRuleKindRULE_END)
	ruleSP      = uint32(progs.StacklineRuleKindRULE_SP)
	ruleFP      = uint32(progs.StacklineRuleKindRULE_FP)
	rulePLT     = uint32(progs.StacklineRuleKindRULE_PLT)
	ruleSignal  = uint32(progs.StacklineRuleKindRULE_SIGNAL)
	ruleGoMcall = uint32(progs.StacklineRuleKindRULE_GO_MCALL)

	ruleFPSlotShift = progs.StacklineRuleLayoutRULE_FP_SLOT_SHIFT
	ruleFPSlotMax   = int32(progs.StacklineRuleLayoutRULE_FP_SLOT_MASK)
	ruleCFAShift    = progs.StacklineRuleLayoutRULE_CFA_SHIFT
	// The CFA offset takes the bits above ruleCFAShift.
	ruleCFAMax   = int32(1<<(32-ruleCFAShift) - 1)
	rowRuleShift = progs.StacklineRuleLayoutROW_RULE_SHIFT

	// rowBytes is the size of one row in the eBPF array (a u64).
	rowBytes = 8
	// maxTableRows is the most rows the eBPF search covers (MAX_ROWS_LOG2).
	maxTableRows = 1 << progs.StacklineUnwindBoundsMAX_ROWS_LOG2
)

// encodeRow packs a row for the eBPF unwinder. A rule it cannot express
// becomes an invalid rule (unwinding stops there with an error) and ok is
// false.
func encodeRow(r nativeunwind.Row) (packed uint64, ok bool) {
	rule, ok := encodeRule(r)
	return packRow(rule, r.Addr), ok
}

// packRow packs a rule (see encodeRule) and a file offset below 4 GiB.
func packRow(rule uint32, addr uint64) uint64 {
	return uint64(rule)<<rowRuleShift | addr
}

// encodeRule packs the rule of a row (all but its Addr) for the eBPF
// unwinder; false means it cannot express it, and the rule is invalid.
func encodeRule(r nativeunwind.Row) (uint32, bool) {
	var kind uint32
	switch r.CFA {
	case nativeunwind.CFAInvalid:
		return ruleInvalid, true
	case nativeunwind.CFAEndOfStack:
		return ruleEnd, true
	case nativeunwind.CFASignal:
		return ruleSignal, true
	case nativeunwind.CFAGoMcall:
		return ruleGoMcall, true
	case nativeunwind.CFASP:
		kind = ruleSP
	case nativeunwind.CFAFP:
		kind = ruleFP
	case nativeunwind.CFAPLT:
		kind = rulePLT
	default:
		return ruleInvalid, false
	}
	// On x86-64 the call pushes the return address just below the CFA.
	if r.RAOffset != -8 || r.CFAOffset < 0 || r.CFAOffset > ruleCFAMax {
		return ruleInvalid, false
	}
	var slot uint32
	switch {
	case r.FPOffset == 0:
	case r.FPOffset < 0 && r.FPOffset%8 == 0 && -r.FPOffset/8 <= ruleFPSlotMax:
		slot = uint32(-r.FPOffset / 8)
	default:
		return ruleInvalid, false
	}
	return kind | slot<<ruleFPSlotShift | uint32(r.CFAOffset)<<ruleCFAShift, true
}

// tableKey is a file's key in the eBPF unwind_tables map.
func tableKey(id trace.FileID) uint64 {
	return binary.LittleEndian.Uint64(id[:8])
}

// unwindTable is one file's stack-delta table as loaded into eBPF, or the
// reason it is not.
type unwindTable struct {
	id   trace.FileID
	key  uint64
	name string
	// rows is the number of rows loaded; 0 when the file has none (err
	// says why): the unwinder follows frame pointers there.
	rows uint32
	// bytes is what the kernel charges for the table's map.
	bytes   uint64
	sources nativeunwind.Source
	err     error
	// refs counts the processes that map the file; idle is when it
	// dropped to zero. Idle tables stay loaded (the next process running
	// the same file finds them) until space is needed or idleTTL passes.
	refs  int
	idle  time.Time
	built time.Time
	// permanent tables (the vdso) are never unloaded.
	permanent bool
	// files are the mapped files (device, inode) with this content,
	// entered in the eBPF file_tables map for processes not synced yet.
	files []fileKey
	// regions is set for a table built by region (see regionTable).
	regions *regionTable
}

// searchRows is the number of rows the mappings of tb's file give the
// eBPF unwinder: its rows, or for a table built by region rowsRegional
// and its number of regions, which stays right when regions are added.
func (tb *unwindTable) searchRows() uint32 {
	if tb.regions != nil && tb.rows > 0 {
		return rowsRegional | uint32(tb.regions.n)
	}
	return tb.rows
}

// errTableBudget says a table did not fit in --max-unwind-table-bytes.
var errTableBudget = errors.New("unwind table exceeds the remaining budget")

// Tables idle longer than this are unloaded; a file whose table did not fit
// is retried after it.
const idleTTL = time.Minute

// tableStore loads files' stack-delta tables into the eBPF unwind_tables
// map, shares each among the processes that map the file, and keeps their
// total size under a bound. It is owned by the tracer's Run goroutine.
type tableStore struct {
	maps     unwinderMaps
	maxBytes uint64
	log      *slog.Logger

	// mu guards the fields below against list, the one method other
	// goroutines call.
	mu     sync.Mutex
	tables map[trace.FileID]*unwindTable
	keys   map[uint64]trace.FileID
	used   uint64
	// unbuilt are the files processes map whose tables are built only
	// once a sample reaches them, while they have none.
	unbuilt map[trace.FileID]*unbuiltFile
	// partial are the tables built by region not built whole yet; the
	// Run goroutine reads it without the lock.
	partial map[trace.FileID]*unwindTable

	stats tableStats
}

type tableStats struct {
	built, failed, skipped, evicted, invalidRows uint64
	buildTime                                    time.Duration
}

func newTableStore(maps unwinderMaps, maxBytes uint64, log *slog.Logger) *tableStore {
	return &tableStore{
		maps:     maps,
		maxBytes: maxBytes,
		log:      log,
		tables:   make(map[trace.FileID]*unwindTable),
		keys:     make(map[uint64]trace.FileID),
		unbuilt:  make(map[trace.FileID]*unbuiltFile),
		partial:  make(map[trace.FileID]*unwindTable),
	}
}

// unbuiltFile is a file mapped by processes that wait for its table: it
// is built when a sample first reaches the file (requested).
type unbuiltFile struct {
	name string
	// refs counts the processes whose mappings of the file were given
	// to eBPF without its table.
	refs int
	// requested is set while its build is with the build workers.
	requested bool
	// regions are the regions of its code samples reached, for a table
	// built by region (see regionTable).
	regions []uint32
}

// wait counts one more process mapping file id, named name, without its
// table.
func (s *tableStore) wait(id trace.FileID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.unbuilt[id]
	if u == nil {
		u = &unbuiltFile{name: name}
		s.unbuilt[id] = u
	}
	u.refs++
}

// unwait drops one process from those waiting for id's table.
func (s *tableStore) unwait(id trace.FileID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.unbuilt[id]; u != nil {
		u.refs--
		if u.refs <= 0 && !u.requested {
			delete(s.unbuilt, id)
		}
	}
}

// request marks the build of id's table, named name, as asked for by a
// frame in region region of its code, and reports whether it was not
// already, nor is the table known: the caller then hands the build to a
// build worker. The process that asked may be gone already (one that
// lived a few milliseconds): the next ones mapping the file get the
// table.
func (s *tableStore) request(id trace.FileID, name string, region uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tables[id]; ok {
		return false
	}
	u := s.unbuilt[id]
	if u == nil {
		u = &unbuiltFile{name: name}
		s.unbuilt[id] = u
	}
	u.regions, _ = addAsked(u.regions, region)
	if u.requested {
		return false
	}
	u.requested = true
	return true
}

// unrequest says the build of id's table asked for by request is over
// (its result is in the store, or it was not made): a process still
// waiting asks again at its next sample.
func (s *tableStore) unrequest(id trace.FileID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.unbuilt[id]; u != nil {
		u.requested = false
		u.regions = nil
		if u.refs <= 0 {
			delete(s.unbuilt, id)
		}
	}
	if tb := s.tables[id]; tb != nil && tb.regions != nil {
		tb.regions.building = false
	}
}

// has reports whether id's table (or the reason it has none) is known.
// The build worker asks it before building a table.
func (s *tableStore) has(id trace.FileID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tables[id]
	return ok
}

// acquire returns the table of file id, mapped as file, loading it from
// built when it is not loaded yet, and counts one more reference to it. It
// returns nil when the table is neither loaded nor built. It is done with
// built: its rows are in unwind_tables or dropped.
func (s *tableStore) acquire(id trace.FileID, file fileKey, name string, built *builtTable, now time.Time) *unwindTable {
	defer built.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	tb, ok := s.tables[id]
	if ok && errors.Is(tb.err, errTableBudget) && tb.refs == 0 && now.Sub(tb.built) > idleTTL && built != nil {
		// Retry: space may have been freed since.
		s.remove(tb)
		ok = false
	}
	if !ok {
		if built == nil && s.maxBytes > 0 {
			return nil
		}
		tb = s.load(id, name, built, now)
	}
	if file != (fileKey{}) && !slices.Contains(tb.files, file) {
		s.enterFile(tb, file)
	}
	tb.refs++
	return tb
}

// enterFile tells the eBPF unwinder that file has tb's table (or none).
func (s *tableStore) enterFile(tb *unwindTable, file fileKey) {
	val := progs.StacklineFileTable{Table: tb.key, NumRows: tb.searchRows()}
	if err := s.maps.putFileTable(file, val); err != nil {
		s.log.Debug("enter file table", "file", tb.name, "error", err)
		return
	}
	tb.files = append(tb.files, file)
}

// retain counts one more reference to tb, acquired before (the vdso's
// table, which every process maps).
func (s *tableStore) retain(tb *unwindTable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb.refs++
}

// release drops one reference to tb.
func (s *tableStore) release(tb *unwindTable, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb.refs--
	if tb.refs <= 0 {
		tb.refs = 0
		tb.idle = now
	}
}

// load puts id's built table into the eBPF map. Failures are kept as
// tables without rows, so a file is not parsed again for each process that
// maps it.
func (s *tableStore) load(id trace.FileID, name string, built *builtTable, now time.Time) *unwindTable {
	tb := &unwindTable{id: id, key: tableKey(id), name: name, built: now}
	s.tables[id] = tb
	if other, ok := s.keys[tb.key]; (ok && other != id) || tb.key == pendingTable {
		tb.err = fmt.Errorf("table key %#x already used by another file", tb.key)
		s.stats.failed++
		return tb
	}
	if s.maxBytes == 0 {
		// Frame pointers only: no table is built, let alone loaded.
		tb.err = fmt.Errorf("%w: --max-unwind-table-bytes is 0", errTableBudget)
		s.stats.skipped++
		return tb
	}
	s.stats.buildTime += built.buildTime
	s.stats.invalidRows += built.invalidRows
	err := built.err
	if err == nil {
		err = s.insert(tb, built.rows, built.table)
	}
	if err != nil {
		tb.err = err
		if errors.Is(err, errTableBudget) || errors.Is(err, nativeunwind.ErrTooLarge) {
			s.stats.skipped++
			s.log.Warn("unwind table skipped: frames in this file are unwound by frame pointer",
				"file", name, "rows", built.rows, "error", err)
		} else if !errors.Is(err, nativeunwind.ErrNoCFI) {
			s.stats.failed++
			s.log.Debug("no unwind table", "file", name, "error", err)
		}
		return tb
	}
	tb.sources = built.sources
	if rt := built.regions; rt != nil {
		rt.loaded = now
		tb.regions = rt
		if !rt.complete() {
			rt.keep(built)
			s.partial[id] = tb
		}
	}
	s.stats.built++
	s.log.Debug("unwind table loaded", "file", name, "rows", tb.rows, "bytes", tb.bytes,
		"build_time", built.buildTime)
	return tb
}

// insert enters tab, a table of rows rows, under tb's key, making room by
// unloading idle tables when the budget requires it.
func (s *tableStore) insert(tb *unwindTable, rows int, tab rowTable) error {
	if rows == 0 || tab == nil {
		return nativeunwind.ErrNoCFI
	}
	need := tab.size()
	if s.used+need > s.maxBytes {
		s.evictIdle(need)
	}
	if s.used+need > s.maxBytes {
		return fmt.Errorf("%w: %d bytes needed, %d of %d used", errTableBudget, need, s.used, s.maxBytes)
	}
	if err := s.maps.putTable(tb.key, tab); err != nil {
		return err
	}
	tb.rows = uint32(rows)
	tb.bytes = need
	s.keys[tb.key] = tb.id
	s.used += tb.bytes
	return nil
}

// evictIdle unloads idle tables, oldest first, until need bytes fit.
func (s *tableStore) evictIdle(need uint64) {
	var idle []*unwindTable
	for _, tb := range s.tables {
		if tb.refs == 0 && !tb.permanent {
			idle = append(idle, tb)
		}
	}
	slices.SortFunc(idle, func(a, b *unwindTable) int { return a.idle.Compare(b.idle) })
	for _, tb := range idle {
		if s.used+need <= s.maxBytes {
			return
		}
		if tb.rows > 0 {
			s.stats.evicted++
		}
		s.remove(tb)
	}
}

// expire unloads tables idle for longer than idleTTL and returns them:
// their files, which no process has mapped since. It also gives back the
// spare room of tables built by region that stopped growing
// (shrinkIdle).
func (s *tableStore) expire(now time.Time) []*unwindTable {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shrinkIdle(now)
	var gone []*unwindTable
	for _, tb := range s.tables {
		if tb.refs == 0 && !tb.permanent && now.Sub(tb.idle) > idleTTL {
			s.remove(tb)
			gone = append(gone, tb)
		}
	}
	return gone
}

func (s *tableStore) remove(tb *unwindTable) {
	delete(s.tables, tb.id)
	delete(s.partial, tb.id)
	if tb.regions != nil {
		tb.regions.drop()
	}
	for _, f := range tb.files {
		if err := s.maps.deleteFileTable(f); err != nil {
			s.log.Debug("remove file table", "file", tb.name, "error", err)
		}
	}
	if tb.rows == 0 {
		return
	}
	if err := s.maps.deleteTable(tb.key); err != nil {
		s.log.Debug("unload unwind table", "file", tb.name, "error", err)
	}
	delete(s.keys, tb.key)
	s.used -= tb.bytes
}

// TableInfo describes one file's unwind table.
type TableInfo struct {
	// File is the file's base name; ID its file ID in hex.
	File string `json:"file"`
	ID   string `json:"id"`
	// Rows and Bytes are what is loaded into eBPF (0 when nothing is).
	Rows  uint32 `json:"rows"`
	Bytes uint64 `json:"bytes"`
	// Processes is the number of processes mapping the file now.
	Processes int `json:"processes"`
	// IdleSeconds is, when no process maps the file, how long ago the
	// last one stopped (the table is unloaded after idleTTL).
	IdleSeconds float64 `json:"idle_seconds,omitempty"`
	// Regions and RegionsBuilt are, for a table built by region, the
	// regions of the file's code and how many of them are built.
	Regions      int `json:"regions,omitempty"`
	RegionsBuilt int `json:"regions_built,omitempty"`
	// Error says why no table is loaded, when none is.
	Error string `json:"error,omitempty"`
}

func (s *tableStore) list(now time.Time) []TableInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TableInfo, 0, len(s.tables)+len(s.unbuilt))
	for id, u := range s.unbuilt {
		if _, ok := s.tables[id]; ok {
			continue
		}
		why := errNotSampled
		if u.requested {
			why = errBuilding
		}
		out = append(out, TableInfo{File: u.name, ID: id.String(), Processes: u.refs, Error: why})
	}
	for _, tb := range s.tables {
		ti := TableInfo{File: tb.name, ID: tb.id.String(), Rows: tb.rows, Bytes: tb.bytes, Processes: tb.refs}
		if tb.refs == 0 && !tb.permanent && !tb.idle.IsZero() {
			ti.IdleSeconds = now.Sub(tb.idle).Seconds()
		}
		if tb.err != nil {
			ti.Error = tb.err.Error()
		}
		if rt := tb.regions; rt != nil {
			ti.Regions, ti.RegionsBuilt = rt.n, rt.count
		}
		out = append(out, ti)
	}
	slices.SortFunc(out, func(a, b TableInfo) int {
		if a.Bytes != b.Bytes {
			return int(int64(b.Bytes) - int64(a.Bytes))
		}
		return compareStrings(a.File, b.File)
	})
	return out
}

// Why a mapped file has no table (TableInfo.Error) while its table is
// built only once a sample reaches it.
const (
	errNotSampled = "not built: no sample reached the file yet"
	errBuilding   = "being built: a sample reached the file"
)

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// mapMemlock returns the bytes the kernel charges for m, or fallback when
// it does not say.
func mapMemlock(m *ebpf.Map, fallback uint64) uint64 {
	if n := fdinfoMemlock(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD())); n > 0 {
		return n
	}
	return fallback
}
