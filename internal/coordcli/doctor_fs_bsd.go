//go:build darwin || freebsd

package coordcli

import (
	"os"

	"golang.org/x/sys/unix"
)

// statFS reads statfs(2) for dir; the type is the name the OS gives it.
func statFS(dir string) (fsInfo, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fsInfo{}, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	typ := unix.ByteSliceToString(st.Fstypename[:])
	info := fsInfo{
		typ:   typ,
		free:  uint64(st.Bavail) * uint64(st.Bsize),
		total: uint64(st.Blocks) * uint64(st.Bsize),
		known: true,
		nfs:   typ == "nfs",
	}
	switch typ {
	case "nfs", "smbfs", "afpfs", "webdav", "cifs", "fusefs", "osxfuse", "macfuse", "9p":
		info.network = true
	}
	return info, nil
}

// mountOf reads the mount from statfs(2): these systems have no
// /proc/mounts, and say only whether the mount is read-only.
func mountOf(dir string) (mountInfo, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return mountInfo{}, err
	}
	opt := "rw"
	if uint64(st.Flags)&unix.MNT_RDONLY != 0 {
		opt = "ro"
	}
	return mountInfo{
		point:   unix.ByteSliceToString(st.Mntonname[:]),
		source:  unix.ByteSliceToString(st.Mntfromname[:]),
		typ:     unix.ByteSliceToString(st.Fstypename[:]),
		options: []string{opt},
	}, nil
}
