package symbolizer

import (
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenDebugFile(t *testing.T) {
	_, stripped, debug := splitDebug(t)
	linked := filepath.Join(filepath.Dir(stripped), "prog.linked")
	run(t, filepath.Dir(stripped), "objcopy", "--remove-section=.note.gnu.build-id", "--add-gnu-debuglink=prog.debug", stripped, linked)
	want, err := os.ReadFile(debug)
	if err != nil {
		t.Fatal(err)
	}
	byID := t.TempDir()
	id := parseFile(t, stripped, DemangleSimple).Info().GNUBuildID
	p, _ := buildIDPath(id)
	copyFile(t, debug, filepath.Join(byID, p))
	byLink := t.TempDir()
	copyFile(t, debug, filepath.Join(byLink, "opt/app/.debug/prog.debug"))

	for _, c := range []struct {
		name, bin, root string
		found           bool
	}{
		{"build ID", stripped, byID, true},
		{"debuglink", linked, byLink, true},
		{"build ID elsewhere", stripped, byLink, false},
		{"debuglink elsewhere", linked, byID, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ef, err := elf.Open(c.bin)
			if err != nil {
				t.Fatal(err)
			}
			defer ef.Close()
			fh, err := OpenDebugFile(Source{Root: c.root, Path: "/opt/app/prog"}, ef)
			if !c.found {
				if !errors.Is(err, fs.ErrNotExist) || fh != nil {
					t.Errorf("got %v, %v; want fs.ErrNotExist", fh, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			fi, err := fh.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(len(want)) {
				t.Errorf("opened a file of %d bytes, want the debug file", fi.Size())
			}
		})
	}
}
