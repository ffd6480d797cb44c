package etcdtest

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EnableAuth turns etcd's auth on through c, with two users: root (role
// root) and limited, whose role "mine" may read and write keys under
// /mine/ only.
func EnableAuth(ctx context.Context, c *clientv3.Client, rootPassword, limitedPassword string) error {
	for _, step := range []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", rootPassword); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.UserAdd(ctx, "limited", limitedPassword); return err },
		func() error { _, err := c.RoleAdd(ctx, "mine"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "mine", "/mine/", clientv3.GetPrefixRangeEnd("/mine/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := c.UserGrantRole(ctx, "limited", "mine"); return err },
		func() error { _, err := c.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
