package tracer

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
	"github.com/stackline-dev/stackline/tracer/procmaps"
)

// maxVDSOSize bounds the vdso image read from this process.
const maxVDSOSize = 1 << 20

// readVDSO returns the image of this process's vdso. The kernel maps the
// same image into every 64-bit process, so its unwind table and symbols
// serve them all.
func readVDSO(procRoot string) ([]byte, error) {
	f, err := os.Open(procRoot + "/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var start, end uint64
	err = procmaps.Parse(f, func([4]byte) bool { return true }, func(m procmaps.Mapping) {
		if m.Path == "[vdso]" {
			start, end = m.Start, m.End
		}
	})
	if err != nil {
		return nil, err
	}
	if start == 0 || end <= start || end-start > maxVDSOSize {
		return nil, fmt.Errorf("no vdso mapping of a plausible size (%#x-%#x)", start, end)
	}
	mem, err := os.Open(procRoot + "/self/mem")
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	img := make([]byte, end-start)
	if _, err := mem.ReadAt(img, int64(start)); err != nil {
		return nil, fmt.Errorf("read vdso: %w", err)
	}
	return img, nil
}

// loadVDSO loads the vdso's unwind table, kept for the tracer's lifetime.
// Without it, samples in the vdso (clock_gettime) end there.
func (t *Tracer) loadVDSO() {
	img, err := readVDSO(t.cfg.ProcRoot)
	if err != nil {
		t.log.Warn("no vdso unwind table", "error", err)
		return
	}
	id, err := trace.FileIDFromReader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.log.Warn("no vdso unwind table", "error", err)
		return
	}
	built := &builtTable{id: id, name: "[vdso]"}
	start := time.Now()
	f, err := elffile.NewReader(bytes.NewReader(img))
	if err == nil {
		// A builder of its own: the configured one belongs to the build
		// worker's goroutine.
		builder := &nativeunwind.Builder{}
		built.table, built.rows, built.sources, built.invalidRows, built.err = encodeTable(builder, t.maps, tableKey(id), f, nil, t.cfg.MaxUnwindTableBytes)
		f.Close()
	} else {
		built.err = err
	}
	built.buildTime = time.Since(start)
	tb := t.tables.acquire(id, fileKey{}, "[vdso]", built, time.Now())
	tb.permanent = true
	if tb.rows == 0 {
		t.log.Warn("no vdso unwind table", "error", tb.err)
		return
	}
	t.vdso = tb
}
