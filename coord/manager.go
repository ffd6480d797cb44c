package coord

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/toolchainkit/coord/filelock"
)

// Backend names for Config.Backend.
const (
	BackendAuto = "auto"
	BackendFile = "file"
	BackendEtcd = "etcd"
)

// Default timeouts of the lock kinds.
const (
	DefaultRegistryTimeout  = 30 * time.Second
	DefaultToolchainTimeout = 60 * time.Second
	DefaultProjectTimeout   = 10 * time.Second
	DefaultLockTimeout      = 30 * time.Second
)

// Config selects and configures the backend. The zero Config is the file
// backend in ~/.toolchainkit/locks.
type Config struct {
	// Backend is "auto" (or empty), "file" or "etcd". Auto means etcd when
	// Endpoints is set and file otherwise.
	Backend string
	// LockDir is the file backend's lock directory; empty means
	// ~/.toolchainkit/locks.
	LockDir string
	// Endpoints are etcd client URLs.
	Endpoints []string
	// Fallback "file" lets an auto Manager whose etcd is unreachable lock on
	// this host only, with a warning. Empty (or "none") fails closed. An
	// explicit Backend "etcd" never falls back.
	Fallback string

	// Prefix is where coord's etcd keys live; default "/toolchainkit".
	Prefix string
	// TTL is the etcd lease's, in whole seconds, at least 2s; default 10s.
	TTL time.Duration
	// DialTimeout bounds connecting to etcd; default 5s.
	DialTimeout time.Duration
	// CACert, Cert and Key are PEM files for TLS to etcd.
	CACert, Cert, Key string
	// Username and Password authenticate to etcd.
	Username, Password string
}

// Option configures a Manager.
type Option func(*options)

type options struct {
	log     *zap.Logger
	command []string
	crashAt func(point string) // tests only: see Manager.crashAt
	// reportOnly: see ReportOnly.
	reportOnly bool
}

// WithLogger sets the logger; the default logs nothing.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// WithCommand sets the command line recorded in holder records; the default
// is os.Args.
func WithCommand(cmd []string) Option { return func(o *options) { o.command = cmd } }

// Manager hands out locks from one backend. It is safe for concurrent use.
type Manager struct {
	b       backend
	records doneRecords // b's download records; nil if it keeps none (file)
	lockDir string      // the file backend's lock directory; "" on etcd
	log     *zap.Logger
	self    Holder // host, pid, command: the static part of our records
	rec     []byte // self.record(), computed once
	// crashAt, set only by tests in this package, is called at the named
	// points of a download so that a test can kill the process there.
	crashAt func(point string)

	mu     sync.Mutex
	closed bool
	bg     sync.WaitGroup // work that outlives a call (see waitDownloader); Close waits for it
}

// New returns a Manager on the backend that cfg selects. With etcd
// endpoints configured and etcd unreachable it fails with
// ErrBackendUnavailable unless cfg.Fallback is "file". It does not block
// beyond ctx.
func New(ctx context.Context, cfg Config, opts ...Option) (*Manager, error) {
	o := options{log: zap.NewNop(), command: os.Args}
	for _, opt := range opts {
		opt(&o)
	}
	kind, auto := cfg.Backend, false
	switch kind {
	case "", BackendAuto:
		kind, auto = BackendFile, true
		if len(cfg.Endpoints) > 0 {
			kind = BackendEtcd
		}
	case BackendFile, BackendEtcd:
	default:
		return nil, fmt.Errorf("%w: backend %q: want auto, file or etcd", ErrInvalidArgument, cfg.Backend)
	}
	switch cfg.Fallback {
	case "", "none", BackendFile:
	default:
		return nil, fmt.Errorf("%w: fallback %q: want none or file", ErrInvalidArgument, cfg.Fallback)
	}
	var b backend
	var err error
	if kind == BackendEtcd {
		// The field that would have let coord go on without etcd: with
		// Backend etcd it never falls back to host-local locks.
		unreachable := "Backend"
		if auto {
			unreachable = "Fallback"
		}
		b, err = newEtcdBackend(ctx, cfg, o.log, unreachable, o.reportOnly)
		if errors.Is(err, ErrBackendUnavailable) && !errors.As(err, new(refusal)) && auto && cfg.Fallback == BackendFile {
			o.log.Warn("etcd unreachable; falling back to file locks on this host only: processes on other hosts are NOT excluded",
				zap.Strings("endpoints", cfg.Endpoints), zap.Error(err))
			kind = BackendFile
		} else if err != nil {
			return nil, err
		}
	}
	var lockDir string
	if kind == BackendFile {
		fb, err := newFileBackend(cfg.LockDir)
		if err != nil {
			return nil, err
		}
		b, lockDir = fb, fb.l.Dir()
		if fs := fb.l.NetworkFS(); fs != "" {
			o.log.Warn("the lock directory is on a network file system: file locks there may exclude processes on this host only, without any error; use the etcd backend to coordinate hosts",
				zap.String("dir", lockDir), zap.String("fs", fs))
		}
	}
	host, _ := os.Hostname()
	self := Holder{Host: host, PID: os.Getpid(), Command: o.command}
	records, _ := b.(doneRecords)
	return &Manager{b: b, records: records, lockDir: lockDir, log: o.log, self: self, rec: self.record(), crashAt: o.crashAt}, nil
}

