package procmeta

import (
	"bytes"
	"strings"
)

// Container says which container and Kubernetes pod a process runs in, as
// its cgroup path tells. Empty fields are unknown: a host process has
// neither, a container outside Kubernetes no pod.
type Container struct {
	// ID is the container runtime's ID of the container: 64 lower-case
	// hex digits (Docker, containerd, CRI-O, Podman).
	ID string
	// PodUID is the UID of the Kubernetes pod, with dashes
	// (8-4-4-4-12 hex digits).
	PodUID string
}

// ParseCgroup reads the contents of a /proc/PID/cgroup file, cgroup v1
// ("ID:controllers:path" per hierarchy) or v2 ("0::path"), and returns the
// container and pod its paths name. The first line naming a container
// gives the ID, the first naming a pod the pod UID; within a path the
// innermost directory naming one wins (a container nested in another
// reports the inner one). Lines it cannot read are skipped: the result is
// what the readable lines say.
func ParseCgroup(data []byte) Container {
	var c Container
	for len(data) > 0 && (c.ID == "" || c.PodUID == "") {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		// hierarchy-ID:controller-list:path; the path may hold colons.
		_, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		_, path, ok := bytes.Cut(rest, []byte{':'})
		if !ok || len(path) == 0 || path[0] != '/' {
			continue
		}
		id, pod := parseCgroupPath(string(path))
		if c.ID == "" {
			c.ID = id
		}
		if c.PodUID == "" {
			c.PodUID = pod
		}
	}
	return c
}

// parseCgroupPath returns the container ID and pod UID one cgroup path
// names, innermost first.
func parseCgroupPath(path string) (id, pod string) {
	for path != "" && (id == "" || pod == "") {
		var seg string
		if i := strings.LastIndexByte(path, '/'); i >= 0 {
			path, seg = path[:i], path[i+1:]
		} else {
			path, seg = "", path
		}
		if seg == "" || seg == "." || seg == ".." {
			continue
		}
		if id == "" {
			id = segmentContainerID(seg)
		}
		if pod == "" {
			pod = segmentPodUID(seg)
		}
	}
	return id, pod
}

// scopePrefixes are the systemd scope units container runtimes create for
// a container: <prefix>-<id>.scope. The runtimes' monitor processes
// (crio-conmon-<id>.scope, libpod-conmon-<id>.scope) run in scopes of
// their own, named by the container's ID: they are not the container.
var scopePrefixes = [...]string{"docker", "cri-containerd", "crio", "libpod"}

// segmentContainerID returns the container ID one directory of a cgroup
// path names, or "":
//   - a systemd scope of a runtime, docker-<id>.scope (and the others in
//     scopePrefixes), with the systemd cgroup driver;
//   - the bare ID, as /docker/<id> or /kubepods/<qos>/pod<uid>/<id> with
//     the cgroupfs driver;
//   - <slice>:<prefix>:<id>, containerd's form when it places a container
//     with the systemd driver's names under its own cgroup.
func segmentContainerID(seg string) string {
	if i := strings.LastIndexByte(seg, ':'); i >= 0 {
		seg = seg[i+1:]
	}
	if unit, ok := strings.CutSuffix(seg, ".scope"); ok {
		i := strings.LastIndexByte(unit, '-')
		if i < 0 {
			return ""
		}
		prefix, id := unit[:i], unit[i+1:]
		for _, p := range scopePrefixes {
			if prefix == p && isHexID(id) {
				return id
			}
		}
		return ""
	}
	if isHexID(seg) {
		return seg
	}
	return ""
}

// isHexID reports whether s is a 64-digit lower-case hex container ID.
func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// segmentPodUID returns the pod UID one directory of a cgroup path names,
// with dashes, or "": pod<uid> with the cgroupfs driver,
// kubepods[-<qos>]-pod<uid_with_underscores>.slice with the systemd one.
func segmentPodUID(seg string) string {
	if i := strings.IndexByte(seg, ':'); i >= 0 {
		// containerd's <slice>:<prefix>:<id>: the slice names the pod.
		seg = seg[:i]
	}
	seg = strings.TrimSuffix(seg, ".slice")
	i := strings.LastIndex(seg, "pod")
	if i < 0 {
		return ""
	}
	// Only "pod<uid>" itself or a slice of the kubepods hierarchy.
	if i > 0 && (seg[i-1] != '-' || !strings.HasPrefix(seg, "kubepods")) {
		return ""
	}
	uid := seg[i+len("pod"):]
	if !isUID(uid) {
		return ""
	}
	return strings.ReplaceAll(uid, "_", "-")
}

// isUID reports whether s is a UUID, 8-4-4-4-12 lower-case hex digits,
// separated by dashes or (systemd's escaping) underscores.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	sep := s[8]
	if sep != '-' && sep != '_' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != sep {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
