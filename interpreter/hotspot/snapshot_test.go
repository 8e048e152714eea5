package hotspot

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/stackline-dev/stackline/interpreter"
)

// memSnapshot is what ReadLayout read from a live JVM: libjvm's symbols
// and the bytes at each address it read. It is stored gzipped JSON in
// testdata/vmstructs-jdkNN.json.gz and read back as process memory.
type memSnapshot struct {
	JDK     string            `json:"jdk"`
	Symbols map[string]uint64 `json:"symbols"`
	Regions []memRegion       `json:"regions"`
}

type memRegion struct {
	Addr uint64 `json:"addr"`
	Data []byte `json:"data"`
}

// ReadAt implements interpreter.Memory over the snapshot's regions.
func (s *memSnapshot) ReadAt(p []byte, addr uint64) error {
	i, _ := slices.BinarySearchFunc(s.Regions, addr, func(r memRegion, a uint64) int {
		switch {
		case r.Addr+uint64(len(r.Data)) <= a:
			return -1
		case r.Addr > a:
			return 1
		}
		return 0
	})
	if i < len(s.Regions) {
		r := s.Regions[i]
		if addr >= r.Addr && addr-r.Addr <= uint64(len(r.Data)) && uint64(len(p)) <= uint64(len(r.Data))-(addr-r.Addr) {
			copy(p, r.Data[addr-r.Addr:])
			return nil
		}
	}
	return fmt.Errorf("%w: %d bytes at %#x not in the snapshot", interpreter.ErrUnreadable, len(p), addr)
}

func (s *memSnapshot) sym(name string) (uint64, bool) {
	a, ok := s.Symbols[name]
	return a, ok
}

// recordingMemory reads a process's memory and keeps what it read.
type recordingMemory struct {
	mem interpreter.Memory
	mu  sync.Mutex
	got []memRegion
}

func (r *recordingMemory) ReadAt(p []byte, addr uint64) error {
	if err := r.mem.ReadAt(p, addr); err != nil {
		return err
	}
	r.mu.Lock()
	r.got = append(r.got, memRegion{Addr: addr, Data: slices.Clone(p)})
	r.mu.Unlock()
	return nil
}

// regions returns what was read, sorted and merged.
func (r *recordingMemory) regions() []memRegion {
	got := slices.Clone(r.got)
	slices.SortFunc(got, func(a, b memRegion) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	var out []memRegion
	for _, g := range got {
		if n := len(out); n > 0 {
			last := &out[n-1]
			end := last.Addr + uint64(len(last.Data))
			if g.Addr <= end {
				if gEnd := g.Addr + uint64(len(g.Data)); gEnd > end {
					last.Data = append(last.Data, g.Data[end-g.Addr:]...)
				}
				continue
			}
		}
		out = append(out, memRegion{Addr: g.Addr, Data: slices.Clone(g.Data)})
	}
	return out
}

func readSnapshot(path string) (*memSnapshot, error) {
	var s memSnapshot
	if err := readGzipJSON(path, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func readGzipJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := json.NewDecoder(z).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func writeGzipJSON(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	z, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	enc := json.NewEncoder(z)
	enc.SetIndent("", " ")
	if err := enc.Encode(v); err != nil {
		f.Close()
		return err
	}
	if err := z.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
