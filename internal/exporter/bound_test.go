package exporter_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exporter"
)

// fakeSource sends one Reset with its locks, then waits for ctx.
type fakeSource struct{ locks []coord.Status }

func (f fakeSource) Watch(ctx context.Context, _ time.Duration, fn func(coord.Change)) error {
	fn(coord.Change{Reset: true, Locks: f.locks})
	<-ctx.Done()
	return ctx.Err()
}
func (fakeSource) Requests() int64 { return 0 }
func (fakeSource) Backend() string { return coord.BackendEtcd }

// 60 names give at most max-names series and one name="other", which sums
// up the rest; the names with the most waiters get series of their own.
// Names with quotes, newlines and markup are label values like any other.
func TestLabelSetIsBounded(t *testing.T) {
	for _, tc := range []struct{ names, max int }{{60, 10}, {60, exporter.DefaultMaxNames}, {8, 10}} {
		t.Run(fmt.Sprintf("%d names max %d", tc.names, tc.max), func(t *testing.T) {
			var src fakeSource
			wantWaiters := 0
			for i := range tc.names {
				s := coord.Status{Name: fmt.Sprintf("lock \"%d\"\n<b>", i), Held: true, Token: int64(i + 1), Known: true,
					Holders: []coord.Process{{Host: "h", PID: 1, Key: fmt.Sprintf("/k/%d/a", i), Revision: int64(i + 1)}}}
				for j := range i % 7 {
					s.Waiters = append(s.Waiters, coord.Process{Host: "h", PID: 2 + j, Key: fmt.Sprintf("/k/%d/w%d", i, j), Revision: int64(1000 + 10*i + j)})
				}
				wantWaiters += i % 7
				src.locks = append(src.locks, s)
			}
			src.locks = append(src.locks, coord.Status{Name: exporter.OtherName, Held: true, Token: 9999, Known: true})
			url := serve(t, src, exporter.WithMaxNames(tc.max))
			mfs := waitMetrics(t, url, time.Minute, "the locks", func(mfs map[string]*dto.MetricFamily) bool {
				v, _ := value(mfs, "coord_backend_up", "")
				return v == 1
			})
			for _, metric := range []string{"coord_locks_held", "coord_lock_waiters"} {
				series := len(mfs[metric].GetMetric())
				if series > tc.max+1 {
					t.Errorf("%s: %d series; want at most %d names and other", metric, series, tc.max)
				}
				if _, ok := value(mfs, metric, exporter.OtherName); !ok {
					t.Errorf("%s: no name=%q series; the lock called %q belongs there", metric, exporter.OtherName, exporter.OtherName)
				}
			}
			if got := sum(mfs, "coord_locks_held"); got != float64(tc.names+1) {
				t.Errorf("sum of coord_locks_held = %v; want %d: other sums up the rest", got, tc.names+1)
			}
			if got := sum(mfs, "coord_lock_waiters"); got != float64(wantWaiters) {
				t.Errorf("sum of coord_lock_waiters = %v; want %d", got, wantWaiters)
			}
			// Lock 6 (six waiters) is among the first whatever the bound.
			if v, ok := value(mfs, "coord_lock_waiters", "lock \"6\"\n<b>"); !ok || v != 6 {
				t.Errorf("coord_lock_waiters of lock 6 = %v, %v; want 6, a series of its own", v, ok)
			}
		})
	}
}

// The page's data escapes markup: /state.json and each /events message
// carry a name with <, >, & and a newline as JSON escapes, and decode to
// the name itself; an /events message is one line.
func TestPageDataEscapes(t *testing.T) {
	name := "<script>alert(1)</script>\n&amp;\"'"
	url := serve(t, fakeSource{locks: []coord.Status{{Name: name, Held: true, Token: 7, Known: true,
		Holders: []coord.Process{{Host: "<b>h</b>", PID: 1, Key: "/k", Revision: 7}}}}})
	waitMetrics(t, url, time.Minute, "the lock", func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := value(mfs, "coord_locks_held", name)
		return v == 1
	})
	resp, err := http.Get(url + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.ContainsAny(body, "<>") || bytes.Contains(body, []byte("&amp")) {
		t.Errorf("/state.json = %s; want <, > and & escaped", body)
	}
	var v exporter.View
	if err := json.Unmarshal(body, &v); err != nil || len(v.Locks) != 1 || v.Locks[0].Name != name || v.Locks[0].Holders[0].Host != "<b>h</b>" {
		t.Errorf("/state.json decodes to %+v, %v; want the lock %q held on <b>h</b>", v, err, name)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/state.json Content-Type %q", ct)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/events", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
	if !ok || strings.ContainsAny(data, "<>") {
		t.Fatalf("first /events line %q; want data: and escaped JSON", line)
	}
	if err := json.Unmarshal([]byte(data), &v); err != nil || v.Locks[0].Name != name {
		t.Errorf("/events message decodes to %+v, %v; want the lock %q", v, err, name)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy %q; want script-src 'self'", csp)
	}
}
