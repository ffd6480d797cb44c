package filelock

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestNetworkFS(t *testing.T) {
	for magic, want := range map[int64]string{
		unix.NFS_SUPER_MAGIC: "nfs", unix.CIFS_SUPER_MAGIC: "smb", unix.FUSE_SUPER_MAGIC: "fuse",
		unix.EXT4_SUPER_MAGIC: "", unix.TMPFS_MAGIC: "", unix.OVERLAYFS_SUPER_MAGIC: "", unix.BTRFS_SUPER_MAGIC: "",
	} {
		if got := networkFSName(magic); got != want {
			t.Errorf("networkFSName(%#x) = %q; want %q", magic, got, want)
		}
	}
	if got := networkFS(t.TempDir()); got != "" {
		t.Errorf("networkFS(temp dir) = %q; want a local file system", got)
	}
}
