package coord

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// MarkerName is the file that marks a destination directory as complete.
// Commit puts it in the staging directory before the rename, so a dest that
// exists with its marker is whole.
const MarkerName = ".coord-complete"

// DownloadCoordinator makes exactly one process download a toolchain while
// the others wait and then use it.
type DownloadCoordinator struct {
	m *Manager
}

// NewDownloadCoordinator returns a DownloadCoordinator over m's locks.
func NewDownloadCoordinator(m *Manager) *DownloadCoordinator {
	return &DownloadCoordinator{m: m}
}

// Download is one caller's part in a coordinated download.
type Download struct {
	m          *Manager
	id         string
	dest       string
	lock       *Lock  // nil when dest was already complete
	staging    string // "" unless this caller downloads
	allowEmpty bool   // see AllowEmpty

	mu        sync.Mutex
	committed bool
	closed    bool

	pmu  sync.Mutex // SetProgress's: the last report, for the rate
	last struct {
		done int64
		at   time.Time
		rate float64
	}
}

// Coordinate returns once dest is complete (ShouldDownload false) or this
// caller holds the toolchain lock of id and must download (ShouldDownload
// true). It never returns false while another caller is still downloading.
//
// A complete dest is recognised without any lock. Otherwise Coordinate takes
// the lock; if it is held, it waits in shared mode, so that every waiter
// wakes together when the downloader lets go, and returns if the download
// committed; if it did not (the downloader failed or died), the waiters
// queue for the lock and the first to get it downloads.
//
// The wait is bounded by opts (WithTimeout), or else by ctx's deadline, or
// else by ctx alone; it ends with a *TimeoutError. Whatever its bound, it
// also ends when the download it waits for stops making progress (see
// WithStallTimeout, by default DefaultStallTimeout): a waiter waits as
// long as a healthy download takes, and not much longer than the stall
// timeout for a hung one. Shared() is ignored. On any error nothing is
// held. A dest that is not complete and is a mount point is
// refused (ErrInvalidArgument): Commit could not rename anything into it.
func (c *DownloadCoordinator) Coordinate(ctx context.Context, id, dest string, opts ...LockOption) (*Download, error) {
	name, err := toolchainName(id)
	if err != nil {
		return nil, err
	}
	dest, err = c.m.checkDest(dest)
	if err != nil {
		return nil, err
	}
	r, err := newRequest(ctx, name, 0, opts) // its mode unused: Shared() is ignored
	if err != nil {
		return nil, err
	}
	d := &Download{m: c.m, id: id, dest: dest, allowEmpty: r.allowEmpty}
	if IsComplete(dest) {
		return d, nil
	}
	if mountPoint(dest) {
		// Refused before anything is downloaded: Commit would fail.
		return nil, fmt.Errorf("%w: destination %s is a mount point: a download is published by renaming a directory beside it into its place, which a mount point refuses; give a directory inside it", ErrInvalidArgument, dest)
	}
	// One bound for the whole of it: the first try, the wait for the
	// downloader and the queue after a download that failed.
	start := time.Now() // before the bound: Waited is never below it
	ctx, cancel := r.bound(ctx)
	defer cancel()
	l, err := c.m.grant(ctx, request{name: name, mode: exclusive, once: true})
	if errors.Is(err, errBusy) && !r.once {
		// Someone downloads: wait for them to finish, together with
		// everyone else who waits, while their download moves.
		wctx, stalled := c.m.watchStall(ctx, name, r.stall)
		if err = c.waitDownloader(wctx, id, name); err == nil {
			if IsComplete(dest) {
				stalled()
				return d, nil
			}
			l, err = c.m.grant(wctx, request{name: name, mode: exclusive})
		}
		if h, ok := stalled(); ok && err != nil {
			if IsComplete(dest) { // committed just as we gave up
				return d, nil
			}
			return nil, &TimeoutError{Name: name, Waited: time.Since(start), Holder: h, Stalled: r.stall}
		}
	}
	if timedOut(err) {
		if IsComplete(dest) { // committed just as we gave up
			return d, nil
		}
		return nil, c.m.timeoutError(ctx, r, start)
	}
	if err != nil {
		return nil, err
	}
	if IsComplete(dest) {
		// Completed between the check above and the lock: nothing to do.
		// The answer stands whatever the release says.
		c.m.release(l)
		return d, nil
	}
	d.lock = l
	if err := d.prepare(); err != nil {
		return nil, errors.Join(err, l.Unlock())
	}
	return d, nil
}

