//go:build unix

package coord

import (
	"path/filepath"

	"golang.org/x/sys/unix"
)

// mountPoint reports whether another file system is mounted at dir: Commit
// could not rename a staging directory into its place. A bind mount of the
// same file system is not told apart.
func mountPoint(dir string) bool {
	var st, parent unix.Stat_t
	// The parent may be a symbolic link to a directory elsewhere: compare
	// with the directory it leads to, where dir really is.
	if unix.Lstat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}
