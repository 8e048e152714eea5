package tracer

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// fixtureKallsyms and fixtureModules are the kernel the kernel-frame tests
// load from a fixture /proc: three symbols of the image and module e1000.
const (
	fixtureKallsyms = `ffffffff81000000 T _stext
ffffffff81000100 T schedule
ffffffff81000200 T _etext
ffffffffc0001000 t e1000_xmit	[e1000]
ffffffffc0001100 t e1000_poll	[e1000]
`
	fixtureModules = "e1000 16384 0 - Live 0xffffffffc0001000\n"
)

// TestKernelFrames: vmlinux frames, module frames (a mapping of their own
// with the module's build ID, addresses relative to the module) and
// unknown addresses ([unknown] on the kernel mapping, counted) all go
// through the reporter's contract.
func TestKernelFrames(t *testing.T) {
	root := t.TempDir()
	proc, sys := filepath.Join(root, "proc"), filepath.Join(root, "sys")
	write(t, filepath.Join(proc, "kallsyms"), fixtureKallsyms)
	write(t, filepath.Join(proc, "modules"), fixtureModules)
	write(t, filepath.Join(sys, "module/e1000/notes/.note.gnu.build-id"), string(gnuBuildIDNote([]byte{0xab, 0xcd, 0xef, 0x01})))
	kern, err := kallsyms.Load(kallsyms.Options{ProcRoot: proc, SysRoot: sys, Source: kallsyms.SourceFile})
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

// noPrograms lists no BPF programs.
type noPrograms struct{}

func (noPrograms) ProgramIDs() ([]uint32, error) { return nil, nil }
func (noPrograms) Program(uint32) (kallsyms.BPFProgram, error) {
	return kallsyms.BPFProgram{}, os.ErrNotExist
}

// TestKernelFramesRemembered: a frame of the kernel image named once is
// known by its address after (no kallsyms lookup), and named again when
// the reporter has forgotten it; a module's frames are looked up every
// time; and once kallsyms re-reads the modules, an address the image
// claimed is looked up again, so that a module loaded next to the image
// names it.
func TestKernelFramesRemembered(t *testing.T) {
	root := t.TempDir()
	proc, sys := filepath.Join(root, "proc"), filepath.Join(root, "sys")
	write(t, filepath.Join(proc, "kallsyms"), fixtureKallsyms)
	write(t, filepath.Join(proc, "modules"), fixtureModules)
	now := time.Unix(1000, 0)
	kern, err := kallsyms.Load(kallsyms.Options{ProcRoot: proc, SysRoot: sys, Programs: noPrograms{}, Source: kallsyms.SourceFile,
		Now: func() time.Time { return now }, MaxModuleAge: -1})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := &Tracer{cfg: Config{Reporter: rec, Kernel: kern}, kernelID: trace.KernelFileID("vmlinux", kern.BuildID())}
	name := func(id trace.FrameID) string {
		if info, ok := rec.frames[id]; ok && len(info.Lines) == 1 {
			return info.Lines[0].Function
		}
		return ""
	}

	const sched, pastEnd, poll = 0xffffffff81000104, 0xffffffff81000310, 0xffffffffc0001108
	first := tr.kernelFrame(sched)
	lookups := kern.Stats().Lookups
	if again := tr.kernelFrame(sched); again != first || name(again) != "schedule" {
		t.Errorf("frame named again %+v %q, first %+v", again, name(again), first)
	}
	if n := kern.Stats().Lookups - lookups; n != 0 {
		t.Errorf("%d kallsyms lookups for a frame of the image named before", n)
	}
	delete(rec.frames, first)
	if again := tr.kernelFrame(sched); again != first || name(again) != "schedule" {
		t.Errorf("frame forgotten by the reporter: %+v %q", again, name(again))
	}

	lookups = kern.Stats().Lookups
	m1, m2 := tr.kernelFrame(poll), tr.kernelFrame(poll)
	if m1 != m2 || m1.File == tr.kernelID || m1.Addr != 0x108 || name(m1) != "e1000_poll" {
		t.Errorf("module frames %+v %+v %q", m1, m2, name(m1))
	}
	if n := kern.Stats().Lookups - lookups; n != 2 {
		t.Errorf("%d kallsyms lookups for two module frames, want 2", n)
	}

	// Past the image's last symbol, within MaxSymbolSize: the image
	// claims it, until a module loaded there does.
	if id := tr.kernelFrame(pastEnd); id.File != tr.kernelID || name(id) != "_etext" {
		t.Fatalf("frame past the image's end %+v %q", id, name(id))
	}
	write(t, filepath.Join(proc, "kallsyms"), `ffffffff81000000 T _stext
ffffffff81000100 T schedule
ffffffff81000200 T _etext
ffffffff81000300 t late_fn	[late]
ffffffffc0001000 t e1000_xmit	[e1000]
ffffffffc0001100 t e1000_poll	[e1000]
`)
	write(t, filepath.Join(proc, "modules"), "e1000 16384 0 - Live 0xffffffffc0001000\nlate 4096 0 - Live 0xffffffff81000300\n")
	now = now.Add(time.Hour)
	// An address no symbol claims makes kallsyms re-read the modules.
	if id := tr.kernelFrame(0xffffffff00000000); name(id) != unknownKernelName {
		t.Fatalf("unknown address named %q", name(id))
	}
	if kern.Stats().ModuleRereads == 0 {
		t.Fatal("kallsyms did not re-read the modules")
	}
	if id := tr.kernelFrame(pastEnd); id.File == tr.kernelID || id.Addr != 0x10 || name(id) != "late_fn" {
		t.Errorf("frame of the module loaded past the image's end %+v %q", id, name(id))
	}
}

// TestKernelImageAddrs: the set holds four addresses of a set, the
// oldest evicted first.
func TestKernelImageAddrs(t *testing.T) {
	var k kernelImageAddrs
	if k.has(0) || k.has(0xffffffff81000000) {
		t.Fatal("empty set has addresses")
	}
	// Addresses of one set: their hashes share the top bits.
	base := uint64(0xffffffff81000000)
	k.add(base)
	clear(k.slots)
	var same []uint64
	for a := base; len(same) < 5; a++ {
		if k.set(a) == k.set(base) {
			same = append(same, a)
		}
	}
	for _, a := range same {
		k.add(a)
	}
	if k.has(same[0]) {
		t.Error("the oldest of five addresses of a set kept")
	}
	for _, a := range same[1:] {
		if !k.has(a) {
			t.Errorf("address %#x lost", a)
		}
	}
}
