package procmaps

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// textExecutable returns the executable mappings of the maps file at path
// as its text says, but the [vsyscall] gate page.
func textExecutable(t *testing.T, path string) []Mapping {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []Mapping
	if err := Parse(f, func(p [4]byte) bool { return p[2] == 'x' }, func(m Mapping) {
		if m.Path != "[vsyscall]" {
			got = append(got, m)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// readerExecutable returns the executable mappings r reads at path, but
// the [vsyscall] gate page.
func readerExecutable(t *testing.T, r *Reader, path string) []Mapping {
	t.Helper()
	var got []Mapping
	if err := r.Executable(path, func(m Mapping) {
		if m.Path != "[vsyscall]" {
			got = append(got, m)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestReaderMatchesText: the Reader (PROCMAP_QUERY where the kernel has
// it) finds what the maps text says, for this process and for a process
// running a deleted executable whose path holds a space; so does its text
// fallback.
func TestReaderMatchesText(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "has space")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	os.Remove(exe)
	var r Reader
	for _, path := range []string{"/proc/self/maps", fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid)} {
		for _, fallback := range []bool{false, true} {
			r.noQuery = fallback
			// The child may still be mapping its libraries: compare
			// only a read the text finds the same before and after.
			var want, got []Mapping
			for range 100 {
				want = textExecutable(t, path)
				got = readerExecutable(t, &r, path)
				if slices.Equal(want, textExecutable(t, path)) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s (text fallback %v):\n got %+v\nwant %+v", path, fallback, got, want)
			}
			if len(got) < 2 {
				t.Errorf("%s: %d executable mappings", path, len(got))
			}
		}
	}
	var deleted bool
	for _, m := range readerExecutable(t, &r, fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid)) {
		deleted = deleted || m.Path == exe+deletedSuffix
	}
	if !deleted {
		t.Errorf("no mapping of %q", exe+deletedSuffix)
	}
}

// TestReaderGone: a process that exited has no mappings to read.
func TestReaderGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	var r Reader
	err := r.Executable(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid), func(Mapping) {})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("exited process: %v, want not found", err)
	}
}

func BenchmarkReaderSelf(b *testing.B) {
	for _, fallback := range []bool{false, true} {
		b.Run(fmt.Sprintf("text=%v", fallback), func(b *testing.B) {
			r := Reader{noQuery: fallback}
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Executable("/proc/self/maps", func(Mapping) {}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
