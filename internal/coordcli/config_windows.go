package coordcli

import (
	"io/fs"
	"os"
	"path/filepath"
)

// systemConfigFile is the config file for every user of the host.
func systemConfigFile() string {
	if dir := os.Getenv("ProgramData"); dir != "" {
		return filepath.Join(dir, "toolchainkit", configName)
	}
	return ""
}

// readableBy reports nothing on Windows: its mode bits do not say who may
// read a file, the file's ACL does.
func readableBy(fs.FileInfo) (group, others bool) { return false, false }
