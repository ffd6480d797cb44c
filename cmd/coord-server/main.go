// Command coord-server is coord with an embedded etcd server linked in:
// `coord server` runs it. It takes coord's whole command line, so
// `coord-server server --data-dir DIR` is what `coord server --data-dir
// DIR` runs; every other command works as in coord. The server command
// takes coord's logger and escaping from the CLI, which wraps it as it
// does its own commands: package server does not import the CLI.
package main

import (
	"github.com/toolchainkit/coord/internal/coordcli"
	"github.com/toolchainkit/coord/internal/server"
)

func main() { coordcli.Main(server.Command(coordcli.NewLogger, coordcli.Printable)) }
