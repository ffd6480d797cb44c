// Package exporter serves what coord's locks are doing, for people and for
// Prometheus: /metrics, a live status page at / (updated through
// server-sent events at /events, its data at /state.json) and /healthz.
//
// It learns of the locks from a Source (a coord.Manager made with
// coord.ReportOnly): on etcd one watch on the prefix, on file a read of the
// lock directory every interval. It holds no lock and writes nothing.
//
// What it counts, it counts from what it saw: a grant and release that
// fall between two reads of a lock directory go unseen, and so do the
// changes while etcd did not answer (the read after it counts a holder
// that changed meanwhile as one grant). The counters start at 0 with the
// exporter; the holders it finds at start are not grants.
//
// Names are user data: the page sets them as text, never as markup, and
// the JSON it reads escapes <, > and &. The label set of the per-name
// metrics is bounded: the MaxNames locks with the most waiters (then the
// oldest wait or hold) get a series of their own, the rest are summed in
// name="other" (a lock that is itself named "other" always is).
package exporter

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/toolchainkit/coord/coord"
)

// Source is where the exporter learns of the locks; coord.Manager is one.
type Source interface {
	Watch(ctx context.Context, interval time.Duration, f func(coord.Change)) error
	// Requests is how many requests the source has sent to its backend.
	Requests() int64
	Backend() string
}

// DefaultMaxNames is how many lock names get series of their own.
const DefaultMaxNames = 50

// Option configures an Exporter.
type Option func(*options)

type options struct {
	maxNames int
	interval time.Duration
	log      *zap.Logger
	now      func() time.Time
}

// WithMaxNames sets how many lock names get a series of their own (see
// the package doc); n < 1 means DefaultMaxNames.
func WithMaxNames(n int) Option { return func(o *options) { o.maxNames = n } }

// WithInterval sets how often the source reads a lock directory or checks
// that etcd answers; 0 means coord.DefaultWatchInterval.
func WithInterval(d time.Duration) Option { return func(o *options) { o.interval = d } }

// WithLogger sets the logger; the default logs nothing.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// Exporter keeps the state of the locks and serves it.
type Exporter struct {
	src      Source
	maxNames int
	interval time.Duration
	log      *zap.Logger
	st       *state
	reg      *prometheus.Registry
}

// New returns an Exporter of src's locks; Run feeds it.
func New(src Source, opts ...Option) *Exporter {
	o := options{maxNames: DefaultMaxNames, log: zap.NewNop(), now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxNames < 1 {
		o.maxNames = DefaultMaxNames
	}
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "coord_wait_duration_seconds",
		Help: "Time from when a wait was first seen to its grant (0 for a grant seen without a wait).",
		// From a handoff to an hour.
		Buckets: []float64{0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
	})
	e := &Exporter{src: src, maxNames: o.maxNames, interval: o.interval, log: o.log, reg: prometheus.NewRegistry()}
	e.st = newState(src.Backend(), o.now, hist.Observe)
	e.reg.MustRegister(newCollector(e), hist,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return e
}

// Run follows the source until ctx ends, and then returns ctx's error.
func (e *Exporter) Run(ctx context.Context) error {
	return e.src.Watch(ctx, e.interval, func(c coord.Change) {
		if c.Err != nil {
			e.log.Warn("backend does not answer", zap.Error(c.Err))
		}
		e.st.apply(c)
	})
}

//go:embed page
var page embed.FS

// Handler serves /metrics, /healthz, the page and its data. Its
// long-lived /events responses end when their request's context does.
func (e *Exporter) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /state.json", e.serveState)
	mux.HandleFunc("GET /events", e.serveEvents)
	files, _ := fs.Sub(page, "page") // a directory of this package: cannot fail
	mux.Handle("GET /", http.FileServerFS(files))
	return secure(mux)
}

// secure sets headers that keep the page to its own script and styles:
// even a name that got into the markup could not run.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}
