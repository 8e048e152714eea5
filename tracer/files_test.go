package tracer

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// seenRuntime is an interpreter.Runtime that recognises nothing and records
// the files it was shown.
type seenRuntime struct{ seen []*elffile.File }

func (*seenRuntime) Name() string { return "seen" }

func (r *seenRuntime) Detect(f interpreter.File) (interpreter.Loader, error) {
	ef, err := f.ELF()
	if err != nil {
		return nil, err
	}
	r.seen = append(r.seen, ef)
	return nil, nil
}

// TestFirstSight: on first sight of a file during a sync, its identity,
// build IDs, unwind table, debug file and interpreter detection all come
// from one opened file; a debug file that is there but does not match is
// counted and logged, not taken for missing; one that matches is
// remembered for the symbolizer.
func TestFirstSight(t *testing.T) {
	src := filepath.Join(t.TempDir(), "prog.c")
	if err := os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "prog")
	testenv.Run(t, "", "gcc", "-g", "-Wl,--build-id", "-o", bin, src)

	for _, c := range []struct {
		name       string
		debug      []string // objcopy arguments making the debug file from bin
		wantErrors uint64
	}{
		{"matching debug file", []string{"--only-keep-debug"}, 0},
		{"debug file of another build", []string{"--only-keep-debug", "--remove-section=.note.gnu.build-id"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			proc := t.TempDir()
			root := filepath.Join(proc, "10", "root")
			prog := filepath.Join(root, "opt/app/prog")
			if err := os.MkdirAll(filepath.Dir(prog), 0o755); err != nil {
				t.Fatal(err)
			}
			testenv.Run(t, "", "cp", bin, prog)
			want, err := elffile.Open(elffile.Source{Open: func() (*os.File, error) { return os.Open(bin) }})
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			ids := want.BuildIDs()
			debugPath, ok := elffile.BuildIDPath(ids.GNU)
			if !ok {
				t.Fatalf("gcc gave no build ID: %+v", ids)
			}
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(debugPath)), 0o755); err != nil {
				t.Fatal(err)
			}
			testenv.Run(t, "", "objcopy", append(c.debug, bin, filepath.Join(root, debugPath))...)

			rt := &seenRuntime{}
			files, _ := newFileCache(16)
			maps := newMemMaps()
			tr := &Tracer{
				cfg:   Config{Interpreters: []interpreter.Runtime{rt}},
				log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
				proc:  procFS{root: proc},
				files: files,
				maps:  maps,
				// A budget of one row: the table is built (its debug
				// file read), then skipped as too large, not loaded.
				tables: newTableStore(maps, rowBytes, slog.New(slog.NewTextHandler(io.Discard, nil))),
			}
			p := &process{pid: 10}
			m := &mapping{start: 0x1000, end: 0x2000, path: "/opt/app/prog", key: fileKey{dev: 1, inode: 2}}
			// What the sync worker does, then the build worker.
			mf := tr.mappedFile(tr.proc, p, m)
			fi, _ := tr.fileOf(mf)
			if fi == nil {
				t.Fatal("file not identified")
			}
			mf.fi = fi
			built := tr.buildTable(&nativeunwind.Builder{}, mf)
			tr.tables.acquire(fi.id, m.key, fi.exec.FileName, built, time.Now())
			ef, err := mf.elf()
			if err != nil {
				t.Fatal(err)
			}
			mf.close()

			fi, _ = tr.files.Get(m.key) // as published: nothing opened
			wantID, _ := want.ID()
			if fi == nil || fi.id != wantID || fi.exec.GNUBuildID != ids.GNU || fi.exec.FileName != "prog" || fi.isGo {
				t.Errorf("file info %+v, want id %v, build ID %s", fi, wantID, ids.GNU)
			}
			if len(rt.seen) != 1 || rt.seen[0] != ef {
				t.Errorf("interpreter detection saw %v, want the one opened file %p", rt.seen, ef)
			}
			if st := tr.tables.stats; st.skipped != 1 {
				t.Errorf("table stats %+v, want one table built and skipped for the budget", st)
			}
			if got := tr.stats.debugFileErrors.Load(); got != c.wantErrors {
				t.Errorf("DebugFileErrors = %d, want %d", got, c.wantErrors)
			}
			wantDebug := ""
			if c.wantErrors == 0 {
				wantDebug = debugPath
			}
			if fi.debugPath != wantDebug || tr.source(p, m, fi).DebugPath != wantDebug {
				t.Errorf("debug path %q, want %q", fi.debugPath, wantDebug)
			}
		})
	}
}

