package exporter

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"
)

// maxPageLocks bounds the locks one page update carries: the first by
// the metrics' order; View.More counts the rest.
const maxPageLocks = 500

// View is what the page shows, as /state.json and each /events message
// carry it. encoding/json escapes <, > and & in it, so that no name can
// close a script or an element wherever the JSON lands.
type View struct {
	Backend  string      `json:"backend"`
	Up       bool        `json:"up"`
	Error    string      `json:"error,omitempty"`
	Now      time.Time   `json:"now"`
	Version  uint64      `json:"version"`
	Locks    []LockView  `json:"locks"`
	More     int         `json:"more"` // locks left out
	Counters CounterView `json:"counters"`
}

// LockView is one lock held or awaited.
type LockView struct {
	Name    string        `json:"name"`
	State   string        `json:"state"` // exclusive, shared, free (awaited only)
	Token   int64         `json:"token"`
	Holders []ProcessView `json:"holders"`
	Waiters []ProcessView `json:"waiters"`
	Command []string      `json:"cmd,omitempty"`
	// A download's destination and progress, from its holder's record.
	Dest     string  `json:"dest,omitempty"`
	Download bool    `json:"download"`
	Done     int64   `json:"done"`
	Total    int64   `json:"total"`
	Rate     float64 `json:"rate"`
}

// ProcessView is one process that holds or waits.
type ProcessView struct {
	Host  string     `json:"host"`
	PID   int        `json:"pid"`
	Since *time.Time `json:"since,omitempty"`
}

// CounterView repeats the counters of /metrics.
type CounterView struct {
	Grants   uint64 `json:"grants"`
	Releases uint64 `json:"releases"`
	Lost     uint64 `json:"lost"`
	Commits  uint64 `json:"commits"`
}

// view renders the state, and returns with it the channel closed at the
// next change.
func (e *Exporter) view() (View, <-chan struct{}) {
	st := e.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	v := View{Backend: st.backend, Up: st.up, Error: st.err, Now: now, Version: st.version, Locks: []LockView{},
		Counters: CounterView{Grants: st.grants, Releases: st.releases, Lost: st.lost, Commits: st.commits}}
	for _, ls := range st.ranked(now) {
		if len(v.Locks) == maxPageLocks {
			v.More++
			continue
		}
		s := ls.s
		lv := LockView{Name: s.Name, State: "free", Token: s.Token, Holders: []ProcessView{}, Waiters: []ProcessView{}}
		switch {
		case s.Held && s.Shared:
			lv.State = "shared"
		case s.Held:
			lv.State = "exclusive"
		}
		hs := holds(s)
		for i, p := range s.Holders {
			pv := ProcessView{Host: p.Host, PID: p.PID}
			var since time.Time
			switch {
			case !s.Shared && s.Holder != nil && !s.Holder.Since.IsZero():
				since = s.Holder.Since
			case i < len(hs):
				since = ls.firstSeen[hs[i].id]
			}
			if !since.IsZero() {
				pv.Since = &since
			}
			lv.Holders = append(lv.Holders, pv)
		}
		if h := s.Holder; h != nil {
			if len(lv.Holders) == 0 {
				pv := ProcessView{Host: h.Host, PID: h.PID}
				if !h.Since.IsZero() {
					since := h.Since
					pv.Since = &since
				}
				lv.Holders = append(lv.Holders, pv)
			}
			lv.Command, lv.Dest, lv.Download = h.Command, h.Dest, isDownload(s)
			if p := h.Progress; p != nil {
				lv.Done, lv.Total, lv.Rate = p.Done, p.Total, p.Rate
			}
		}
		for _, p := range s.Waiters {
			since := ls.waitStart(p, now)
			lv.Waiters = append(lv.Waiters, ProcessView{Host: p.Host, PID: p.PID, Since: &since})
		}
		v.Locks = append(v.Locks, lv)
	}
	return v, st.changed
}

func (e *Exporter) serveState(w http.ResponseWriter, r *http.Request) {
	v, _ := e.view()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// Pacing of /events: at most one message per minGap, and one at least
// every keepAlive so that the page's clock and proxies stay current.
const (
	minGap    = 500 * time.Millisecond
	keepAlive = 5 * time.Second
)

// serveEvents streams the view as server-sent events: one now, then one
// after each change, until the request ends.
func (e *Exporter) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	ctx := r.Context()
	var buf bytes.Buffer
	for {
		v, changed := e.view()
		buf.Reset()
		buf.WriteString("data: ")
		json.NewEncoder(&buf).Encode(v) // ends in one newline; no newline inside
		buf.WriteString("\n")
		if _, err := w.Write(buf.Bytes()); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		timer := time.NewTimer(keepAlive)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
		select {
		case <-ctx.Done():
			return
		case <-time.After(minGap):
		}
	}
}