// waitDownloader waits until the downloader of id lets go of its lock: in
// shared mode, so that all waiters wake at once, and, where the backend
// records downloads, until the download is recorded as done, whichever
// comes first. ctx bounds the wait.
func (c *DownloadCoordinator) waitDownloader(ctx context.Context, id, name string) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		l   *Lock
		err error
	}
	granted := make(chan result, 1)
	go func() {
		l, err := c.m.grant(wctx, request{name: name, mode: shared})
		granted <- result{l, err}
	}()
	var done chan error
	if dl := c.m.records; dl != nil {
		done = make(chan error, 1)
		go func() { done <- dl.waitDone(wctx, id) }()
	}
	var r result
	select {
	case r = <-granted:
	case err := <-done:
		done = nil      // received
		if err != nil { // no record to wait for: the lock alone tells
			r = <-granted
			break
		}
		// Done: return now and let the shared wait end in the background
		// (taking back its etcd key is a request per waiter; waiting for
		// it would make the last of many waiters return late).
		cancel()
		c.m.background(func() {
			if r := <-granted; r.l != nil {
				c.m.release(r.l)
			}
		})
		return nil
	}
	cancel()
	if done != nil {
		<-done
	}
	if r.l != nil {
		// Granted: the downloader let go, which is all we waited for.
		c.m.release(r.l)
	}
	return r.err
}

// watchStall returns ctx, cancelled when the download that holds name has
// made no progress for d, as this process sees it: the holder's record
// kept one byte count (or none) for d. A new holder, or none, starts the
// clock again. stalled stops the watch and reports whether it fired, and
// the holder it saw last. d <= 0 watches nothing.
func (m *Manager) watchStall(ctx context.Context, name string, d time.Duration) (_ context.Context, stalled func() (*Holder, bool)) {
	ctx, cancel := context.WithCancel(ctx)
	if d <= 0 {
		return ctx, func() (*Holder, bool) { cancel(); return nil, false }
	}
	var last *Holder // written by the watch, read after done
	fired := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(min(max(d/10, 50*time.Millisecond), 5*time.Second))
		defer t.Stop()
		type seen struct { // a holder and its byte count; -1 for none
			host        string
			pid         int
			token, done int64
		}
		var prev seen
		moved := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			h := m.inspectQuick(ctx, name).Holder
			if ctx.Err() != nil {
				return
			}
			var now seen
			if h != nil {
				now = seen{h.Host, h.PID, h.Token, -1}
				if h.Progress != nil {
					now.done = h.Progress.Done
				}
			}
			if h == nil || now != prev {
				prev, moved = now, time.Now()
				continue
			}
			if time.Since(moved) >= d {
				last, fired = h, true
				cancel()
				return
			}
		}
	}()
	return ctx, func() (*Holder, bool) {
		cancel()
		<-done
		return last, fired
	}
}

// release unlocks l where the caller's answer no longer depends on it: a
// failure is logged. A key etcd did not delete goes with the session's
// lease (see Lock.Unlock).
func (m *Manager) release(l *Lock) {
	if err := l.Unlock(); err != nil {
		m.log.Warn("lock not released", zap.String("name", l.Name()), zap.Error(err))
	}
}

