//go:build !windows

package coordcli

import "io/fs"

// systemConfigFile is the config file for every user of the host.
func systemConfigFile() string { return "/etc/toolchainkit/" + configName }

// readableBy reports whether the file's group, and everyone else, may
// read it.
func readableBy(fi fs.FileInfo) (group, others bool) {
	perm := fi.Mode().Perm()
	return perm&0o040 != 0, perm&0o004 != 0
}
