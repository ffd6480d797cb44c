// Package coord keeps processes from trampling shared toolchain storage:
// cross-process locks (exclusive or shared, with timeouts and fencing
// tokens) and download coordination (of all processes that ask for one
// toolchain at one destination, exactly one downloads; the others wait and
// then use it).
//
// A Manager hands out locks from one backend, chosen at run time by Config:
// flock(2) lock files on one machine (package filelock), or etcd for fleets.
// A configured etcd that cannot be reached is an error
// (ErrBackendUnavailable), never a silent fall back to host-local locks.
//
// # Guarantees and their limits
//
// Mutual exclusion: on the file backend, between all processes of one host
// that use the same lock directory. A lock is released by the kernel when
// its holder dies, however it dies. On NFS a file lock excludes other hosts
// only if the mount forwards locks to the server (not with local_lock=flock
// or nolock); use etcd to exclude across hosts.
//
// Fencing tokens: every exclusive holder of a name gets a token greater than
// all earlier holders'; on the file backend also after the lock file or its
// directory was deleted, as long as the host's clock does not step back (a
// token is never below the wall clock in microseconds). The lock alone cannot stop a holder that was paused
// (a GC pause, SIGSTOP, a slow disk) from acting after it lost the lock; a
// resource that refuses a token lower than one it has seen can.
//
// Lost: Lock.Lost is closed when the lock may no longer be held. A file lock
// is lost when its lock file is unlinked or replaced, or the lock directory
// removed or moved, while it is held: the next process locks a new file.
// The holder learns it within milliseconds on Linux (inotify), within
// 100 ms elsewhere, but by then another process may already hold the lock:
// deleting lock files under holders is a fault, not a way to break locks.
//
// Downloads: a destination is complete exactly when it holds MarkerName,
// which Commit puts there with the same rename that makes the destination
// appear, so no reader ever sees a half-written destination.
//
// Clean-up: Manager.GC removes idle lock files, each only while it holds
// it, and the leftovers of downloads (stale staging directories,
// destinations moved aside, etcd records whose destination lost its
// marker) when asked. It finds leftovers only beside destinations that a
// toolchain lock file's last record or an etcd download record names: the
// staging directories of a download that died before any download of its
// id committed on etcd are removed by the next downloader only.
package coord
