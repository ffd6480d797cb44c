package etcdlock

import "context"

// Inspect reports on the lock called name.
func (l *Locker) Inspect(ctx context.Context, name string) (Info, error) {
	ctx, cancel := l.s.bind(ctx)
	defer cancel()
	return l.inspector().Inspect(ctx, name)
}

// List reports on every lock under the prefix, sorted by name.
func (l *Locker) List(ctx context.Context) ([]Info, error) {
	ctx, cancel := l.s.bind(ctx)
	defer cancel()
	return l.inspector().List(ctx)
}

// CheckSpace is Inspector.CheckSpace.
func (l *Locker) CheckSpace(ctx context.Context) error {
	ctx, cancel := l.s.bind(ctx)
	defer cancel()
	return l.inspector().CheckSpace(ctx)
}

// inspector reads as an Inspector does, on the Locker's client; the
// methods above bind each read to the session.
func (l *Locker) inspector() *Inspector {
	return &Inspector{cli: l.cli, prefix: l.prefix, user: l.user}
}
