//go:build !unix

package coord

// mountPoint reports false: a mount point is not told from a directory here.
func mountPoint(string) bool { return false }
