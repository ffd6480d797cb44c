//go:build !windows

package wintest

// Wine reports whether this process runs under Wine: never off Windows.
func Wine() (version string, ok bool) { return "", false }
