package etcdlock

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// CheckSpace asks etcd whether it has raised the NOSPACE alarm, under
// which it refuses new locks: ErrNoSpace if so, naming the members that
// raised it, nil if not. etcd's auth may refuse the question to a user
// who is not root (ErrPermissionDenied); what it says is then unknown.
func (l *Locker) CheckSpace(ctx context.Context) error {
	ctx, cancel := l.bind(ctx)
	defer cancel()
	resp, err := l.cli.AlarmList(ctx)
	if err != nil {
		return l.unavailable("list alarms", err)
	}
	var members []string
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			members = append(members, fmt.Sprintf("%x", a.MemberID))
		}
	}
	if len(members) == 0 {
		return nil
	}
	return fmt.Errorf("%w: raised by member %v: it refuses writes", ErrNoSpace, members)
}
