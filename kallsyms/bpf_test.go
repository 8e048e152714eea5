package kallsyms

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// loadTestProgram loads a socket filter that returns 0 (testenv.RequireBPF:
// skipped when not root, unless STACKLINE_REQUIRE_BPF=1).
func loadTestProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	testenv.RequireBPF(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "stackline_ksym",
		Type:    ebpf.SocketFilter,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

func TestSyscallPrograms(t *testing.T) {
	prog := loadTestProgram(t)
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	addrs, ok := info.JitedKsymAddrs()
	if !ok || len(addrs) == 0 {
		testenv.Missing(t, "the program is not JIT'ed, or its address is hidden")
	}
	start := uint64(addrs[0])

	// A fixture kallsyms without the program: only the bpf syscall can
	// name it.
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "proc", "kallsyms"), []byte(vmlinuxText))
	tab, err := Load(Options{ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"), Source: SourceFile})
	if err != nil {
		t.Fatal(err)
	}
	want := "bpf_prog_" + info.Tag + "_stackline_ksym"
	sym, ok := tab.Lookup(start + 2)
	if !ok || sym.Name != want || sym.Offset != 2 || sym.Module != "bpf" || sym.ModuleBase != start || sym.ModuleKey != "bpf:"+want {
		t.Fatalf("Lookup(%#x) = %+v, %v; want %s+2", start+2, sym, ok, want)
	}
	s := tab.Stats()
	if s.BPFRereads != 1 || s.BPFPrograms == 0 || s.RereadErrors != 0 {
		t.Errorf("%+v", s)
	}

	ids, err := SyscallPrograms{}.ProgramIDs()
	if err != nil || !slices.Contains(ids, uint32(id)) {
		t.Errorf("ProgramIDs() = %v, %v; want to contain %d", ids, err, id)
	}
	if _, err := (SyscallPrograms{}).Program(^uint32(0)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Program(no such ID) = %v, want ErrNotExist", err)
	}

	// The kernel names the program the same in /proc/kallsyms.
	if name := kallsymsName(t, start); name != "" && name != want {
		t.Errorf("/proc/kallsyms names %#x %s, the table %s", start, name, want)
	}
}

// kallsymsName returns the name /proc/kallsyms gives the [bpf] symbol at
// addr, or "" when it lists none.
func kallsymsName(t *testing.T, addr uint64) string {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasSuffix(line, "[bpf]") {
			continue
		}
		fields := strings.Fields(line)
		if a, err := strconv.ParseUint(fields[0], 16, 64); err == nil && a == addr && len(fields) == 4 {
			return fields[2]
		}
	}
	return ""
}
