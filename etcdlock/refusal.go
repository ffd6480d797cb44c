package etcdlock

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// refusal is a sentinel for an answer from etcd that says no: it matches
// ErrRefused and ErrUnavailable too.
type refusal string

func (r refusal) Error() string { return string(r) }

// Is reports whether target is ErrRefused or ErrUnavailable.
func (r refusal) Is(target error) bool { return target == ErrRefused || target == ErrUnavailable }

// refused returns the refusal that err, an answer from etcd, is, saying
// whom etcd refused; nil if err is none (etcd did not answer, or may say
// yes next time). user is whom etcd's auth sees (see user), "" if nobody.
func refused(err error, user, prefix string) error {
	if err == nil {
		return nil
	}
	who := "this client"
	if user != "" {
		who = fmt.Sprintf("etcd user %q", user)
	}
	switch {
	case errors.Is(err, rpctypes.ErrNoSpace):
		return fmt.Errorf("%w: its database reached its quota (--quota-backend-bytes), and it refuses writes", ErrNoSpace)
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("%w: %s: authentication failed (wrong user name or password)", ErrAuthFailed, who)
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return fmt.Errorf("%w: etcd's auth is enabled and no user name is given", ErrAuthFailed)
	case errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrUserNotFound):
		return fmt.Errorf("%w: %s: %v", ErrAuthFailed, who, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied) && user == "":
		return fmt.Errorf("etcd's auth refuses this client prefix %s: %w", prefix, ErrPermissionDenied)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Errorf("etcd user %q may not use prefix %s: %w", user, prefix, ErrPermissionDenied)
	}
	return nil
}
