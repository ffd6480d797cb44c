package coordcli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
)

const gcUsage = "coord gc [--older-than D] [--dry-run] [--staging] [--replaced] [--etcd-records] [--json]"

func gcCommand() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "remove idle lock files; list, and on request remove, what downloads left behind",
		Description: "Lock files are removed only while gc holds them and nobody waits for them; never delete them with rm.\n" +
			"Staging directories of dead downloads and destinations moved aside are found beside the destinations\n" +
			"named by toolchain lock files and etcd download records, and looked at only while gc holds that toolchain's lock.",
		UsageText: gcUsage,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: flagOlderThan, Usage: "keep lock files used, and destinations moved aside, less than this long ago"},
			&cli.BoolFlag{Name: flagDryRun, Usage: "say what would be removed, remove nothing"},
			&cli.BoolFlag{Name: flagStaging, Usage: "remove staging directories of downloads that died"},
			&cli.BoolFlag{Name: flagReplaced, Usage: "remove DEST.coord-replaced-* directories"},
			&cli.BoolFlag{Name: flagRecords, Usage: "remove etcd download records whose DEST has no completion marker"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"},
		},
		Action: runGC,
	}
}

// gcEntry is one item in `coord gc --json`.
type gcEntry struct {
	Kind    string     `json:"kind"` // lock-file, staging, replaced, record
	Name    string     `json:"name"` // lock name or download id
	Path    string     `json:"path"` // file, directory or etcd key
	Dest    string     `json:"dest,omitempty"`
	Time    *time.Time `json:"time,omitempty"` // last use, move aside or commit
	Removed bool       `json:"removed"`        // with --dry-run: would be
	Kept    string     `json:"kept,omitempty"` // why not
}

type gcOut struct {
	Backend string    `json:"backend"`
	DryRun  bool      `json:"dry_run"`
	Items   []gcEntry `json:"items"`
}

func runGC(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("gc takes no arguments; usage: %s", gcUsage)
	}
	o := coord.GCOptions{
		OlderThan:   c.Duration(flagOlderThan),
		DryRun:      c.Bool(flagDryRun),
		Staging:     c.Bool(flagStaging),
		Replaced:    c.Bool(flagReplaced),
		EtcdRecords: c.Bool(flagRecords),
	}
	if o.OlderThan < 0 {
		return usagef("--%s %s: must not be negative", flagOlderThan, o.OlderThan)
	}
	m, _, err := newManager(c, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if o.EtcdRecords && m.Backend() != coord.BackendEtcd {
		return usagef("--%s: the %s backend keeps no download records", flagRecords, m.Backend())
	}
	r, err := m.GC(c.Context, o)
	if c.Bool(flagJSON) {
		out := gcOut{Backend: r.Backend, DryRun: r.DryRun, Items: []gcEntry{}}
		for _, it := range r.Items {
			e := gcEntry{Kind: it.Kind, Name: it.Name, Path: it.Path, Dest: it.Dest, Removed: it.Removed, Kept: it.Kept}
			if !it.Time.IsZero() {
				t := it.Time
				e.Time = &t
			}
			out.Items = append(out.Items, e)
		}
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(out); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	printGC(c.App.Writer, r, o)
	return err
}

// printGC says, one line an item, what gc removed or would remove and what
// it found but left; lock files kept because they are in use are only
// counted.
func printGC(w io.Writer, r coord.GCReport, o coord.GCOptions) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	// The summary counts lock files on the file backend, records on etcd.
	unit := coord.GCLockFile
	if r.Backend == coord.BackendEtcd {
		unit = coord.GCRecord
	}
	removed, kept := 0, map[string]int{}
	for _, it := range r.Items {
		what := gcWhat(it)
		switch {
		case it.Removed:
			if it.Kind == unit {
				removed++
			}
			fmt.Fprintf(w, "%s %s\n", verb, what)
		case it.Kind == coord.GCLockFile && it.Kept != coord.KeptUnsafe:
			kept[it.Kept]++
		case it.Kept == coord.KeptNotAsked && it.Kind == coord.GCRecord:
			fmt.Fprintf(w, "kept %s: the destination has no completion marker; pass --%s to remove\n", what, flagRecords)
		case it.Kept == coord.KeptNotAsked:
			fmt.Fprintf(w, "kept %s: pass --%s to remove\n", what, map[string]string{
				coord.GCStaging: flagStaging, coord.GCReplaced: flagReplaced}[it.Kind])
		case it.Kept == coord.KeptRecent:
			fmt.Fprintf(w, "kept %s: less than %s ago\n", what, o.OlderThan)
		case it.Kept == coord.KeptUnsafe:
			fmt.Fprintf(w, "left alone %s: not a regular file or directory of coord's (a link?)\n", what)
		default:
			fmt.Fprintf(w, "kept %s: %s\n", what, Printable(it.Kept))
		}
	}
	noun := map[string]string{coord.GCLockFile: "lock file", coord.GCRecord: "download record"}[unit]
	if removed != 1 {
		noun += "s"
	}
	fmt.Fprintf(w, "%s %d %s (%s backend)", verb, removed, noun, r.Backend)
	if n := kept[coord.KeptHeld] + kept[coord.KeptAwaited]; n > 0 {
		fmt.Fprintf(w, "; %d held or awaited", n)
	}
	if n := kept[coord.KeptRecent]; n > 0 {
		fmt.Fprintf(w, "; %d used within %s", n, o.OlderThan)
	}
	if n := kept[coord.KeptLeftovers]; n > 0 {
		fmt.Fprintf(w, "; %d kept for the leftovers they lead to", n)
	}
	fmt.Fprintln(w)
}

func gcWhat(it coord.GCItem) string {
	ago := ""
	if !it.Time.IsZero() {
		ago = time.Since(it.Time).Round(time.Second).String() + " ago"
	}
	switch it.Kind {
	case coord.GCLockFile:
		s := fmt.Sprintf("lock file %s (lock %s", Printable(it.Path), Printable(it.Name))
		if ago != "" {
			s += ", last taken " + ago
		}
		return s + ")"
	case coord.GCStaging:
		return fmt.Sprintf("staging directory %s of download %s", Printable(it.Path), Printable(it.Name))
	case coord.GCReplaced:
		return fmt.Sprintf("moved-aside destination %s (moved %s)", Printable(it.Path), ago)
	case coord.GCRecord:
		return fmt.Sprintf("download record %s (destination %s)", Printable(it.Path), Printable(it.Dest))
	}
	return Printable(it.Path)
}
