package coordcli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/filelock"
)

// Free space under which the lock directory's file system gets a warning:
// under lowSpacePercent of it, or under lowSpace on one of twice that size
// or more (a small file system of its own may be nearly empty and still
// under lowSpace). coord's files are small, but a full file system refuses
// new lock files and records, and downloads often share it.
const (
	lowSpace        = 1 << 30 // bytes
	lowSpacePercent = 5
)

// fsInfo is what the OS says about the file system holding a directory.
type fsInfo struct {
	typ     string // ext4, tmpfs, nfs, fuse, …; "" if unknown
	network bool   // a file system where a lock may exclude only this host
	nfs     bool
	// free and total are bytes; known says they were read.
	free, total uint64
	known       bool
}

// mountInfo is the mount holding a directory, from the OS's mount table.
type mountInfo struct {
	point, source, typ string
	options            []string
}

// errNoMountTable says that this OS has no /proc/mounts to read.
var errNoMountTable = errors.New("no mount table on this OS")

// dirChecks checks the lock directory: its file system, the mount holding
// it, a probe lock taken and removed there, the free space, and who may
// change its files.
func dirChecks(ctx context.Context, dir string, r *report) {
	if dir == "" {
		d, err := coord.DefaultLockDir()
		if err != nil {
			r.add("lock-dir", checkFail, fmt.Sprintf("no lock directory: %v", err), "set --"+flagLockDir+" or "+envLockDir)
			return
		}
		dir = d
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	// Until the probe creates it, the directory may not exist: its
	// nearest existing ancestor is on the file system it would be on.
	at := dir
	for {
		if _, err := os.Stat(at); err == nil || filepath.Dir(at) == at {
			break
		}
		at = filepath.Dir(at)
	}
	if real, err := filepath.EvalSymlinks(at); err == nil {
		at = real
	}
	info, err := statFS(at)
	m, merr := mountOf(at)
	if m.typ != "" && (info.typ == "" || strings.HasPrefix(m.typ, info.typ)) {
		info.typ = m.typ // nfs4, fuse.sshfs: more precise than the magic number
	}
	switch {
	case err != nil:
		r.add("lock-dir fs", checkWarn, fmt.Sprintf("%s: file system unknown: %v", dir, bareError(err)), "")
	default:
		judgeFS(dir, info, m, r)
	}
	switch {
	case errors.Is(merr, errNoMountTable):
		r.skip("lock-dir mount", "%s", merr)
	case merr != nil:
		r.add("lock-dir mount", checkWarn, fmt.Sprintf("mount of %s unknown: %v", dir, merr), "")
	case slices.Contains(m.options, "ro"):
		r.add("lock-dir mount", checkFail, fmt.Sprintf("%s on %s type %s (%s): mounted read-only", m.source, m.point, m.typ, strings.Join(m.options, ",")),
			"remount it read-write, or choose a writable --"+flagLockDir+" ("+envLockDir+")")
	default:
		r.pass("lock-dir mount", "%s on %s type %s (%s)", m.source, m.point, m.typ, strings.Join(m.options, ","))
	}
	probeDir(ctx, dir, r)
	if err == nil {
		spaceCheck(dir, info, r)
	}
	if warn, fix := dirPermissions(dir); warn != "" {
		r.add("lock-dir permissions", checkWarn, warn, fix)
	} else if _, err := os.Stat(dir); err == nil {
		r.pass("lock-dir permissions", "%s", permissionsOK(dir))
	}
}

// judgeFS says whether file locks in dir exclude every process that uses
// it: they do on a local file system; on NFS with local_lock=all or flock,
// or nolock, flock is host-local; elsewhere on a network (or FUSE) file
// system nobody can tell from here.
func judgeFS(dir string, info fsInfo, m mountInfo, r *report) {
	const name = "lock-dir fs"
	typ := cmp.Or(info.typ, "unknown")
	hasOpt := func(opts ...string) string {
		for _, o := range opts {
			if slices.Contains(m.options, o) {
				return o
			}
		}
		return ""
	}
	etcdFix := "use the etcd backend (--" + flagBackend + " etcd, --" + flagEndpoints + ") to coordinate hosts"
	switch {
	case info.nfs && hasOpt("local_lock=all", "local_lock=flock", "nolock") != "":
		r.add(name, checkFail,
			fmt.Sprintf("%s is on %s mounted with %s: flock there is host-local, processes on other hosts are not excluded", dir, typ, hasOpt("local_lock=all", "local_lock=flock", "nolock")),
			"remount without local_lock=all/flock and nolock (with a lock manager: NFSv4, or NFSv3 with lockd), or "+etcdFix)
	case info.network:
		r.add(name, checkWarn,
			fmt.Sprintf("%s is on %s, a network or FUSE file system: coord cannot prove that its file locks exclude processes on other hosts", dir, typ),
			"run `coord doctor --pair ID` at the same time on two hosts that share it, or "+etcdFix)
	default:
		r.pass(name, "%s is on %s, a local file system: its locks exclude every process on this host", dir, typ)
	}
}

// probeDir creates, locks, unlocks and removes a lock file, as coord does.
func probeDir(ctx context.Context, dir string, r *report) {
	const name = "lock-dir probe"
	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, fs.ErrNotExist)
	host, _ := os.Hostname()
	lock := "coord-doctor-" + strconv.Itoa(os.Getpid())
	file, _ := filelock.FileName(lock)
	l, err := filelock.New(dir)
	if err != nil {
		r.add(name, checkFail, fmt.Sprintf("cannot open %s: %v", dir, bareError(err)), probeFix(err, dir))
		return
	}
	defer l.Close()
	k, err := l.TryLock(ctx, lock, filelock.Exclusive, fmt.Appendf(nil, `{"host":%q,"pid":%d,"cmd":["coord","doctor"]}`, host, os.Getpid()))
	if err != nil {
		r.add(name, checkFail, fmt.Sprintf("cannot create and lock %s: %v", filepath.Join(dir, file), bareError(err)), probeFix(err, dir))
		return
	}
	if err := k.Unlock(); err != nil {
		r.add(name, checkFail, fmt.Sprintf("cannot unlock %s: %v", filepath.Join(dir, file), bareError(err)), probeFix(err, dir))
		return
	}
	if err := os.Remove(filepath.Join(dir, file)); err != nil {
		r.add(name, checkFail, fmt.Sprintf("cannot remove %s: %v", filepath.Join(dir, file), bareError(err)), probeFix(err, dir))
		return
	}
	msg := "created, locked, unlocked and removed " + file
	if created {
		msg = "created " + dir + " (as coord does on first use), then " + msg
	}
	r.pass(name, "%s", msg)
}

