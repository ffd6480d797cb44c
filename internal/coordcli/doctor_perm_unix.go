//go:build unix

package coordcli

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// dirPermissions warns when anyone on the host may delete or replace the
// lock directory's files: it is writable by all and not sticky.
func dirPermissions(dir string) (warn, fix string) {
	fi, err := os.Stat(dir)
	if err != nil {
		return "", ""
	}
	m := fi.Mode()
	if m.Perm()&0o002 != 0 && m&os.ModeSticky == 0 {
		return fmt.Sprintf("%s is writable by every user (mode %04o) and not sticky: anyone on this host can remove or replace lock files that others hold", dir, m.Perm()),
			"chmod +t " + dir + " (or o-w and share it through a group: chgrp GROUP, chmod g+ws)"
	}
	return "", ""
}

// permissionsOK says who owns the directory and its mode.
func permissionsOK(dir string) string {
	fi, err := os.Stat(dir)
	if err != nil {
		return dir
	}
	owner := "?"
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = strconv.FormatUint(uint64(st.Uid), 10)
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
	}
	return fmt.Sprintf("%s: owner %s, mode %04o%s", dir, owner, fi.Mode().Perm(), sticky(fi.Mode()))
}

func sticky(m os.FileMode) string {
	if m&os.ModeSticky != 0 {
		return " (sticky)"
	}
	return ""
}
