package coord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/toolchainkit/coord/etcdlock"
)

// ReportOnly makes a Manager that only reports: Inspect, Locks and Check.
// On etcd it takes no lease and writes nothing, so that it works while
// etcd refuses writes (out of space) and for a user who may only read;
// its locks fail with errors.ErrUnsupported. The file backend reports
// the same either way.
func ReportOnly() Option { return func(o *options) { o.reportOnly = true } }

var _ backend = etcdReport{}

// etcdReport adapts an etcdlock.Inspector: an etcd backend that only
// reports.
type etcdReport struct{ in *etcdlock.Inspector }

func (b etcdReport) kind() string { return BackendEtcd }

func (b etcdReport) lock(context.Context, string, mode, []byte) (held, error) {
	return nil, errReportOnly
}

func (b etcdReport) tryLock(context.Context, string, mode, []byte) (held, error) {
	return nil, errReportOnly
}

var errReportOnly = fmt.Errorf("%w: this Manager only reports (ReportOnly)", errors.ErrUnsupported)

func (b etcdReport) inspect(ctx context.Context, name string) (Status, error) {
	return etcdInspect(ctx, b.in, name)
}

func (b etcdReport) list(ctx context.Context) ([]Status, error) { return etcdList(ctx, b.in) }

func (b etcdReport) close() error { return b.in.Close() }

func (b etcdReport) check(ctx context.Context) error { return spaceError(b.in.CheckSpace(ctx)) }

// lostMargin is 0: a Manager that only reports holds no lock to lose.
func (b etcdReport) lostMargin() time.Duration { return 0 }
