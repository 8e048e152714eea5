package kallsyms

import (
	"encoding/binary"

	"github.com/stackline-dev/stackline/internal/elffile"
)

// BuildIDFromNotes returns the GNU build ID, in lower-case hex, from the
// contents of an ELF note section such as /sys/kernel/notes or
// /sys/module/NAME/notes/.note.gnu.build-id. The notes are in the running
// kernel's byte order. It returns "" when no GNU build ID note is found;
// malformed data ends the search without error.
func BuildIDFromNotes(data []byte) string {
	return elffile.NoteBuildIDs(data, binary.NativeEndian, 4).GNU
}