// DefaultLockDir returns ~/.toolchainkit/locks.
func DefaultLockDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".toolchainkit", "locks"), nil
}

func newFileBackend(dir string) (fileBackend, error) {
	if dir == "" {
		d, err := DefaultLockDir()
		if err != nil {
			return fileBackend{}, fmt.Errorf("%w: file: %w", ErrBackendUnavailable, err)
		}
		dir = d
	}
	l, err := filelock.New(dir)
	if err != nil {
		return fileBackend{}, fmt.Errorf("%w: file: %w", ErrBackendUnavailable, err)
	}
	host, _ := os.Hostname()
	return fileBackend{l: l, host: host}, nil
}

// Backend returns "file" or "etcd".
func (m *Manager) Backend() string { return m.b.kind() }

// LostMargin returns how long before another process could be granted a
// lock Lost fires: the time a holder has to stop using it. It is 0 for the
// file backend, whose locks are lost only when someone deletes their file
// or directory, which lets another process in at once.
func (m *Manager) LostMargin() time.Duration { return m.b.lostMargin() }

// Close releases the backend. Locks still held stay held until Unlock (file)
// or until their lease ends (etcd). Calling it again does nothing.
//
// Close takes no ctx; its bound: it first waits for the shared locks that
// Coordinate's waiters left to release in the background, each released
// as Unlock releases it (on etcd within about two seconds); then, on etcd,
// it revokes the session's lease within about two seconds (the cleanup
// bound, min(DialTimeout, 2s)) and gives up on it after that, leaving the
// lease to expire within its TTL. On the file backend it does not block.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.bg.Wait() // while the backend still answers: a request each, if any
	return m.b.close()
}

// background runs f in a goroutine that Close waits for; once the Manager
// is closed it runs f at once.
func (m *Manager) background(f func()) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		f()
		return
	}
	m.bg.Add(1) // before Close can wait: it sets closed first
	m.mu.Unlock()
	go func() {
		defer m.bg.Done()
		f()
	}()
}

// LockOption modifies one lock request.
type LockOption func(*lockOptions)

type lockOptions struct {
	mode    mode
	timeout time.Duration // WithTimeout's, if set
	set     bool          // WithTimeout was given
	// Coordinate only.
	stall      time.Duration // WithStallTimeout's; 0: off
	allowEmpty bool          // AllowEmpty
}

// WithTimeout bounds the wait; 0 means try once and never wait. Without it,
// the kind's default applies unless ctx has a deadline.
func WithTimeout(d time.Duration) LockOption {
	return func(o *lockOptions) { o.timeout, o.set = d, true }
}

// DefaultStallTimeout is how long Coordinate's waiters wait for a
// downloader whose progress does not move (see WithStallTimeout).
const DefaultStallTimeout = 2 * time.Minute

