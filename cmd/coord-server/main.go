// Command coord-server is coord with an embedded etcd server linked in:
// `coord server` runs it. It takes coord's whole command line, so
// `coord-server server --data-dir DIR` is what `coord server --data-dir
// DIR` runs; every other command works as in coord.
package main

import (
	"github.com/toolchainkit/coord/internal/coordcli"
	"github.com/toolchainkit/coord/internal/server"
)

func main() { coordcli.Main(server.Command()) }