// checkDest makes dest absolute and refuses one that exists as anything but
// a directory, and one that holds the lock directory, the working directory
// or the home directory: a typo must not move those aside.
func (m *Manager) checkDest(dest string) (string, error) {
	if dest == "" {
		return "", fmt.Errorf("%w: empty destination", ErrInvalidArgument)
	}
	if strings.IndexByte(dest, 0) >= 0 {
		return "", fmt.Errorf("%w: destination contains a NUL byte", ErrInvalidArgument)
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return "", fmt.Errorf("%w: destination %q: %v", ErrInvalidArgument, dest, err)
	}
	if abs == filepath.Dir(abs) {
		return "", fmt.Errorf("%w: destination %q is a file system root", ErrInvalidArgument, dest)
	}
	wd, _ := os.Getwd()
	home, _ := os.UserHomeDir()
	for _, p := range []struct{ path, what string }{{m.lockDir, "the lock directory"}, {wd, "the working directory"}, {home, "the home directory"}} {
		switch {
		case p.path == "":
		case p.path == abs:
			return "", fmt.Errorf("%w: destination %q is %s: a download replaces its destination; give a new directory for it", ErrInvalidArgument, abs, p.what)
		case strings.HasPrefix(p.path, abs+string(filepath.Separator)):
			return "", fmt.Errorf("%w: destination %q contains %s %s: a download replaces its destination; give a new directory for it", ErrInvalidArgument, abs, p.what, p.path)
		}
	}
	fi, err := os.Lstat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("%w: destination: %v", ErrInvalidArgument, err)
	case fi.Mode()&os.ModeSymlink != 0:
		return "", fmt.Errorf("%w: destination %q is a symbolic link; give the path it points to", ErrInvalidArgument, abs)
	case !fi.IsDir():
		return "", fmt.Errorf("%w: destination %q exists and is not a directory", ErrInvalidArgument, abs)
	}
	return abs, nil
}

// IsComplete reports whether dest holds the completion marker: a download
// of it was committed, and it is whole.
func IsComplete(dest string) bool {
	fi, err := os.Lstat(filepath.Join(dest, MarkerName))
	return err == nil && fi.Mode().IsRegular()
}

// stagingPrefix is the name prefix of dest's staging directories for this
// id; the id's hash is part of it, so that a downloader removes only what
// downloads of its own id left behind.
func (d *Download) stagingPrefix() string { return stagingPrefix(d.id, d.dest) }

func stagingPrefix(id, dest string) string {
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf(".%s.coord-staging-%x-", filepath.Base(dest), sum[:4])
}

// replacedPrefix and replacedTime name the directories that clearDest moves
// an incomplete dest aside to.
const replacedTime = "20060102T150405.000000000"

func replacedPrefix(dest string) string { return filepath.Base(dest) + ".coord-replaced-" }

// prepare removes what dead downloaders left beside dest, which only the
// lock holder may do, and makes a fresh staging directory.
func (d *Download) prepare() error {
	d.m.crash("before-staging")
	parent := filepath.Dir(d.dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("download %q: %w", d.id, err)
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		return fmt.Errorf("download %q: %w", d.id, err)
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, d.stagingPrefix()) {
			d.m.log.Info("removing stale staging directory", zap.String("id", d.id), zap.String("path", filepath.Join(parent, n)))
			if err := os.RemoveAll(filepath.Join(parent, n)); err != nil {
				return fmt.Errorf("download %q: remove stale staging: %w", d.id, err)
			}
		}
	}
	staging, err := os.MkdirTemp(parent, d.stagingPrefix())
	if err != nil {
		return fmt.Errorf("download %q: %w", d.id, err)
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		os.Remove(staging)
		return fmt.Errorf("download %q: %w", d.id, err)
	}
	d.staging = staging
	if err := d.lock.update(func(h *Holder) { h.Dest = d.dest }); err != nil {
		d.m.log.Warn("holder record not updated", zap.String("id", d.id), zap.Error(err))
	}
	d.m.crash("after-staging")
	return nil
}

// ShouldDownload reports whether this caller must fill StagingDir and Commit.
func (d *Download) ShouldDownload() bool { return d.staging != "" }

// Dest returns the absolute destination directory.
func (d *Download) Dest() string { return d.dest }

