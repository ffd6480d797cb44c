package coordcli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/toolchainkit/coord/coord"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "list the locks that are held or awaited",
		UsageText: "coord status [--all] [--json]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"},
			&cli.BoolFlag{Name: flagAll, Usage: "include locks nobody holds or awaits"},
		},
		Action: runStatus,
	}
}

// statusEntry is one lock in `coord status --json`.
type statusEntry struct {
	Name       string     `json:"name"`
	Backend    string     `json:"backend"`
	Where      string     `json:"where"` // the lock file, or the etcd key prefix
	State      string     `json:"state"` // free, exclusive, shared
	Token      int64      `json:"token"`
	Holder     *holderOut `json:"holder,omitempty"`
	HolderPIDs []int      `json:"holder_pids,omitempty"`
	Waiters    *int       `json:"waiters"` // null when the backend cannot tell
	WaiterPIDs []int      `json:"waiter_pids,omitempty"`
	Stray      *strayOut  `json:"stray,omitempty"`
}

// strayOut is a key no lock holder wrote that blocks the lock (etcd).
type strayOut struct {
	Key     string `json:"key"`
	Lease   int64  `json:"lease"`   // 0: none
	Expires bool   `json:"expires"` // false: it stays until deleted
	Remove  string `json:"remove"`  // the etcdctl command that deletes it
}

type holderOut struct {
	Host     string          `json:"host"`
	PID      int             `json:"pid"`
	Since    *time.Time      `json:"since,omitempty"`
	Command  []string        `json:"cmd,omitempty"`
	Dest     string          `json:"dest,omitempty"`
	Progress *coord.Progress `json:"progress,omitempty"`
}

func runStatus(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("status takes no arguments")
	}
	// No lease, no writes: status works while etcd is out of space.
	m, _, err := newManager(c, nil, coord.ReportOnly())
	if err != nil {
		return err
	}
	defer m.Close()
	locks := m.Active
	if c.Bool(flagAll) {
		locks = m.Locks
	}
	all, err := locks(c.Context)
	if err != nil {
		return err
	}
	// Held locks still show, and are released as usual: new ones fail.
	if err := m.Check(c.Context); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "coord: warning: %s\n", message(err))
	}
	var out []statusEntry
	for _, s := range all {
		out = append(out, toEntry(s))
	}
	if c.Bool(flagJSON) {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if out == nil {
			out = []statusEntry{}
		}
		return enc.Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(c.App.Writer, "no locks held (%s backend)\n", m.Backend())
		return nil
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tHOLDER\tSINCE\tTOKEN\tWAITERS\tCOMMAND")
	for _, e := range out {
		holder, since, cmd := "-", "-", "-"
		if h := e.Holder; h != nil {
			holder = fmt.Sprintf("pid %d@%s", h.PID, h.Host)
			if h.Since != nil {
				since = time.Since(*h.Since).Round(time.Second).String() + " ago"
			}
			cmd = strings.Join(h.Command, " ")
			if p := h.Progress; p != nil {
				cmd += " [" + p.String() + "]"
			}
		} else if len(e.HolderPIDs) > 0 {
			holder = "pid " + joinInts(e.HolderPIDs)
		} else if e.Stray != nil {
			holder = "stray key (below)"
		}
		waiters := "?"
		if e.Waiters != nil {
			waiters = fmt.Sprint(*e.Waiters)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", Printable(e.Name), e.State, Printable(holder), since, e.Token, waiters, Printable(cmd))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range all {
		if s.Stray != nil {
			fmt.Fprintf(c.App.Writer, "%s: blocked by %s\n", Printable(s.Name), Printable(s.Stray.String()))
		}
	}
	return nil
}

func toEntry(s coord.Status) statusEntry {
	e := statusEntry{Name: s.Name, Backend: s.Backend, Where: cmp.Or(s.File, s.Key), State: "free", Token: s.Token,
		HolderPIDs: pids(s.Holders), WaiterPIDs: pids(s.Waiters)}
	switch {
	case s.Held && s.Shared:
		e.State = "shared"
	case s.Held:
		e.State = "exclusive"
	}
	if s.Known {
		n := len(s.Waiters)
		e.Waiters = &n
	}
	if st := s.Stray; st != nil {
		e.Stray = &strayOut{Key: st.Key, Lease: st.Lease, Expires: st.Lease != 0, Remove: st.RemoveCommand()}
	}
	if h := s.Holder; h != nil {
		e.Holder = &holderOut{Host: h.Host, PID: h.PID, Command: h.Command, Dest: h.Dest, Progress: h.Progress}
		if !h.Since.IsZero() {
			since := h.Since
			e.Holder.Since = &since
		}
	}
	return e
}
