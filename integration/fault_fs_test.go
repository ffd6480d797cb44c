//go:build linux

package integration_test

// File-system faults under the file backend and downloads: a read-only lock
// directory, a full one, a full file system under a download's staging
// directory, and a destination on another file system. Each fault is a real
// mount (tmpfs, needs root or CAP_SYS_ADMIN) in the test's temp dir, always
// unmounted when the test ends; the tests skip only where mounting is not
// permitted.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toolchainkit/coord/coord"
)

// 1. A read-only lock directory: `coord lock` and `coord download` exit 69
// with one line that names the directory, their command never runs, and
// the library's New and Lock return ErrBackendUnavailable wrapping EROFS.
func TestFSReadOnlyLockDir(t *testing.T) {
	w := newWorld(t, fileBackend())
	mountTmpfs(t, w.dir, "size=1m")
	if code, out := w.runCoord("lock", "old", "--", "true"); code != 0 {
		t.Fatalf("coord lock on the writable lock dir exited %d:\n%s", code, out)
	}
	old := readFile(t, filepath.Join(w.dir, "old.lock"))
	remount(t, w.dir, syscall.MS_RDONLY)

	for _, args := range [][]string{
		{"lock", "x", "--", "sh", "-c", "echo x >> ran"},
		{"lock", "old", "--", "sh", "-c", "echo old >> ran"},
		{"download", "tc", w.path("dl/tc"), "--", "sh", "-c", "echo tc >> ran"},
	} {
		code, out := w.runCoord(args...)
		line := oneErrorLine(t, out)
		if code != 69 || !strings.Contains(line, w.dir) || !strings.Contains(line, "read-only file system") {
			t.Errorf("coord %s on a read-only lock dir: exit %d, %q; want 69 and one line naming %s as read-only", args[0], code, line, w.dir)
		}
	}
	if runs := lines(t, w.path("ran")); len(runs) > 0 {
		t.Errorf("commands ran without their lock: %q", runs)
	}
	if _, err := os.Lstat(w.path("dl")); !os.IsNotExist(err) {
		t.Errorf("download on a read-only lock dir left %s: %v", w.path("dl"), err)
	}

	// The library: New refuses the directory.
	_, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendFile, LockDir: w.dir})
	if !errors.Is(err, coord.ErrBackendUnavailable) || !errors.Is(err, syscall.EROFS) {
		t.Errorf("New on a read-only lock dir: %v; want ErrBackendUnavailable wrapping EROFS", err)
	}
	// A directory that turns read-only under a Manager: Lock refuses, for a
	// new lock file and an existing one.
	remount(t, w.dir, 0)
	m, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendFile, LockDir: w.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	remount(t, w.dir, syscall.MS_RDONLY)
	for _, name := range []string{"x", "old"} {
		l, err := m.Lock(context.Background(), name, coord.WithTimeout(0))
		if err == nil {
			l.Unlock()
		}
		if !errors.Is(err, coord.ErrBackendUnavailable) || !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), filepath.Join(w.dir, name+".lock")) {
			t.Errorf("Lock(%q) in a lock dir turned read-only: %v; want ErrBackendUnavailable wrapping EROFS, naming the lock file", name, err)
		}
	}
	if got := readFile(t, filepath.Join(w.dir, "old.lock")); !bytes.Equal(got, old) {
		t.Errorf("old.lock changed on a read-only file system: %x, was %x", got, old)
	}
}