// probeFix is what to do when the probe met err.
func probeFix(err error, dir string) string {
	other := "or choose another --" + flagLockDir + " (" + envLockDir + ")"
	switch {
	case errors.Is(err, syscall.EROFS):
		return "the file system is read-only: remount it read-write, " + other
	case errors.Is(err, fs.ErrPermission):
		return "let this user create files in " + dir + " (chown, or chmod g+w for a shared group), " + other
	case errors.Is(err, syscall.ENOLCK), errors.Is(err, errors.ErrUnsupported):
		return "the file system does not support file locks: " + other
	case errors.Is(err, filelock.ErrUnsafeFile):
		return "remove what is in the way (a link or special file), " + other
	}
	return other
}

// spaceCheck warns when the file system is nearly full.
func spaceCheck(dir string, info fsInfo, r *report) {
	const name = "lock-dir space"
	if !info.known {
		r.skip(name, "free space unknown on this OS")
		return
	}
	pct := 100.0
	if info.total > 0 {
		pct = float64(info.free) * 100 / float64(info.total)
	}
	msg := fmt.Sprintf("%s free of %s (%.0f%%)", bytesText(info.free), bytesText(info.total), pct)
	switch {
	case info.free == 0:
		r.add(name, checkFail, msg+": no lock file or record can be written", "free space on the file system of "+dir)
	case pct < lowSpacePercent || info.free < lowSpace && info.total >= 2*lowSpace:
		r.add(name, checkWarn, fmt.Sprintf("%s: under %d%%, or under %s", msg, lowSpacePercent, bytesText(lowSpace)), "free space on the file system of "+dir)
	default:
		r.pass(name, "%s", msg)
	}
}

// bytesText is n in binary units: "812 MiB", "1.5 GiB".
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v >= 100 || v == float64(int64(v)) {
		return fmt.Sprintf("%.0f %ciB", v, "KMGTP"[exp])
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[exp])
}
