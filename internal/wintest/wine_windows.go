package wintest

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

// Wine reports whether this process runs under Wine, and Wine's version,
// from ntdll's wine_get_version: Wine's own export, absent on Windows.
func Wine() (version string, ok bool) {
	p := windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version")
	if p.Find() != nil {
		return "", false
	}
	r, _, _ := p.Call() // a static C string of Wine's
	return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&r))), true
}
