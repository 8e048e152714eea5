package tracer

import "github.com/stackline-dev/stackline/trace"

// traceMemo is what the frames of the trace being handled share, looked
// up once a trace rather than once a frame: most frames of a trace lie in
// a few files, one after the other, and all its kernel frames in one.
// handleTrace resets it for each trace; within a trace the answers stay
// true (the Run goroutine alone tells the reporter of executables, and a
// file's identity read once serves all its frames).
type traceMemo struct {
	// exec is the last executable the reporter was asked about and told
	// of (valid when hasExec).
	exec    trace.FileID
	hasExec bool
	// key and fi are the last file looked up in the file cache (valid
	// when hasFile).
	key     fileKey
	fi      *fileInfo
	hasFile bool
	// needed is the last file needTable looked at (valid when
	// hasNeeded): its frames that follow need not ask again.
	needed    trace.FileID
	hasNeeded bool
	// leaf says the native frame being named is where the thread was
	// (the first of the trace, or after a signal), not a return address.
	leaf bool
	// unrepeatable says a frame was named from what may change before
	// the process's mappings are read again (see traceRepeats).
	unrepeatable bool
}

// executableKnown is Reporter.ExecutableKnown, asked once for a run of
// frames of one executable in a trace: the caller tells the reporter of
// it when it is not known.
func (t *Tracer) executableKnown(id trace.FileID) bool {
	m := &t.memo
	if m.hasExec && m.exec == id {
		return true
	}
	m.exec, m.hasExec = id, true
	return t.cfg.Reporter.ExecutableKnown(id)
}

// peekFile is the file cache's Peek, looked up once for a run of frames
// of one file in a trace.
func (t *Tracer) peekFile(key fileKey) (*fileInfo, bool) {
	m := &t.memo
	if m.hasFile && m.key == key {
		return m.fi, m.fi != nil
	}
	fi, ok := t.files.Peek(key)
	m.key, m.fi, m.hasFile = key, fi, true
	return fi, ok
}
