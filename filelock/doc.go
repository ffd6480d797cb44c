// Package filelock is coord's file backend: flock(2) locks (LockFileEx on
// Windows) on one file per lock name in a lock directory, with what
// github.com/gofrs/flock lacks: waits that the kernel wakes and a context
// can abandon, names mapped safely to files, holder records, fencing tokens.
//
// It calls flock(2) itself rather than through gofrs/flock, whose Unlock
// closes the file (every Lock reopens it), whose blocking Lock cannot be
// abandoned (TryLockContext polls instead), which opens by path following
// symbolic links, and which does not expose the descriptor that records,
// tokens and inheritance need. gofrs/flock remains the benchmark anchor.
//
// Each lock file holds, after byte 0 (the byte Windows locks), the last
// fencing token handed out and the current exclusive holder's record with a
// CRC, so that other processes can read who holds the lock while it is held
// and never mistake a half-written record for a whole one.
//
// Only Prune deletes lock files, and only one it holds: a process that
// deleted a file someone held could let the holder of the old file and a
// newcomer on a new file both "hold" the lock. Every Lock checks, once
// granted, that the path still names the file it locked, and starts over
// on the file now there if not, so a waiter on a removed file never holds
// it. Never delete lock files with rm: use Prune (`coord gc`). Someone may
// still delete them (rm -rf of the lock
// directory in a cache clean-up): a Lock whose file is unlinked or replaced,
// or whose directory is removed or moved, while it is held reports it on
// its Lost channel, which a watcher per Locker closes. The watcher runs only
// while the Locker holds a lock; on Linux inotify wakes it within
// milliseconds (with a check every second for what inotify does not see, a
// parent directory moved), elsewhere it checks every 100 ms. It cannot
// keep the next process out meanwhile. The Locker's next Lock then opens
// the directory anew at its path. Files are opened relative to the
// lock directory without following symbolic links, and a file with more
// than one hard link is refused, so a planted link cannot make a lock
// write elsewhere.
//
// Fencing tokens: the last one handed out lives in the lock file; the next
// exclusive holder gets one more, or the wall clock in microseconds if that
// is more. A file made anew (after a deletion) therefore starts above every
// token the old one handed out, which cannot have run ahead of the clock:
// each grant takes more than a microsecond. This holds as long as the
// clock does not step back by more than the time since the last grant.
//
// Limits: locks exclude processes on one host. On NFS, flock is emulated
// with byte-range locks and may be host-local (local_lock=flock, nolock)
// without any error; tokens rely on one host's clock.
package filelock
