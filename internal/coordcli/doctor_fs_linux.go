package coordcli

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fsNames names the file systems by statfs(2)'s magic number; network
// marks those where a file lock may exclude only this host.
var fsNames = map[int64]struct {
	name    string
	network bool
}{
	unix.EXT4_SUPER_MAGIC:      {"ext4", false}, // ext2 and ext3 too
	unix.XFS_SUPER_MAGIC:       {"xfs", false},
	unix.BTRFS_SUPER_MAGIC:     {"btrfs", false},
	unix.TMPFS_MAGIC:           {"tmpfs", false},
	unix.RAMFS_MAGIC:           {"ramfs", false},
	unix.OVERLAYFS_SUPER_MAGIC: {"overlay", false},
	unix.F2FS_SUPER_MAGIC:      {"f2fs", false},
	unix.MSDOS_SUPER_MAGIC:     {"vfat", false},
	unix.SQUASHFS_MAGIC:        {"squashfs", false},
	0x2fc12fc1:                 {"zfs", false},
	unix.NFS_SUPER_MAGIC:       {"nfs", true},
	unix.SMB_SUPER_MAGIC:       {"smb", true},
	unix.SMB2_SUPER_MAGIC:      {"smb2", true},
	unix.CIFS_SUPER_MAGIC:      {"cifs", true},
	unix.FUSE_SUPER_MAGIC:      {"fuse", true},
	unix.CEPH_SUPER_MAGIC:      {"ceph", true},
	unix.AFS_SUPER_MAGIC:       {"afs", true},
	unix.CODA_SUPER_MAGIC:      {"coda", true},
	unix.V9FS_MAGIC:            {"9p", true},
	0x47504653:                 {"gpfs", true},
	0x0bd00bd0:                 {"lustre", true},
}

// statFS reads statfs(2) for dir.
func statFS(dir string) (fsInfo, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fsInfo{}, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	info := fsInfo{
		free:  st.Bavail * uint64(st.Bsize),
		total: st.Blocks * uint64(st.Bsize),
		known: true,
	}
	magic := int64(st.Type)
	if n, ok := fsNames[magic]; ok {
		info.typ, info.network = n.name, n.network
	} else {
		info.typ = "0x" + strconv.FormatInt(magic, 16)
	}
	info.nfs = magic == unix.NFS_SUPER_MAGIC
	return info, nil
}

// mountOf finds the mount that holds dir (a path without symbolic links)
// in /proc/mounts: the last of those with the longest mount point that is
// dir or an ancestor of it.
func mountOf(dir string) (mountInfo, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return mountInfo{}, err
	}
	defer f.Close()
	var best mountInfo
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 4 {
			continue
		}
		point := unescapeMount(fields[1])
		if !within(dir, point) || len(point) < len(best.point) {
			continue
		}
		best = mountInfo{point: point, source: unescapeMount(fields[0]), typ: fields[2], options: strings.Split(fields[3], ",")}
	}
	if err := s.Err(); err != nil {
		return mountInfo{}, err
	}
	if best.point == "" {
		return mountInfo{}, os.ErrNotExist
	}
	return best, nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// unescapeMount undoes /proc/mounts's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