// WithStallTimeout ends a Coordinate wait when the download it waits for
// has made no progress for d: its downloader reported the same byte count
// (Download.SetProgress; Do and ReportProgress report every second), or
// none at all, for d, as this waiter saw it. The error is a *TimeoutError
// whose Stalled is d. 0 turns the stall check off. The default is
// DefaultStallTimeout. It applies to Coordinate and Do only.
func WithStallTimeout(d time.Duration) LockOption {
	return func(o *lockOptions) { o.stall = d }
}

// AllowEmpty lets Commit publish an empty staging directory; without it
// Commit refuses one with an *EmptyDownloadError. It applies to
// Coordinate and Do only.
func AllowEmpty() LockOption { return func(o *lockOptions) { o.allowEmpty = true } }

// Shared asks for a shared lock: any number of shared holders at once, none
// while an exclusive holder has it.
func Shared() LockOption { return func(o *lockOptions) { o.mode = shared } }

// RegistryLock takes the exclusive lock on the toolchain registry.
// Default timeout 30s.
func (m *Manager) RegistryLock(ctx context.Context, opts ...LockOption) (*Lock, error) {
	return m.acquire(ctx, "registry", DefaultRegistryTimeout, opts)
}

// ToolchainLock takes the lock on one toolchain's installation.
// Default timeout 60s.
func (m *Manager) ToolchainLock(ctx context.Context, id string, opts ...LockOption) (*Lock, error) {
	name, err := toolchainName(id)
	if err != nil {
		return nil, err
	}
	return m.acquire(ctx, name, DefaultToolchainTimeout, opts)
}

// ProjectLock takes the lock on a project's state; root is made absolute and
// cleaned, and its symbolic links are resolved if it exists, so that every
// spelling of one directory names one lock.
// Default timeout 10s.
func (m *Manager) ProjectLock(ctx context.Context, root string, opts ...LockOption) (*Lock, error) {
	if root == "" {
		return nil, fmt.Errorf("%w: empty project path", ErrInvalidName)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("%w: project path %q: %v", ErrInvalidName, root, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return m.acquire(ctx, "project/"+abs, DefaultProjectTimeout, opts)
}

// Lock takes the lock called name, which may be any non-empty string of at
// most 4096 bytes: names are data, never paths. Default timeout 30s.
//
// Lock blocks until the lock is granted, the timeout or ctx's deadline
// passes (a *TimeoutError) or ctx is cancelled (ctx's error). When it
// returns an error it holds nothing.
func (m *Manager) Lock(ctx context.Context, name string, opts ...LockOption) (*Lock, error) {
	return m.acquire(ctx, name, DefaultLockTimeout, opts)
}

// ToolchainLockName returns the name of the lock that ToolchainLock and
// downloads of id take.
func ToolchainLockName(id string) string { return "toolchain/" + id }

func toolchainName(id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: empty toolchain id", ErrInvalidName)
	}
	return ToolchainLockName(id), nil
}

func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > filelock.MaxNameLen:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidName, len(name), filelock.MaxNameLen)
	}
	return nil
}

// request is one lock request, resolved once from its options: how long
// it may wait is said here and nowhere else.
type request struct {
	name  string
	mode  mode
	once  bool          // a single try that never waits
	limit time.Duration // > 0: the longest wait; 0: until ctx ends
	// Coordinate only: see WithStallTimeout and AllowEmpty.
	stall      time.Duration
	allowEmpty bool
}

// newRequest applies opts over the kind's default timeout def: WithTimeout
// wins, then a deadline on ctx (which alone then bounds the wait), then
// def (0: until ctx ends).
func newRequest(ctx context.Context, name string, def time.Duration, opts []LockOption) (request, error) {
	o := lockOptions{timeout: def, stall: DefaultStallTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	r := request{name: name, mode: o.mode, stall: o.stall, allowEmpty: o.allowEmpty}
	_, deadline := ctx.Deadline()
	switch {
	case o.timeout < 0:
		return r, fmt.Errorf("%w: negative timeout %s", ErrInvalidArgument, o.timeout)
	case o.stall < 0:
		return r, fmt.Errorf("%w: negative stall timeout %s", ErrInvalidArgument, o.stall)
	case o.set && o.timeout == 0:
		r.once = true
	case o.set || !deadline:
		r.limit = o.timeout
	}
	return r, nil
}

// bound returns ctx bounded by the request's limit.
func (r request) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.limit > 0 {
		return context.WithTimeout(ctx, r.limit)
	}
	return context.WithCancel(ctx)
}

