//go:build !linux

package filelock

// lockTable is empty where the OS does not list file locks.
type lockTable struct{}

type lockEntry struct {
	pid     int
	shared  bool
	waiting bool
}

func readLockTable() lockTable { return lockTable{} }

func (lockTable) lookup(*file) ([]lockEntry, bool) { return nil, false }
