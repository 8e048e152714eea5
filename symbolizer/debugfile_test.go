package symbolizer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
)

// TestDebugFileSearch checks elffile.File.Debug on real split debug files:
// found by build ID and by debuglink, not found elsewhere, and a rejected
// candidate reported as an error rather than as "not found".
func TestDebugFileSearch(t *testing.T) {
	_, stripped, debug := splitDebug(t)
	linked := filepath.Join(filepath.Dir(stripped), "prog.linked")
	run(t, filepath.Dir(stripped), "objcopy", "--remove-section=.note.gnu.build-id", "--add-gnu-debuglink=prog.debug", stripped, linked)
	want, err := os.ReadFile(debug)
	if err != nil {
		t.Fatal(err)
	}
	byID := t.TempDir()
	id := parseFile(t, stripped, DemangleSimple).Info().GNUBuildID
	p, _ := elffile.BuildIDPath(id)
	copyFile(t, debug, filepath.Join(byID, p))
	byLink := t.TempDir()
	copyFile(t, debug, filepath.Join(byLink, "opt/app/.debug/prog.debug"))
	badCRC := t.TempDir()
	if err := os.MkdirAll(filepath.Join(badCRC, "opt/app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(badCRC, "opt/app/prog.debug"), append(want, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	badID := t.TempDir()
	copyFile(t, linked, filepath.Join(badID, p)) // an ELF file with another (no) build ID

	for _, c := range []struct {
		name, bin, root, hint string
		want                  error // nil: found
	}{
		{"build ID", stripped, byID, "", nil},
		{"debuglink", linked, byLink, "", nil},
		{"hint", stripped, byID, p, nil},
		{"hint gone", linked, byLink, "opt/app/prog.linked", nil},
		{"build ID elsewhere", stripped, byLink, "", fs.ErrNotExist},
		{"debuglink elsewhere", linked, byID, "", fs.ErrNotExist},
		{"wrong CRC", linked, badCRC, "", elffile.ErrCRCMismatch},
		{"wrong build ID", stripped, badID, "", elffile.ErrDebugRejected},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := elffile.Open(elffile.Source{Open: openPath(c.bin), Root: c.root, Path: "/opt/app/prog", DebugPath: c.hint})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d, err := f.Debug()
			if c.want != nil {
				if !errors.Is(err, c.want) || d != nil {
					t.Errorf("got %v, %v; want %v", d, err, c.want)
				}
				if c.want != fs.ErrNotExist && errors.Is(err, fs.ErrNotExist) {
					t.Errorf("rejected candidate reported as not found: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := d.OSFile().Stat()
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(len(want)) {
				t.Errorf("opened a file of %d bytes, want the debug file", fi.Size())
			}
			if f.DebugPath() == "" {
				t.Error("DebugPath() is empty")
			}
		})
	}
}