// 2. A full lock directory. A lock whose token and holder record could not
// be written is refused (exit 69, one line naming the lock file and the
// cause), never granted: a token not written down would be handed out
// again, and fencing relies on it rising. Locks whose files exist keep
// working, their tokens rising, nothing in the directory is lost, and once
// there is space the refused name gets its first token, as a name never
// asked for does (the wall clock in microseconds).
func TestFSLockDirFull(t *testing.T) {
	w := newWorld(t, fileBackend())
	mountTmpfs(t, w.dir, "size=64k")
	if code, out := w.runCoord("lock", "old", "--", "true"); code != 0 {
		t.Fatalf("coord lock old exited %d:\n%s", code, out)
	}
	filler := fill(t, w.dir)
	fillerSize := fileSize(t, filler)

	for _, args := range [][]string{
		{"lock", "new", "--", "sh", "-c", "echo new >> ran"},
		{"download", "tc", w.path("dl/tc"), "--", "sh", "-c", "echo tc >> ran"},
	} {
		code, out := w.runCoord(args...)
		line := oneErrorLine(t, out)
		if code != 69 || !strings.Contains(line, w.dir+"/") || !strings.Contains(line, "no space left on device") {
			t.Errorf("coord %s in a full lock dir: exit %d, %q; want 69 and one line naming the lock file and the full disk", args[0], code, line)
		}
	}
	if runs := lines(t, w.path("ran")); len(runs) > 0 {
		t.Errorf("commands ran without their lock: %q", runs)
	}
	// The library sees the same.
	m, err := coord.New(context.Background(), coord.Config{Backend: coord.BackendFile, LockDir: w.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if l, err := m.Lock(context.Background(), "lib", coord.WithTimeout(0)); !errors.Is(err, coord.ErrBackendUnavailable) || !errors.Is(err, syscall.ENOSPC) {
		if err == nil {
			l.Unlock()
		}
		t.Errorf("Lock in a full lock dir: %v; want ErrBackendUnavailable wrapping ENOSPC", err)
	}

	// An existing lock file has its space: its lock still works.
	start := time.Now().UnixMicro()
	code, out := w.runCoord("lock", "old", "--", "sh", "-c", `echo $COORD_FENCING_TOKEN > tok`)
	old := mustInt(t, w.path("tok"))
	if code != 0 || old <= 0 {
		t.Errorf("coord lock old in a full lock dir: exit %d, token %d; want 0 and a token:\n%s", code, old, out)
	}
	if got := fileSize(t, filler); got != fillerSize {
		t.Errorf("filler is %d bytes, was %d", got, fillerSize)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code, out := w.runCoord("lock", "new", "--", "sh", "-c", `echo $COORD_FENCING_TOKEN > tok`); code != 0 || mustInt(t, w.path("tok")) < start {
		t.Errorf("coord lock new once there is space: exit %d, token file %q; want 0 and a first token, at least the clock %d µs:\n%s", code, readFile(t, w.path("tok")), start, out)
	}
	if code, out := w.runCoord("lock", "old", "--", "sh", "-c", `echo $COORD_FENCING_TOKEN > tok`); code != 0 || mustInt(t, w.path("tok")) <= old {
		t.Errorf("coord lock old once there is space: exit %d, token file %q; want 0 and a token above %d:\n%s", code, readFile(t, w.path("tok")), old, out)
	}
}

// 3. The file system of DEST's parent fills up while the command
// downloads. coord exits with the command's status, removes the staging
// directory (which frees the space), leaves an incomplete DEST and a
// complete sibling as they were, and the next attempt succeeds. A command
// that fills the disk and still exits 0 leaves no room for the completion
// marker: exit 70, naming the marker, nothing published.
func TestFSDownloadStagingFull(t *testing.T) {
	w := newWorld(t, fileBackend())
	parent := w.path("tc")
	mountTmpfs(t, parent, "size=256k")
	dest, sibling := filepath.Join(parent, "dl"), filepath.Join(parent, "other")
	writeFile(t, filepath.Join(dest, "keep"), "half of an old download\n")
	writeFile(t, filepath.Join(sibling, "file"), "other toolchain\n")
	writeFile(t, filepath.Join(sibling, coord.MarkerName), "{}")
	free := freeBytes(t, parent)

	// cat stops at the full disk and exits 1.
	code, out := w.runCoord("download", "tc", dest, "--", "sh", "-c", `echo cat >> runs; cat /dev/zero > "$COORD_DEST/blob"`)
	if code != 1 || !strings.Contains(out, "No space left on device") {
		t.Fatalf("download that hit a full disk: exit %d; want 1, the command's:\n%s", code, out)
	}
	if n := len(lines(t, w.path("runs"))); n != 1 {
		t.Fatalf("the command ran %d times, want 1", n)
	}
	checkParent := func(want ...string) {
		t.Helper()
		if got := dirNames(t, parent); !slices.Equal(got, want) {
			t.Errorf("%s holds %q; want %q (no staging directory left)", parent, got, want)
		}
	}
	checkParent("dl", "other")
	if got := dirNames(t, dest); !slices.Equal(got, []string{"keep"}) || coord.IsComplete(dest) {
		t.Errorf("incomplete dest now holds %q; want it untouched", got)
	}
	checkSibling(t, sibling)
	if got := freeBytes(t, parent); got != free {
		t.Errorf("%d bytes free after the failed download, %d before: the staging data was not removed", got, free)
	}

	// Filled to the last byte, then exit 0: no room for the marker.
	code, out = w.runCoord("download", "tc", dest, "--", "sh", "-c", `cat /dev/zero > "$COORD_DEST/blob"; exit 0`)
	line := oneErrorLine(t, out)
	if code != 70 || !strings.Contains(line, "write marker") || !strings.Contains(line, "no space left on device") {
		t.Errorf("download whose marker found no space: exit %d, %q; want 70 and one line about the marker", code, line)
	}
	checkParent("dl", "other")
	if got := dirNames(t, dest); !slices.Equal(got, []string{"keep"}) || coord.IsComplete(dest) {
		t.Errorf("incomplete dest now holds %q; want it untouched", got)
	}

	// There is space again: the next attempt publishes, and the old
	// incomplete dest is moved aside, not lost.
	code, out = w.runCoord("download", "tc", dest, "--", "sh", "-c", `echo payload > "$COORD_DEST/file"`)
	if code != 0 || !coord.IsComplete(dest) || string(readFile(t, filepath.Join(dest, "file"))) != "payload\n" {
		t.Fatalf("download once there is space: exit %d, complete %v; want 0 and the payload in dest:\n%s", code, coord.IsComplete(dest), out)
	}
	var aside string
	for _, n := range dirNames(t, parent) {
		if strings.HasPrefix(n, "dl.coord-replaced-") {
			aside = filepath.Join(parent, n)
		}
	}
	if aside == "" || string(readFile(t, filepath.Join(aside, "keep"))) != "half of an old download\n" {
		t.Errorf("the old incomplete dest was not kept aside: %q", dirNames(t, parent))
	}
	checkSibling(t, sibling)
}

// 4. DEST on another file system than its parent, where the staging
// directory goes. A DEST that is a mount point is refused before anything
// runs (exit 64, one line saying why), its content kept; once complete it
// is used as it is. A DEST whose parent is a symbolic link to another file
// system stages beside it, on that file system, and publishes.
func TestFSDestOtherFileSystem(t *testing.T) {
	w := newWorld(t, fileBackend())
	dest := w.path("tc/dl")
	mountTmpfs(t, dest, "size=256k")
	writeFile(t, filepath.Join(dest, "keep"), "mounted content\n")

	code, out := w.runCoord("download", "tc", dest, "--", "sh", "-c", `echo ran >> runs; echo x > "$COORD_DEST/f"`)
	line := oneErrorLine(t, out)
	if code != 64 || !strings.Contains(line, dest) || !strings.Contains(line, "mount point") {
		t.Errorf("download into a mount point: exit %d, %q; want 64 and one line naming it as a mount point", code, line)
	}
	if runs := lines(t, w.path("runs")); len(runs) > 0 {
		t.Errorf("the command ran %d times, want 0", len(runs))
	}
	if got := dirNames(t, dest); !slices.Equal(got, []string{"keep"}) {
		t.Errorf("mounted dest holds %q; want its content untouched", got)
	}
	if got := dirNames(t, w.path("tc")); !slices.Equal(got, []string{"dl"}) {
		t.Errorf("%s holds %q; want dest alone", w.path("tc"), got)
	}
	// A mounted, complete toolchain is used, not refused.
	writeFile(t, filepath.Join(dest, coord.MarkerName), "{}")
	if code, out := w.runCoord("download", "tc", dest, "--", "sh", "-c", `echo ran >> runs`); code != 0 || len(lines(t, w.path("runs"))) != 0 {
		t.Errorf("download of a complete mounted dest: exit %d; want 0 without running the command:\n%s", code, out)
	}

	// The parent is a symbolic link to another file system.
	other := w.path("other")
	mountTmpfs(t, other, "size=256k")
	if err := os.Symlink(other, w.path("link")); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(w.path("link"), "dl")
	if code, out := w.runCoord("download", "tc2", linked, "--", "sh", "-c", `echo payload > "$COORD_DEST/f"`); code != 0 {
		t.Fatalf("download below a symlinked parent: exit %d; want 0:\n%s", code, out)
	}
	if got := dirNames(t, other); !slices.Equal(got, []string{"dl"}) || !coord.IsComplete(filepath.Join(other, "dl")) {
		t.Errorf("%s holds %q, complete %v; want the complete dest alone", other, got, coord.IsComplete(filepath.Join(other, "dl")))
	}
	// An incomplete dest there (an empty directory) is no mount point: it
	// is replaced.
	if err := os.Mkdir(filepath.Join(other, "dl3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, out := w.runCoord("download", "tc3", filepath.Join(w.path("link"), "dl3"), "--", "sh", "-c", `echo payload > "$COORD_DEST/f"`); code != 0 || !coord.IsComplete(filepath.Join(other, "dl3")) {
		t.Fatalf("download into an incomplete dest below a symlinked parent: exit %d; want 0 and a complete dest:\n%s", code, out)
	}
}

// fileBackend is the file backend of the contract suite.
func fileBackend() *backend {
	for _, be := range backends {
		if !be.etcd() {
			return be
		}
	}
	panic("no file backend")
}

// mountTmpfs mounts a tmpfs with options opts at dir, creating dir, and
// unmounts it when the test ends. It skips the test where mounting is not
// permitted.
func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			t.Skipf("mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN): %v", err)
		}
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			// Still busy (a process the test failed to end): detach it, so
			// that nothing stays mounted.
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// remount makes the mount at dir read-only (flags MS_RDONLY) or writable
// again (0).
func remount(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV|flags, ""); err != nil {
		t.Fatalf("remount %s: %v", dir, err)
	}
}

// fill writes a file in dir until the file system is full and returns its
// path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bfree * uint64(st.Bsize)
}

// oneErrorLine returns coord's error line from out, failing the test unless
// there is exactly one and no panic. Log lines (coord: warning: ...) are
// not error lines.
func oneErrorLine(t *testing.T, out string) string {
	t.Helper()
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("coord panicked:\n%s", out)
	}
	var found []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "coord: ") && !strings.HasPrefix(l, "coord: warning: ") &&
			!strings.HasPrefix(l, "coord: info: ") && !strings.HasPrefix(l, "coord: debug: ") {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Errorf("want one error line from coord, got %d:\n%s", len(found), out)
		return ""
	}
	return found[0]
}

