package filelock

import (
	"bufio"
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockTable is the kernel's list of flock locks, from /proc/locks.
type lockTable map[fileKey][]lockEntry

type fileKey struct {
	major, minor uint32
	ino          uint64
}

type lockEntry struct {
	pid     int
	shared  bool
	waiting bool
}

// readLockTable reads /proc/locks until two reads agree (at most four) and
// merges what they saw. The kernel serves the file a page per read and lets
// go of its lists in between: a lock released meanwhile shifts the rest,
// and a lock listed after it can slip out of that read, which would show a
// held lock as free. Two equal reads saw no change; otherwise a lock held
// throughout is missed only if that happened to it in every read. A lock
// released during the reads may still show as held, which a status can
// afford.
func readLockTable() lockTable {
	var t lockTable
	var last []byte
	for range 4 {
		b, err := os.ReadFile("/proc/locks")
		if err != nil {
			return nil
		}
		if bytes.Equal(b, last) {
			break
		}
		t, last = t.merge(parseLockTable(b)), b
	}
	return t
}

// merge adds u's entries that t lacks to t, and returns t.
func (t lockTable) merge(u lockTable) lockTable {
	if t == nil {
		return u
	}
	for k, es := range u {
		for _, e := range es {
			if !slices.Contains(t[k], e) {
				t[k] = append(t[k], e)
			}
		}
	}
	return t
}

// parseLockTable reads lines such as
//
//	1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF
//	1: -> FLOCK  ADVISORY  READ 4243 fd:01:1234567 0 EOF
//
// and keeps the FLOCK ones; anything it does not understand is skipped.
func parseLockTable(b []byte) lockTable {
	t := lockTable{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		f = f[1:]
		var e lockEntry
		if f[0] == "->" {
			e.waiting, f = true, f[1:]
		}
		if len(f) < 5 || f[0] != "FLOCK" {
			continue
		}
		e.shared = f[2] == "READ"
		pid, err := strconv.Atoi(f[3])
		if err != nil {
			continue
		}
		e.pid = pid
		id := strings.Split(f[4], ":")
		if len(id) != 3 {
			continue
		}
		maj, err1 := strconv.ParseUint(id[0], 16, 32)
		mnr, err2 := strconv.ParseUint(id[1], 16, 32)
		ino, err3 := strconv.ParseUint(id[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		k := fileKey{uint32(maj), uint32(mnr), ino}
		t[k] = append(t[k], e)
	}
	return t
}

// lookup returns what the kernel knows of f. known is false when the table
// cannot tell: no /proc, or a file system whose device numbers in
// /proc/locks differ from stat's (btrfs subvolumes, overlayfs), which shows
// as no lock at all on f's device. A file on a device the table knows,
// without entries of its own, is free.
func (t lockTable) lookup(f *file) (entries []lockEntry, known bool) {
	if t == nil {
		return nil, false
	}
	if e, ok := t[statKey(f.dev, f.ino)]; ok {
		return e, true
	}
	maj, min := unix.Major(f.dev), unix.Minor(f.dev)
	for k := range t {
		if k.major == maj && k.minor == min {
			return nil, true
		}
	}
	return nil, false
}

// busyFiles reads the lock table and returns it with the names among ents
// that have an entry in it, locked or awaited; busy is nil when the table
// cannot tell for this directory, and then every file must be inspected.
//
// It first takes a shared lock on the directory itself, which puts an
// entry of ours in the table: if that entry shows the directory's own
// device and inode, the table numbers files as stat does here (not so on
// btrfs subvolumes and overlayfs), and one stat per file tells whether it
// is in the table.
func (l *Locker) busyFiles(ents []os.DirEntry) (_ lockTable, busy map[string]bool) {
	l.dirMu.RLock()
	defer l.dirMu.RUnlock()
	if l.dir == nil {
		return readLockTable(), nil
	}
	fd, err := unix.Openat(l.dir.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return readLockTable(), nil
	}
	defer unix.Close(fd) // releases the lock
	if unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) != nil {
		return readLockTable(), nil
	}
	t := readLockTable()
	if _, ok := t[statKey(l.dir.dev, l.dir.ino)]; !ok {
		return t, nil
	}
	busy = map[string]bool{}
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Fstatat(l.dir.fd, e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue // gone meanwhile
		}
		if _, ok := t[statKey(uint64(st.Dev), uint64(st.Ino))]; ok {
			busy[e.Name()] = true
		}
	}
	return t, busy
}

// statKey is the table's key of a file that stat numbers dev, ino.
func statKey(dev, ino uint64) fileKey {
	return fileKey{unix.Major(dev), unix.Minor(dev), ino}
}
