package exporter

import (
	"github.com/prometheus/client_golang/prometheus"
)

// OtherName is the name label of the series that sums up the locks beyond
// the first MaxNames.
const OtherName = "other"

// collector reads the state at each scrape: the gauges, with their name
// label bounded, and the counters.
type collector struct {
	e *Exporter

	held, waiters, oldestWait, downloads, downloadBytes, downloadTotal, up *prometheus.Desc
	grants, releases, lost, commits, requests                              *prometheus.Desc
}

func newCollector(e *Exporter) *collector {
	name := []string{"name"}
	return &collector{
		e:             e,
		held:          prometheus.NewDesc("coord_locks_held", "Whether the lock is held (1) or only awaited (0); the name=\"other\" series counts the held locks beyond the first max-names.", name, nil),
		waiters:       prometheus.NewDesc("coord_lock_waiters", "Processes waiting for the lock; name=\"other\" sums the locks beyond the first max-names.", name, nil),
		oldestWait:    prometheus.NewDesc("coord_oldest_wait_seconds", "Age of the oldest wait for any lock; 0 if nobody waits.", nil, nil),
		downloads:     prometheus.NewDesc("coord_downloads_in_progress", "Locks held by a download (a holder record with a destination or progress).", nil, nil),
		downloadBytes: prometheus.NewDesc("coord_download_bytes", "Bytes a download in progress has written so far, by lock name (bounded as coord_locks_held).", name, nil),
		downloadTotal: prometheus.NewDesc("coord_download_size_bytes", "Size a download in progress expects, by lock name; absent when unknown.", name, nil),
		up:            prometheus.NewDesc("coord_backend_up", "1 if the backend answered the exporter's last request, 0 if not.", nil, nil),
		grants:        prometheus.NewDesc("coord_grants_total", "Locks seen granted: a new holder (etcd: a new holder key; file: a new holder pid or token between two reads).", nil, nil),
		releases:      prometheus.NewDesc("coord_releases_total", "Holders seen to go, lost locks excepted.", nil, nil),
		lost:          prometheus.NewDesc("coord_locks_lost_total", "Locks seen lost: on file, a lock file removed while held; never counted on etcd, where a key deleted by its lease's end looks like one its holder deleted.", nil, nil),
		commits:       prometheus.NewDesc("coord_download_commits_total", "Downloads seen committed: etcd download records written (file keeps none).", nil, nil),
		requests:      prometheus.NewDesc("coord_exporter_backend_requests_total", "Requests the exporter sent to etcd (unary RPCs and watch streams); 0 on file.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.held, c.waiters, c.oldestWait, c.downloads, c.downloadBytes, c.downloadTotal, c.up,
		c.grants, c.releases, c.lost, c.commits, c.requests} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.e.st
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	var otherHeld, otherWaiters, otherBytes, otherTotal float64
	var others, downloads int
	i := 0
	for _, ls := range st.ranked(now) {
		s := ls.s
		held := 0.0
		if s.Held {
			held = 1
		}
		dl := isDownload(s)
		var done, total float64
		if dl {
			downloads++
			if p := s.Holder.Progress; p != nil {
				done, total = float64(p.Done), float64(p.Total)
			}
		}
		if i >= c.e.maxNames || s.Name == OtherName { // a lock called "other" is summed up too: one series per label value
			others++
			otherHeld += held
			otherWaiters += float64(len(s.Waiters))
			otherBytes += done
			otherTotal += total
			continue
		}
		i++
		gauge(c.held, held, s.Name)
		gauge(c.waiters, float64(len(s.Waiters)), s.Name)
		if dl {
			gauge(c.downloadBytes, done, s.Name)
			if total > 0 {
				gauge(c.downloadTotal, total, s.Name)
			}
		}
	}
	if others > 0 {
		gauge(c.held, otherHeld, OtherName)
		gauge(c.waiters, otherWaiters, OtherName)
		if otherBytes > 0 || otherTotal > 0 {
			gauge(c.downloadBytes, otherBytes, OtherName)
			gauge(c.downloadTotal, otherTotal, OtherName)
		}
	}
	gauge(c.oldestWait, st.oldestWait(now).Seconds())
	gauge(c.downloads, float64(downloads))
	up := 0.0
	if st.up {
		up = 1
	}
	gauge(c.up, up)
	counter(c.grants, float64(st.grants))
	counter(c.releases, float64(st.releases))
	counter(c.lost, float64(st.lost))
	counter(c.commits, float64(st.commits))
	counter(c.requests, float64(c.e.src.Requests()))
}
