// Command coord-server is coord with an embedded etcd server and the
// exporter (Prometheus' client) linked in: `coord server` and `coord
// exporter` run it. It takes coord's whole command line, so `coord-server
// server --data-dir DIR` is what `coord server --data-dir DIR` runs; every
// other command works as in coord. The server command takes coord's logger
// and escaping from the CLI, which wraps it as it does its own commands:
// package server does not import the CLI.
package main

import (
	"time"

	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/coordcli"
	"github.com/toolchainkit/coord/internal/exporter"
	"github.com/toolchainkit/coord/internal/server"
)

func main() {
	coordcli.Main(server.Command(coordcli.NewLogger, coordcli.Printable),
		coordcli.ExporterCommand(newExporter, exporter.DefaultMaxNames))
}

func newExporter(m *coord.Manager, maxNames int, interval time.Duration, log *zap.Logger) coordcli.Exporter {
	return exporter.New(m, exporter.WithMaxNames(maxNames), exporter.WithInterval(interval), exporter.WithLogger(log))
}