// StagingDir returns the directory to download into: a sibling of Dest on
// the same file system, so that Commit can rename it into place. It is ""
// unless ShouldDownload.
func (d *Download) StagingDir() string { return d.staging }

// Token returns the fencing token of the toolchain lock; 0 unless
// ShouldDownload.
func (d *Download) Token() int64 {
	if d.lock == nil {
		return 0
	}
	return d.lock.Token()
}

// Lost returns the lock's Lost channel; nil (never ready) unless
// ShouldDownload.
func (d *Download) Lost() <-chan struct{} {
	if d.lock == nil {
		return nil
	}
	return d.lock.Lost()
}

// File returns the lock's File (see Lock.File); ErrClosed unless
// ShouldDownload.
func (d *Download) File() (*os.File, error) {
	if d.lock == nil {
		return nil, ErrClosed
	}
	return d.lock.File()
}

// SetProgress publishes how many bytes of total (0 if unknown) are done, so
// that waiters and `coord status` can show it, with the rate measured
// since the last call. Waiters give up on a download whose done count does
// not move (see WithStallTimeout): call it at least every few seconds, or
// let ReportProgress do it. It takes no ctx; its bound: on etcd one write
// of at most the cleanup bound (min(DialTimeout, 2s)).
func (d *Download) SetProgress(done, total int64) error {
	if !d.ShouldDownload() {
		return nil
	}
	p := Progress{Done: done, Total: total, Rate: d.rate(done, time.Now())}
	return d.lock.update(func(h *Holder) { h.Progress = &p })
}

// rate smooths the speed between reports over about the last five.
func (d *Download) rate(done int64, now time.Time) float64 {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	l := &d.last
	if dt := now.Sub(l.at).Seconds(); !l.at.IsZero() && dt > 0 && done >= l.done {
		r := float64(done-l.done) / dt
		if l.rate == 0 {
			l.rate = r
		} else {
			l.rate += (r - l.rate) / 5
		}
	}
	l.done, l.at = done, now
	return l.rate
}

// TotalFileName is the file in the staging directory where a download may
// announce its total size: decimal bytes, e.g. from an HTTP
// Content-Length. ReportProgress reads it, so that waiters see a percent
// and the time left; Commit removes it.
const TotalFileName = ".coord-total"

// TotalFile returns the path of TotalFileName in StagingDir; "" unless
// ShouldDownload.
func (d *Download) TotalFile() string {
	if !d.ShouldDownload() {
		return ""
	}
	return filepath.Join(d.staging, TotalFileName)
}

// progressEvery is how often ReportProgress reports.
const progressEvery = time.Second

// ReportProgress publishes, every second until ctx ends, the bytes in the
// staging directory and the total announced in TotalFile (see
// SetProgress). Do runs it while fetch runs; a caller of Coordinate that
// downloads runs it, or calls SetProgress itself. It does nothing unless
// ShouldDownload.
func (d *Download) ReportProgress(ctx context.Context) {
	if !d.ShouldDownload() {
		return
	}
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var n int64
		filepath.WalkDir(d.staging, func(path string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() && path != d.TotalFile() {
				if fi, err := e.Info(); err == nil {
					n += fi.Size()
				}
			}
			return ctx.Err()
		})
		var total int64
		if b, err := os.ReadFile(d.TotalFile()); err == nil {
			total, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		}
		if ctx.Err() == nil {
			d.SetProgress(n, max(total, 0))
		}
	}
}

// marker is the content of MarkerName, and of the backend's download record.
type marker struct {
	ID    string    `json:"id"`
	Dest  string    `json:"dest"`
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Token int64     `json:"token"`
	Time  time.Time `json:"time"`
}