func checkSibling(t *testing.T, dir string) {
	t.Helper()
	if got := dirNames(t, dir); !slices.Equal(got, []string{coord.MarkerName, "file"}) || string(readFile(t, filepath.Join(dir, "file"))) != "other toolchain\n" {
		t.Errorf("the complete sibling %s changed: %q", dir, got)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// 5. A lock directory on a network-like file system: coord warns that file
// locks there may exclude this host only. The file system is a FUSE mount
// served by this test (a directory that stays empty), which statfs reports
// as FUSE, as it would sshfs or a FUSE NFS client; NFS and SMB themselves
// are told apart by the same statfs check (filelock's TestNetworkFS).
func TestFSNetworkLockDir(t *testing.T) {
	w := newWorld(t, fileBackend())
	mountFuse(t, w.dir)
	code, out := w.runCoord("--log-level", "warn", "status")
	if code != 0 || !strings.Contains(out, "network file system") || !strings.Contains(out, "fs=fuse)") {
		t.Errorf("coord status with the lock dir on FUSE: exit %d; want 0 and a warning naming the fuse file system:\n%s", code, out)
	}
	// And none on a local file system.
	w2 := newWorld(t, fileBackend())
	if code, out := w2.runCoord("status"); code != 0 || strings.Contains(out, "network file system") {
		t.Errorf("coord status with a local lock dir: exit %d; want 0 and no warning:\n%s", code, out)
	}
}

// mountFuse mounts at dir an empty, writable-looking directory served by
// a FUSE server in this process, which answers only what opening, checking
// and listing a lock directory asks (INIT, GETATTR, ACCESS, OPENDIR,
// READDIR, STATFS, RELEASEDIR) and refuses the rest. It is unmounted when
// the test ends; the test skips where FUSE cannot be mounted.
func mountFuse(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40755,user_id=0,group_id=0,allow_other", fd)
	if err := syscall.Mount("coordtest", dir, "fuse.coordtest", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		syscall.Close(fd)
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENODEV) {
			t.Skipf("mounting FUSE is not permitted here: %v", err)
		}
		t.Fatalf("mount fuse at %s: %v", dir, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveFuse(fd)
	}()
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		syscall.Close(fd) // ends the server's read
		<-done
	})
}

