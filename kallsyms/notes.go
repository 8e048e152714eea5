package kallsyms

import (
	"encoding/binary"
	"encoding/hex"
)

// ntGNUBuildID is the ELF note type of a GNU build ID (NT_GNU_BUILD_ID).
const ntGNUBuildID = 3

// BuildIDFromNotes returns the GNU build ID, in lower-case hex, from the
// contents of an ELF note section such as /sys/kernel/notes or
// /sys/module/NAME/notes/.note.gnu.build-id. The notes are in the running
// kernel's byte order. It returns "" when no GNU build ID note is found;
// malformed data ends the search without error.
func BuildIDFromNotes(data []byte) string {
	bo := binary.NativeEndian
	for len(data) >= 12 {
		namesz := uint64(bo.Uint32(data[0:4]))
		descsz := uint64(bo.Uint32(data[4:8]))
		typ := bo.Uint32(data[8:12])
		data = data[12:]
		nameEnd := align4(namesz)
		descEnd := nameEnd + align4(descsz)
		if descEnd > uint64(len(data)) {
			return ""
		}
		name := data[:namesz]
		desc := data[nameEnd : nameEnd+descsz]
		data = data[descEnd:]
		if typ == ntGNUBuildID && string(name) == "GNU\x00" && len(desc) > 0 {
			return hex.EncodeToString(desc)
		}
	}
	return ""
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }
