package tracer

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stackline-dev/stackline/kallsyms"
	"github.com/stackline-dev/stackline/trace"
)

// gnuBuildIDNote encodes a .note.gnu.build-id section holding id.
func gnuBuildIDNote(id []byte) []byte {
	b := make([]byte, 16, 16+len(id)+3)
	binary.LittleEndian.PutUint32(b[0:], 4)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(id)))
	binary.LittleEndian.PutUint32(b[8:], 3) // NT_GNU_BUILD_ID
	copy(b[12:], "GNU\x00")
	b = append(b, id...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestKernelFrames: vmlinux frames, module frames (a mapping of their own
// with the module's build ID, addresses relative to the module) and
// unknown addresses ([unknown] on the kernel mapping, counted) all go
// through the reporter's contract.
func TestKernelFrames(t *testing.T) {
	root := t.TempDir()
	proc, sys := filepath.Join(root, "proc"), filepath.Join(root, "sys")
	write(t, filepath.Join(proc, "kallsyms"), `ffffffff81000000 T _stext
ffffffff81000100 T schedule
ffffffff81000200 T _etext
ffffffffc0001000 t e1000_xmit	[e1000]
ffffffffc0001100 t e1000_poll	[e1000]
`)
	write(t, filepath.Join(proc, "modules"), "e1000 16384 0 - Live 0xffffffffc0001000\n")
	write(t, filepath.Join(sys, "module/e1000/notes/.note.gnu.build-id"), string(gnuBuildIDNote([]byte{0xab, 0xcd, 0xef, 0x01})))
	kern, err := kallsyms.Load(kallsyms.Options{ProcRoot: proc, SysRoot: sys})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := &Tracer{cfg: Config{Reporter: rec, Kernel: kern}, kernelID: trace.KernelFileID("vmlinux", kern.BuildID())}

	sched := tr.kernelFrame(0xffffffff81000104)
	poll := tr.kernelFrame(0xffffffffc0001108)
	unknown := tr.kernelFrame(0xffffffff00000000)

	if sched.File != tr.kernelID || sched.Addr != 0xffffffff81000104 || rec.frames[sched].Lines[0].Function != "schedule" {
		t.Errorf("vmlinux frame %+v %+v", sched, rec.frames[sched])
	}
	if rec.execs[sched.File].FileName != "vmlinux" {
		t.Errorf("vmlinux executable %+v", rec.execs[sched.File])
	}
	if poll.File == tr.kernelID || poll.Addr != 0x108 || rec.frames[poll].Lines[0].Function != "e1000_poll" {
		t.Errorf("module frame %+v %+v", poll, rec.frames[poll])
	}
	if e := rec.execs[poll.File]; e.FileName != "e1000" || e.GNUBuildID != "abcdef01" {
		t.Errorf("module executable %+v", e)
	}
	if unknown.File != tr.kernelID || rec.frames[unknown].Lines[0].Function != unknownKernelName || tr.stats.unknownKernel.Load() != 1 {
		t.Errorf("unknown frame %+v %+v, counted %d", unknown, rec.frames[unknown], tr.stats.unknownKernel.Load())
	}
}