func (m *Manager) acquire(ctx context.Context, name string, def time.Duration, opts []LockOption) (*Lock, error) {
	r, err := newRequest(ctx, name, def, opts)
	if err != nil {
		return nil, err
	}
	start := time.Now() // before the bound: Waited is never below it
	ctx, cancel := r.bound(ctx)
	defer cancel()
	l, err := m.grant(ctx, r)
	if timedOut(err) {
		return nil, m.timeoutError(ctx, r, start)
	}
	return l, err
}

// timedOut reports whether a grant failed for want of time: a single try
// found the lock held, or the wait reached its bound.
func timedOut(err error) bool {
	return errors.Is(err, errBusy) || errors.Is(err, context.DeadlineExceeded)
}

// timeoutError is the one place a *TimeoutError is made: r, begun at
// start, was not granted in time. It names the holder if the backend
// says within a second.
func (m *Manager) timeoutError(ctx context.Context, r request, start time.Time) *TimeoutError {
	var waited time.Duration
	if !r.once {
		waited = time.Since(start)
	}
	s := m.inspectQuick(ctx, r.name)
	return &TimeoutError{Name: r.name, Waited: waited, Holder: s.Holder, Stray: s.Stray}
}

// grant makes one attempt at r within ctx, which the caller has bounded
// (request.bound): a lock held on a single try is errBusy, a wait that
// timed out context.DeadlineExceeded.
func (m *Manager) grant(ctx context.Context, r request) (*Lock, error) {
	if err := checkName(r.name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock %q: %w", r.name, err)
	}
	take := m.b.lock
	if r.once {
		take = m.b.tryLock
	}
	h, err := take(ctx, r.name, r.mode, m.rec)
	if err != nil {
		return nil, fmt.Errorf("lock %q: %w", r.name, err)
	}
	self := m.self
	self.Since, self.Token, self.Backend, self.Shared = time.Now(), h.Token(), m.b.kind(), r.mode == shared
	l := &Lock{m: m, name: r.name, h: h, self: self}
	l.file, _ = h.(fileHeld)
	l.rec, _ = h.(recordHeld)
	return l, nil
}

// inspectQuick reports on name within a second; the zero Status if the
// backend does not answer by then.
func (m *Manager) inspectQuick(ctx context.Context, name string) Status {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	s, _ := m.b.inspect(ctx, name)
	return s
}

// Status is the state of one lock as a backend reports it.
type Status struct {
	Name    string  // the lock name
	Backend string  // "file" or "etcd"
	File    string  // the lock file (file backend); "" on etcd
	Key     string  // the etcd key prefix of its holders' and waiters' keys; "" on file
	Held    bool    // someone holds it
	Shared  bool    // held in shared mode
	Holder  *Holder // the exclusive holder's record; nil if none or unreadable
	Token   int64   // the last fencing token handed out
	// Holders and Waiters are the processes that hold and that wait for
	// the lock (on etcd in queue order), as far as Known says.
	Holders []Process
	Waiters []Process
	// Known reports whether the backend could list the holders and
	// waiters: always on etcd; on the file backend only where the OS
	// tells (Linux). When false, both are empty whoever holds or waits.
	Known bool
	// Stray is the oldest key under the lock's etcd prefix that no lock
	// holder wrote, which blocks the lock; nil if none.
	Stray *Stray
}

// Process is one process that holds or waits for a lock.
type Process struct {
	Host string // the host it runs on; "" if unknown
	PID  int    // its process ID; 0 if unknown (etcd: a key whose value is no holder record)
	// On etcd, Key and Revision are the key it put and its create
	// revision, which name this one hold or wait; Since is when it
	// queued, from its record (zero if unknown). Empty on file.
	Key      string
	Revision int64
	Since    time.Time
}

