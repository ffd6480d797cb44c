// Package wintest is what tests need to run on Windows under Wine (make
// test-windows runs run.sh, beside this file): it tells Wine from Windows,
// so that a test skips only what is Wine's fault, and works around the
// Wine fault that nearly every test meets.
package wintest

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// SkipUnderWine skips tb when it runs under Wine, saying why: a fault of
// Wine's, not of Windows'.
func SkipUnderWine(tb testing.TB, why string) {
	tb.Helper()
	if v, ok := Wine(); ok {
		tb.Skipf("under Wine %s: %s", v, why)
	}
}

// TempDir is tb.TempDir. Under Wine it also removes the directory itself
// before tb.TempDir's clean-up runs, one entry at a time with os.Remove:
// os.RemoveAll deletes with FileDispositionInformationEx (POSIX-semantics
// delete), which Wine 8's NtSetInformationFile lacks; it answers
// STATUS_NOT_IMPLEMENTED where Windows would answer that it does not support
// it, so Go does not fall back, and removing even a closed file fails with
// "Invalid function". os.Remove (DeleteFileW) works.
func TempDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if _, ok := Wine(); ok {
		tb.Cleanup(func() { RemoveAll(dir) })
	}
	return dir
}

// RemoveAll is os.RemoveAll, also under Wine (see TempDir): it removes the
// deepest entries first, each with os.Remove, and returns the first error.
func RemoveAll(path string) error {
	if _, ok := Wine(); !ok {
		return os.RemoveAll(path)
	}
	var paths []string
	filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return nil
	})
	var first error
	for _, p := range slices.Backward(paths) {
		if err := os.Remove(p); err != nil && first == nil && !os.IsNotExist(err) {
			first = err
		}
	}
	return first
}
