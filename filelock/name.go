package filelock

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// MaxNameLen is the longest lock name, in bytes, that a Locker accepts.
const MaxNameLen = 4096

const (
	fileSuffix = ".lock"
	// maxFileLen keeps file names well under the 255-byte limit of common
	// file systems, suffix and hash included.
	maxFileLen = 200
	keepLen    = 150 // bytes of the escaped name kept before the hash
)

// FileName maps a lock name to the name of its lock file: one path element,
// never "." or "..", without '/' or '\\', NUL or control bytes. The mapping is
// injective, also where the file system ignores case (NTFS, APFS as macOS
// formats it): bytes outside [a-z0-9_.+=@,-] (so upper-case letters too, and
// a leading '.') are written as %XX with upper-case hex digits, so distinct
// names give escaped forms that differ in more than case ("LLVM" is
// "%4C%4C%56%4D.lock", "llvm" is "llvm.lock"). An escaped form longer than
// 200 bytes is cut and followed by '~' and a SHA-256 of the whole name in
// lower-case hex, and '~' never occurs in an escaped form. Names that
// Windows reserves for devices (CON, nul, COM1, …) have their first byte
// escaped.
//
// Before upper-case letters were escaped, a name kept them as they were
// ("LLVM.lock"); a name without upper-case letters maps as it did.
func FileName(name string) (string, error) {
	return fileName(name, false)
}

// fileName is FileName; with legacy, upper-case letters are kept as they
// are, as FileName did before it escaped them.
func fileName(name string, legacy bool) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return "", fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidName, len(name), MaxNameLen)
	}
	esc := escape(name, legacy)
	if len(esc)+len(fileSuffix) > maxFileLen {
		cut := keepLen
		// Do not cut inside a %XX escape.
		if i := strings.LastIndexByte(esc[:cut], '%'); i >= cut-2 {
			cut = i
		}
		sum := sha256.Sum256([]byte(name))
		esc = esc[:cut] + "~" + hex.EncodeToString(sum[:16])
	}
	return esc + fileSuffix, nil
}

// escape is fileName's escaped form of name, before any shortening.
func escape(name string, legacy bool) string {
	var b strings.Builder
	b.Grow(len(name) + len(fileSuffix))
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (safeByte(c) || legacy && isUpper(c)) && !(i == 0 && (c == '.' || reservedOnWindows(name))) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// nameFromFile undoes FileName for display. A shortened name comes back as
// its kept prefix followed by "…"; ok is false for a file name that FileName
// cannot have produced, now or before it escaped upper-case letters (see
// FileName), so that Prune also finds the files of older coords.
func nameFromFile(file string) (name string, ok bool) {
	esc, found := strings.CutSuffix(file, fileSuffix)
	if !found || esc == "" {
		return "", false
	}
	esc, sum, hashed := strings.Cut(esc, "~")
	var b strings.Builder
	for i := 0; i < len(esc); i++ {
		c := esc[i]
		if c != '%' {
			if !safeByte(c) && !isUpper(c) {
				return "", false
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(esc) {
			return "", false
		}
		v, err := hex.DecodeString(esc[i+1 : i+3])
		if err != nil {
			return "", false
		}
		b.WriteByte(v[0])
		i += 2
	}
	name = b.String()
	// Only FileName's own spellings count: a file planted as "%61.lock"
	// or "%2f.lock" must not pass for the lock "a" or "/".
	if !hashed {
		for _, legacy := range []bool{false, true} {
			if f, err := fileName(name, legacy); err == nil && f == file {
				return name, true
			}
		}
		return "", false
	}
	if escape(name, false) != esc && escape(name, true) != esc ||
		len(esc) < keepLen-2 || len(esc) > keepLen ||
		len(sum) != 32 || strings.Trim(sum, "0123456789abcdef") != "" {
		return "", false
	}
	return name + "…", true
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

func safeByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("_.+=@,-", c) >= 0
}

// reservedOnWindows reports whether name, up to its first '.', is a device
// name that Windows resolves in every directory.
func reservedOnWindows(name string) bool {
	base, _, _ := strings.Cut(name, ".")
	switch strings.ToUpper(base) {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	if len(base) == 4 {
		p := strings.ToUpper(base[:3])
		return (p == "COM" || p == "LPT") && base[3] >= '0' && base[3] <= '9'
	}
	return false
}