// FUSE opcodes and sizes (linux/fuse.h) that serveFuse needs.
const (
	fuseLookup       = 1
	fuseForget       = 2
	fuseGetattr      = 3
	fuseStatfs       = 17
	fuseInit         = 26
	fuseOpendir      = 27
	fuseReaddir      = 28
	fuseReleasedir   = 29
	fuseAccess       = 34
	fuseInterrupt    = 36
	fuseDestroy      = 38
	fuseBatchForget  = 42
	fuseInHeaderSize = 40
)

// serveFuse answers requests on fd until it is closed or unmounted.
func serveFuse(fd int) {
	buf := make([]byte, 1<<17+4096)
	le := binary.LittleEndian
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR || err == syscall.ENOENT { // ENOENT: an interrupted request
			continue
		}
		if err != nil || n < fuseInHeaderSize {
			return // ENODEV once unmounted, EBADF once closed
		}
		op, unique := le.Uint32(buf[4:]), le.Uint64(buf[8:])
		var body []byte
		errno := int32(0)
		switch op {
		case fuseForget, fuseBatchForget, fuseInterrupt:
			continue // no reply
		case fuseInit: // fuse_init_out; flags 0: flock stays with the kernel
			body = make([]byte, 64)
			le.PutUint32(body[0:], 7)     // major
			le.PutUint32(body[4:], 31)    // minor
			le.PutUint16(body[16:], 1)    // max_background
			le.PutUint16(body[18:], 1)    // congestion_threshold
			le.PutUint32(body[20:], 4096) // max_write
			le.PutUint32(body[24:], 1)    // time_gran
			le.PutUint16(body[28:], 1)    // max_pages
		case fuseGetattr: // fuse_attr_out: the root, a directory
			body = make([]byte, 104)
			attr := body[16:]
			le.PutUint64(attr[0:], 1)        // ino
			le.PutUint32(attr[60:], 0o40755) // mode
			le.PutUint32(attr[64:], 2)       // nlink
			le.PutUint32(attr[80:], 4096)    // blksize
		case fuseStatfs: // fuse_statfs_out
			body = make([]byte, 80)
			le.PutUint64(body[0:], 1000)  // blocks
			le.PutUint64(body[8:], 1000)  // bfree
			le.PutUint64(body[16:], 1000) // bavail
			le.PutUint32(body[40:], 4096) // bsize
			le.PutUint32(body[44:], 255)  // namelen
			le.PutUint32(body[48:], 4096) // frsize
		case fuseOpendir:
			body = make([]byte, 16)
		case fuseReaddir, fuseReleasedir, fuseAccess, fuseDestroy:
			// READDIR with no entries: the end of an empty directory.
		default:
			errno = -int32(syscall.ENOSYS)
			if op == fuseLookup { // nothing in here
				errno = -int32(syscall.ENOENT)
			}
		}
		out := make([]byte, 16+len(body))
		le.PutUint32(out[0:], uint32(len(out)))
		le.PutUint32(out[4:], uint32(errno))
		le.PutUint64(out[8:], unique)
		copy(out[16:], body)
		if _, err := syscall.Write(fd, out); err != nil && err != syscall.ENOENT {
			return
		}
		if op == fuseDestroy {
			return
		}
	}
}