// Inspect reports on the lock called name without taking it.
func (m *Manager) Inspect(ctx context.Context, name string) (Status, error) {
	if err := checkName(name); err != nil {
		return Status{}, err
	}
	return m.b.inspect(ctx, name)
}

// Check reports a state in which the backend answers but grants no new
// lock: etcd's NOSPACE alarm (an ErrBackendUnavailable that says what an
// operator must do). It is nil when there is none, and always for the
// file backend.
func (m *Manager) Check(ctx context.Context) error { return m.b.check(ctx) }

// Locks reports on every lock the backend knows of.
func (m *Manager) Locks(ctx context.Context) ([]Status, error) {
	return m.b.list(ctx)
}

// Active reports on the locks held or awaited, sorted by name: Locks
// without the idle ones, which on the file backend it does not read (see
// filelock.Locker.Active), so that it stays fast beside thousands of idle
// lock files.
func (m *Manager) Active(ctx context.Context) ([]Status, error) {
	list := m.b.list
	if a, ok := m.b.(activeLister); ok {
		list = a.active
	}
	all, err := list(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if s.Held || len(s.Waiters) > 0 {
			out = append(out, s)
		}
	}
	return out, nil
}

// Lock is a held lock. Its methods are safe for concurrent use.
type Lock struct {
	m    *Manager
	name string
	h    held
	self Holder
	// Optional behaviours of h, asked for once in grant: nil if h has none.
	file fileHeld
	rec  recordHeld

	mu       sync.Mutex
	unlocked bool
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.name }

// Token returns the fencing token: strictly greater than the token of every
// earlier exclusive holder of this name. Pass it to the resource you guard
// and have it refuse writes with a token lower than one it has seen: that,
// not the lock alone, is what protects against a holder that was paused or
// cut off and did not notice it lost the lock. A shared lock's token is at
// least the last exclusive holder's and below the next one's: on the file
// backend the last token or the clock in microseconds, whichever is more;
// on etcd its own key's revision. File tokens are never below the wall
// clock in microseconds, so they keep rising when a lock file is deleted
// and made anew.
func (l *Lock) Token() int64 { return l.h.Token() }

// Lost returns a channel that is closed if the lock is lost before Unlock.
// A file lock is lost when its lock file is unlinked or replaced, or the
// lock directory removed or moved (Linux: within milliseconds, through
// inotify; elsewhere within 100 ms); an etcd lock is lost when its key is
// deleted or its lease may have expired (and its channel is closed by
// Unlock too).
func (l *Lock) Lost() <-chan struct{} { return l.h.Lost() }

// Holder describes this process as the holder.
func (l *Lock) Holder() Holder {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.self
}

// update publishes a new holder record (download destination, progress).
func (l *Lock) update(fn func(*Holder)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unlocked {
		return ErrClosed
	}
	fn(&l.self)
	return l.h.Update(l.self.record())
}

// File returns a new descriptor that keeps the lock held for as long as it
// is open in any process: pass it to a child (exec.Cmd.ExtraFiles) so that
// if this process dies, the lock is released only once the child is gone
// too, as with flock(1). Unlock still releases it at once. The caller
// closes the file. Only the file backend on Unix can do this; elsewhere
// File returns errors.ErrUnsupported.
func (l *Lock) File() (*os.File, error) {
	if l.file == nil {
		return nil, errors.ErrUnsupported
	}
	return l.file.File()
}

// Unlock releases the lock. A second call does nothing and returns nil, so
// that a deferred Unlock after an explicit one is safe.
//
// Unlock takes no ctx; its bound: on etcd it waits for the delete of the
// lock's key up to the Locker's cleanup bound (min(DialTimeout, 2s)); if
// etcd does not answer by then it returns the error, the lock counts as
// released here (Lost is closed), and the key is deleted in the
// background once etcd answers, or goes with the session's lease (at the
// latest when the Manager is closed or the lease expires). On the file
// backend it does not block.
func (l *Lock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unlocked {
		return nil
	}
	l.unlocked = true
	if err := l.h.Unlock(); err != nil {
		return fmt.Errorf("unlock %q: %w", l.name, err)
	}
	return nil
}
