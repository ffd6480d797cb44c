// Command coord runs commands under cross-process locks and coordinates
// downloads of shared toolchains. See the README for the CLI reference.
//
// `coord server` runs coord-server, which is coord with an embedded etcd
// server linked in; coord leaves it out to start faster.
package main

import "github.com/toolchainkit/coord/internal/coordcli"

func main() { coordcli.Main(nil) }
