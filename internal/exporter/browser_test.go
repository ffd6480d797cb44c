package exporter_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/toolchainkit/coord/coord"
	"github.com/toolchainkit/coord/internal/exporter"
)

// chromium returns the browser to test the page in; without one the test
// is skipped, except on CI, which must have it (.ci/run installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH; CI installs it (.ci/run)")
	}
	t.Skip("no chromium on PATH")
	return ""
}

// The page in a real browser: a lock taken after it loaded appears without
// a reload, and names full of markup show as text: the DOM holds their
// literal text, no element they spell, and no dialog opened.
func TestPageInBrowser(t *testing.T) {
	path := chromium(t)
	b := backend{name: "file", dir: t.TempDir()}
	b.start(t)
	e := exporter.New(b.manager(t, coord.ReportOnly()), exporter.WithInterval(100*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.Run(ctx)
	}()
	var pageLoads atomic.Int64
	h := e.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			pageLoads.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	defer func() {
		cancel()
		srv.Close()
		wg.Wait()
	}()

	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU)...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	var dialogs atomic.Int64
	if err := chromedp.Listen(bctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("body[data-version]"))); err != nil {
		t.Fatal(err)
	}
	rows := func() []string {
		t.Helper()
		names, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](
			`Array.from(document.querySelectorAll("#locks tbody td.name")).map(td => td.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if got := rows(); len(got) != 0 {
		t.Fatalf("rows before any lock = %q; want none", got)
	}

	hostile := []string{`<script>alert(1)</script>`, `<img src=x onerror="alert(2);window.pwned=1">`, `"quoted" & 'single'`}
	m := b.manager(t)
	for _, name := range hostile {
		l, err := m.Lock(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
	}
	want, _ := json.Marshal(hostile)
	wctx, wcancel := context.WithTimeout(bctx, 20*time.Second)
	_, err := chromedp.Run(wctx, chromedp.Poll[bool](
		`(function(){ const want = `+string(want)+`; const got = Array.from(document.querySelectorAll("#locks tbody td.name")).map(td => td.textContent);
		  return want.every(n => got.includes(n)); })()`, chromedp.WithPollingTimeout(20*time.Second)))
	wcancel()
	if err != nil {
		t.Fatalf("the locks taken after the page loaded did not show (rows %q): %v", rows(), err)
	}
	if n := pageLoads.Load(); n != 1 {
		t.Errorf("the page was loaded %d times; want once: updates come without a reload", n)
	}
	var injected struct {
		Scripts, Images int
		Pwned           bool
	}
	injected, err = chromedp.Run(bctx, chromedp.Evaluate[struct {
		Scripts, Images int
		Pwned           bool
	}](`({Scripts: document.scripts.length, Images: document.images.length, Pwned: window.pwned === 1})`))
	if err != nil {
		t.Fatal(err)
	}
	if injected.Scripts != 1 || injected.Images != 0 || injected.Pwned || dialogs.Load() != 0 {
		t.Errorf("after hostile names: %d scripts (want 1, app.js), %d images (want 0), pwned %v, %d dialogs (want 0)",
			injected.Scripts, injected.Images, injected.Pwned, dialogs.Load())
	}
}