// Commit publishes the staging directory as dest: it writes the completion
// marker into it and renames it into place. Readers of dest see no dest, or
// the whole new one, never a mix. A dest that exists without the marker is
// not deleted: an empty one is removed, anything else is moved aside to
// "<dest>.coord-replaced-<time>", with a warning, so that nothing is lost.
// A dest that is already complete (only a download under another id can
// have done that) is kept, and Close discards ours. Commit refuses if the
// lock was lost (ErrLockLost), and refuses an empty staging directory (an
// *EmptyDownloadError) unless AllowEmpty was given. It removes TotalFile
// first.
//
// ctx bounds what Commit waits for: the short lock on dest that orders
// commits into it (waited for as Lock waits: 30s unless ctx has a
// deadline), and each request to a backend that records downloads (at
// most 10s each). Cancelled before the rename, Commit leaves dest as it
// was and the staging directory for Close to discard; after it, the
// download is committed and only its record, which wakes waiters on other
// hosts sooner, may be missing.
func (d *Download) Commit(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return ErrClosed
	case !d.ShouldDownload():
		return fmt.Errorf("%w: download %q: this caller does not download", ErrInvalidArgument, d.id)
	case d.committed:
		return nil
	}
	if err := d.checkCommit(ctx); err != nil {
		return fmt.Errorf("download %q: %w", d.id, err)
	}
	if err := d.checkContent(); err != nil {
		return err
	}
	mk, err := d.writeMarker()
	if err != nil {
		return fmt.Errorf("download %q: write marker: %w", d.id, err)
	}
	d.m.crash("after-marker")
	published, err := d.publish(ctx)
	if err != nil {
		return fmt.Errorf("download %q: %w", d.id, err)
	}
	if !published {
		return nil
	}
	d.committed = true
	d.m.crash("before-record")
	d.record(ctx, mk)
	d.m.crash("after-record")
	return nil
}

// checkCommit refuses a commit by a caller that no longer holds the lock:
// its Lost fired, or a newer holder removed its staging directory.
func (d *Download) checkCommit(ctx context.Context) error {
	select {
	case <-d.lock.Lost():
		return ErrLockLost
	default:
	}
	if fi, err := os.Lstat(d.staging); err == nil && fi.IsDir() {
		return nil
	}
	// Only a holder of the lock removes staging directories: a newer one
	// did, if the backend says ours is gone.
	err := fmt.Errorf("staging directory %s is gone", d.staging)
	if d.lock.rec != nil {
		rctx, cancel := context.WithTimeout(ctx, commitTimeout)
		defer cancel()
		if herr := d.lock.rec.checkHeld(rctx); herr != nil {
			err = fmt.Errorf("%w: %w", err, herr)
		}
	}
	return err
}

// checkContent removes TotalFile and refuses an empty staging directory
// unless AllowEmpty.
func (d *Download) checkContent() error {
	if err := os.Remove(d.TotalFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("download %q: %w", d.id, err)
	}
	if d.allowEmpty || hasEntries(d.staging) {
		return nil
	}
	return &EmptyDownloadError{ID: d.id, Staging: d.staging, Dest: d.dest, DestFiles: !IsComplete(d.dest) && hasEntries(d.dest)}
}

// hasEntries reports whether dir is a directory with something in it.
func hasEntries(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) > 0
}

// writeMarker writes the completion marker into the staging directory and
// returns its content, which is also the backend's download record.
func (d *Download) writeMarker() ([]byte, error) {
	self := d.lock.Holder()
	b, _ := json.Marshal(marker{ID: d.id, Dest: d.dest, Host: self.Host, PID: self.PID, Token: d.lock.Token(), Time: time.Now().UTC()}) // strings, numbers, a time: cannot fail
	return b, writeSynced(filepath.Join(d.staging, MarkerName), b)
}