// TestRenameAfterFailedLoad: frames of a file whose symbols could not be
// loaded are named again: tried again at most every renameRetry while the
// load fails, then for renameWindow once it succeeded; a file whose
// loads never failed is not.
func TestRenameAfterFailedLoad(t *testing.T) {
	tr := &Tracer{}
	bad, good := trace.FileID{1}, trace.FileID{2}
	now := time.Now()
	tr.noteSymbols(good, true, now)
	if tr.renameDue(good, now.Add(time.Second)) {
		t.Error("a file whose symbols loaded is named again")
	}
	tr.noteSymbols(bad, false, now)
	if tr.renameDue(bad, now.Add(renameRetry/2)) {
		t.Error("a failed file tried again before renameRetry")
	}
	if !tr.renameDue(bad, now.Add(renameRetry)) {
		t.Error("a failed file not tried again after renameRetry")
	}
	loaded := now.Add(time.Second)
	tr.noteSymbols(bad, true, loaded)
	if !tr.renameDue(bad, loaded.Add(renameWindow/2)) {
		t.Error("frames of a file not named again within renameWindow of its symbols loading")
	}
	if tr.renameDue(bad, loaded.Add(renameWindow+time.Second)) || tr.renames[bad] != nil {
		t.Error("frames of a file named again past renameWindow")
	}
	for i := range maxRenames + 10 {
		tr.noteSymbols(trace.FileID{3, byte(i), byte(i >> 8)}, false, now)
	}
	if len(tr.renames) > maxRenames {
		t.Errorf("%d files remembered, want at most %d", len(tr.renames), maxRenames)
	}
}

// TestFileCacheExpiry: files looked up (Get or Peek) stay, those unused
// for the TTL are forgotten and counted, and the bound in entries holds.
func TestFileCacheExpiry(t *testing.T) {
	c, err := newFileCache(3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(4) {
		c.Add(fileKey{dev: 1, inode: i}, &fileInfo{})
	}
	if n := c.Len(); n != 3 {
		t.Fatalf("%d files cached, bound 3", n)
	}
	if _, ok := c.Peek(fileKey{dev: 1, inode: 0}); ok {
		t.Fatal("the least recently used file is still cached past the bound")
	}
	time.Sleep(20 * time.Millisecond)
	c.Get(fileKey{dev: 1, inode: 1})
	c.Peek(fileKey{dev: 1, inode: 2})
	c.expire(time.Now(), 0) // no TTL: nothing expires
	if n := c.Len(); n != 3 {
		t.Fatalf("%d files cached after expiry without TTL, want 3", n)
	}
	c.expire(time.Now(), 10*time.Millisecond)
	if n, e := c.Len(), c.Expired(); n != 2 || e != 1 {
		t.Fatalf("%d files cached, %d expired; want 2, 1", n, e)
	}
	if _, ok := c.Peek(fileKey{dev: 1, inode: 3}); ok {
		t.Fatal("the file unused for the TTL is still cached")
	}
	for _, i := range []uint64{1, 2} {
		if _, ok := c.Peek(fileKey{dev: 1, inode: i}); !ok {
			t.Fatalf("file %d, used, was forgotten", i)
		}
	}
	c.expire(time.Now().Add(time.Hour), time.Minute)
	if n := c.Len(); n != 0 {
		t.Fatalf("%d files cached an hour later", n)
	}
}
