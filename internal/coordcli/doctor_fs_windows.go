package coordcli

import (
	"os"

	"golang.org/x/sys/windows"
)

// statFS asks Windows for the volume's file system, whether it is a
// network drive, and its free space.
func statFS(dir string) (fsInfo, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return fsInfo{}, err
	}
	var info fsInfo
	var free, total, totalFree uint64
	if err := windows.GetDiskFreeSpaceEx(p, &free, &total, &totalFree); err != nil {
		return fsInfo{}, &os.PathError{Op: "GetDiskFreeSpaceEx", Path: dir, Err: err}
	}
	info.free, info.total, info.known = free, total, true
	vol := make([]uint16, windows.MAX_PATH+1)
	if windows.GetVolumePathName(p, &vol[0], uint32(len(vol))) == nil {
		info.network = windows.GetDriveType(&vol[0]) == windows.DRIVE_REMOTE
		name := make([]uint16, windows.MAX_PATH+1)
		if windows.GetVolumeInformation(&vol[0], nil, 0, nil, nil, nil, &name[0], uint32(len(name))) == nil {
			info.typ = windows.UTF16ToString(name)
		}
	}
	return info, nil
}

// mountOf: Windows has no mount table of this kind.
func mountOf(string) (mountInfo, error) { return mountInfo{}, errNoMountTable }