// publish renames the staging directory into place while holding the
// short lock on dest: the toolchain lock is per id, the lock on dest
// orders commits of different ids into one dest. It reports false, and
// leaves dest alone, if dest is complete already.
func (d *Download) publish(ctx context.Context) (bool, error) {
	dl, err := d.m.acquire(ctx, "dest/"+d.dest, DefaultLockTimeout, nil)
	if err != nil {
		return false, err
	}
	defer d.m.release(dl) // the rename stands, released or not
	if IsComplete(d.dest) {
		d.m.log.Warn("destination completed by another download; keeping it", zap.String("id", d.id), zap.String("dest", d.dest))
		return false, nil
	}
	if d.lock.rec != nil {
		// Publish only while still holding the lock. The check and the
		// rename are two steps: a holder paused between them can still
		// publish after losing the lock (see the package doc).
		rctx, cancel := context.WithTimeout(ctx, commitTimeout)
		err := d.lock.rec.checkHeld(rctx)
		cancel()
		if err != nil {
			return false, err
		}
	}
	if err := clearDest(d.dest, d.m.log); err != nil {
		return false, err
	}
	d.m.crash("after-clear")
	if err := os.Rename(d.staging, d.dest); err != nil {
		return false, err
	}
	d.m.crash("after-rename")
	syncDir(filepath.Dir(d.dest))
	return true, nil
}

// record tells a backend that records downloads that this one committed.
// Waiters also learn it when the lock is released: a failed record only
// costs them that moment.
func (d *Download) record(ctx context.Context, mk []byte) {
	if d.lock.rec == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	if err := d.lock.rec.markDone(rctx, d.id, mk); err != nil {
		d.m.log.Warn("download committed but not recorded", zap.String("id", d.id), zap.Error(err))
	}
}

// crash calls the test hook crashAt, if any, at the named point.
func (m *Manager) crash(point string) {
	if m.crashAt != nil {
		m.crashAt(point)
	}
}

// commitTimeout bounds each backend request of a Commit.
const commitTimeout = 10 * time.Second

// clearDest makes way for a new dest: an empty directory is removed,
// anything else is moved aside under a name that says what happened.
func clearDest(dest string, log *zap.Logger) error {
	err := os.Remove(dest)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	aside := filepath.Join(filepath.Dir(dest), replacedPrefix(dest)+time.Now().UTC().Format(replacedTime))
	if err := os.Rename(dest, aside); err != nil {
		return fmt.Errorf("move incomplete destination aside: %w", err)
	}
	log.Warn("destination existed without a completion marker; moved it aside", zap.String("dest", dest), zap.String("moved_to", aside))
	return nil
}

// Close ends this caller's part: it discards the staging directory unless
// Commit succeeded and releases the lock, so that the next waiter downloads
// if nothing was committed. Calling it again does nothing and returns nil,
// as Lock.Unlock does. It takes no ctx: it blocks as long as Lock.Unlock
// (on etcd up to about two seconds) and removing the staging directory.
func (d *Download) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.lock == nil {
		return nil
	}
	var errs []error
	if !d.committed {
		errs = append(errs, os.RemoveAll(d.staging))
	}
	errs = append(errs, d.lock.Unlock())
	return errors.Join(errs...)
}

// Do runs fetch in the process that should download id into dest and
// commits what it put in the directory it is given. It reports whether this
// call downloaded. fetch's error is returned as it is, nothing committed.
// ctx goes to Coordinate, fetch and Commit. While fetch runs, Do reports
// the bytes in dir every second (ReportProgress): fetch may write the
// total it expects to dir/TotalFileName.
func (c *DownloadCoordinator) Do(ctx context.Context, id, dest string, fetch func(ctx context.Context, dir string) error, opts ...LockOption) (downloaded bool, err error) {
	d, err := c.Coordinate(ctx, id, dest, opts...)
	if err != nil {
		return false, err
	}
	defer func() { err = errors.Join(err, d.Close()) }()
	if !d.ShouldDownload() {
		return false, nil
	}
	rctx, stop := context.WithCancel(ctx)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		d.ReportProgress(rctx)
	}()
	err = fetch(ctx, d.StagingDir())
	stop()
	<-reported
	if err != nil {
		return false, err
	}
	if err := d.Commit(ctx); err != nil {
		return false, err
	}
	return d.committed, nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir makes a rename in dir durable where the OS allows it.
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}
