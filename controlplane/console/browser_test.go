package console_test

// Browser tests: the console in a real headless Chromium, driven over the
// DevTools protocol. They check what HTTP tests cannot: that a click on a
// phone-sized screen reaches the API and wakes the waiting agent, that the
// live script redraws a page without a reload and how fast, and that pages
// stay small. TestScreenshots (FACTORY_SCREENSHOTS=DIR, `make screenshots`)
// writes the pictures the README shows.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/server"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// tabTimeout bounds everything one test does in its tab.
const tabTimeout = 60 * time.Second

// Phone and desktop sizes, in CSS pixels: an iPhone 12-15's screen, and a
// laptop's browser window.
const (
	phoneWidth, phoneHeight     = 390, 844
	desktopWidth, desktopHeight = 1280, 900
)

// maxPageBytes bounds what a page costs to load, document, CSS and script
// together (console.md: pages stay under 200 KB).
const maxPageBytes = 200 << 10

// TestBrowser runs the console's browser checks in one Chromium, each
// subtest in a tab of its own with its own cookies.
func TestBrowser(t *testing.T) {
	b := startBrowser(t)

	t.Run("SignIn", func(t *testing.T) {
		f := startFactory(t, nil)
		tb := b.tab(t)
		tb.signIn(t, f)
		// The session carries to the next page: no second sign-in.
		tb.open(t, f.URL+"/")
		if h := tb.text(t, "h1"); h != "Overview" {
			t.Fatalf("overview after signing in: h1 %q, want Overview", h)
		}
	})

	t.Run("Approve", func(t *testing.T) {
		f := startFactory(t, nil)
		operator := bootstrapSubject(t, f)
		agent := newWaitingAgent(t, f, "forge")
		a := agent.requestTier2(t, "Deploy forge v1.4 to production", "production_deploy")
		final := agent.wait(t, a.GetId())

		tb := b.tab(t)
		tb.signIn(t, f)
		tb.open(t, f.URL+"/approvals")
		card := "#approval-" + a.GetId()
		clicked := time.Now()
		tb.click(t, card+" button.approve")
		got := decisionOf(t, final, "APPROVED")
		t.Logf("click → agent's WaitApproval stream: %v", time.Since(clicked).Round(time.Millisecond))
		if got.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_APPROVED {
			t.Fatalf("the agent was told %v, want APPROVED", got.GetState())
		}
		if got.GetDecidedBy() != operator {
			t.Fatalf("decided_by %q, want the operator %q", got.GetDecidedBy(), operator)
		}
		if got.GetAutoApproved() || got.GetExpired() {
			t.Fatalf("auto_approved %v, expired %v: want a person's decision", got.GetAutoApproved(), got.GetExpired())
		}
	})

	t.Run("RejectWithReason", func(t *testing.T) {
		f := startFactory(t, nil)
		agent := newWaitingAgent(t, f, "forge")
		a := agent.requestTier2(t, "Email the first customer the launch notes", "first_customer_message")
		final := agent.wait(t, a.GetId())

		tb := b.tab(t)
		tb.signIn(t, f)
		tb.open(t, f.URL+"/approvals")
		card := "#approval-" + a.GetId()
		const reason = "not before the pricing page is live"
		rejectForm := card + ` form:has(button[name="decision"][value="reject"])`
		// Rejecting is folded away behind "Reject or modify…": a person
		// opens it first.
		if folded := tb.eval(t, fmt.Sprintf(`!!document.querySelector(%q)?.closest("details:not([open])")`, rejectForm)); folded == true {
			tb.click(t, card+" details:not([open]) > summary")
		}
		tb.fill(t, rejectForm+` [name="reason"]`, reason)
		tb.click(t, rejectForm+` button[name="decision"][value="reject"]`)
		got := decisionOf(t, final, "REJECTED")
		if got.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_REJECTED {
			t.Fatalf("the agent was told %v, want REJECTED", got.GetState())
		}
		stored, err := factoryv1.NewApprovalServiceClient(f.dial(t, f.Operator)).GetApproval(t.Context(),
			&factoryv1.GetApprovalRequest{ApprovalId: a.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if s := stored.GetApproval(); s.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_REJECTED || s.GetReason() != reason {
			t.Fatalf("stored: %v with reason %q, want REJECTED with %q", s.GetState(), s.GetReason(), reason)
		}
		// Rejecting is dangerous (console.md): the page asks first.
		if asked := tb.dialogs(); len(asked) == 0 {
			t.Error("Reject asked for no confirmation (data-confirm)")
		} else {
			t.Logf("confirmation asked: %q", asked)
		}
	})

	t.Run("LiveTasks", func(t *testing.T) {
		f := startFactory(t, nil)
		queue := factoryv1.NewQueueServiceClient(f.dial(t, f.Operator))
		tb := b.tab(t)
		tb.signIn(t, f)
		tb.open(t, f.URL+"/tasks")
		tb.waitLive(t)
		// The marker lives as long as this document: a reload or a
		// navigation would drop it. The observer stamps each awaited row
		// the moment it enters the page.
		tb.eval(t, `window.__noReload = 1; window.__want = []; window.__seen = {};
			new MutationObserver(function () {
				for (const id of window.__want) {
					if (!window.__seen[id] && document.getElementById(id)) window.__seen[id] = Date.now();
				}
			}).observe(document.body, {childList: true, subtree: true}); true`)
		var worst time.Duration
		var all []string
		for i := range 5 {
			id := fmt.Sprintf("live-%d-%d", i, time.Now().UnixNano())
			tb.eval(t, fmt.Sprintf(`window.__want.push(%q); true`, "task-"+id))
			start := time.Now()
			if _, err := queue.CreateTask(t.Context(), &factoryv1.CreateTaskRequest{
				TaskId: id, Title: fmt.Sprintf("Summarise overnight build logs (%d)", i+1), Kind: "summary", Role: "researcher",
			}); err != nil {
				t.Fatal(err)
			}
			seen := pollValue[float64](t, tb, fmt.Sprintf(`window.__seen[%q]`, "task-"+id), 5*time.Second,
				"row #task-"+id+" to appear without a reload")
			lat := time.UnixMilli(int64(seen)).Sub(start)
			lat = max(lat, 0)
			worst = max(worst, lat)
			all = append(all, lat.Round(time.Millisecond).String())
			t.Logf("event → page: %v", lat.Round(time.Millisecond))
			// Apart, so each measures one event and not the script's
			// 250 ms spacing of redraws.
			time.Sleep(300 * time.Millisecond)
		}
		if still := tb.eval(t, `window.__noReload === 1 && performance.getEntriesByType("navigation").length === 1`); still != true {
			t.Fatal("the page was reloaded: the rows must arrive through the live redraw")
		}
		t.Logf("event → page over 5 tasks: max %v (each: %s)", worst.Round(time.Millisecond), strings.Join(all, ", "))
		if worst >= time.Second {
			t.Fatalf("event → page took up to %v, want under 1s", worst)
		}
	})

	t.Run("PhoneApprove", func(t *testing.T) {
		f := startFactory(t, nil)
		agent := newWaitingAgent(t, f, "forge")
		a := agent.requestTier2(t, "Point factory.example.com at the new load balancer", "dns_change")
		tb := b.tab(t)
		tb.phone(t, 3)
		tb.signIn(t, f)
		for _, path := range []string{"/approvals", "/approvals/" + a.GetId()} {
			tb.open(t, f.URL+path)
			sel := "#approval-" + a.GetId() + " button.approve"
			box := tb.screenBox(t, sel)
			t.Logf("%s on a %dx%d phone: Approve at x %.0f-%.0f, y %.0f-%.0f (page %.0f px wide)",
				path, phoneWidth, phoneHeight, box.Left, box.Right, box.Top, box.Bottom, box.ScrollWidth)
			if box.ScrollY != 0 || box.ScrollX != 0 {
				t.Fatalf("%s opened scrolled (%v, %v)", path, box.ScrollX, box.ScrollY)
			}
			if box.Top < 0 || box.Left < 0 || box.Right > phoneWidth || box.Bottom > phoneHeight {
				t.Errorf("%s: the Approve button (x %.0f-%.0f, y %.0f-%.0f) is not inside the %dx%d screen without scrolling",
					path, box.Left, box.Right, box.Top, box.Bottom, phoneWidth, phoneHeight)
			}
			if box.Right-box.Left < 44 || box.Bottom-box.Top < 32 {
				t.Errorf("%s: the Approve button is %.0fx%.0f px: too small a target for a thumb",
					path, box.Right-box.Left, box.Bottom-box.Top)
			}
			if box.ScrollWidth > phoneWidth {
				t.Errorf("%s is %.0f px wide on a %d px screen: it scrolls sideways", path, box.ScrollWidth, phoneWidth)
			}
		}
	})

	t.Run("PageSize", func(t *testing.T) {
		f := startFactory(t, nil)
		queue := factoryv1.NewQueueServiceClient(f.dial(t, f.Operator))
		batch := &factoryv1.CreateTasksRequest{}
		for i := range 60 {
			batch.Tasks = append(batch.Tasks, &factoryv1.CreateTaskRequest{
				Title: fmt.Sprintf("Research competitor pricing pages, batch %02d: collect plans, limits and the fine print", i+1),
				Kind:  "research", Role: "researcher", Priority: int32(i % 5),
				Labels: map[string]string{"project": "pricing", "batch": fmt.Sprint(i + 1)},
			})
		}
		if _, err := queue.CreateTasks(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		tb := b.tab(t)
		tb.signIn(t, f)
		for _, path := range []string{"/", "/tasks"} {
			sz := tb.pageSize(t, f.URL+path)
			t.Logf("%s: %s", path, sz)
			if path == "/tasks" {
				if rows := tb.eval(t, `document.querySelectorAll('tr[id^="task-"]').length`); rows != float64(50) {
					t.Errorf("/tasks shows %v task rows, want a page of 50", rows)
				}
			}
			if sz.total() >= maxPageBytes {
				t.Errorf("%s costs %d bytes to load, want under %d", path, sz.total(), maxPageBytes)
			}
		}
	})
}

// TestScreenshots fills a factory with a day's worth of work and writes a
// picture of every page at desktop and phone widths into
// $FACTORY_SCREENSHOTS, for the README (`make screenshots`).
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("FACTORY_SCREENSHOTS")
	if dir == "" {
		t.Skip("set FACTORY_SCREENSHOTS=DIR (make screenshots) to write the console's screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := startBrowser(t)
	rules := filepath.Join(t.TempDir(), "alerts.yaml")
	// Evaluated every second, so the alerts the data raises are firing
	// before the pictures are taken.
	if err := os.WriteFile(rules, []byte("interval: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := startFactory(t, func(c *server.Config) { c.Alerts.File = rules })
	d := seedMorning(t, f)

	pages := []struct{ name, path string }{
		{"overview", "/"},
		{"tasks", "/tasks"},
		{"task", "/tasks/" + d.task},
		{"approvals", "/approvals"},
		{"approval", "/approvals/" + d.approval},
		{"spend", "/spend"},
		{"fleet", "/fleet"},
		{"alerts", "/alerts"},
	}
	for _, size := range []struct {
		name          string
		width, height int64
		scale         float64
		mobile        bool
	}{
		{"desktop", desktopWidth, desktopHeight, 1, false},
		// 1.5 device pixels per CSS pixel: sharp enough, and the
		// longest pages stay under 300 KB.
		{"phone", phoneWidth, phoneHeight, 1.5, true},
	} {
		tb := b.tab(t)
		opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(size.scale)}
		if size.mobile {
			opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
		}
		tb.do(t, chromedp.EmulateViewport(size.width, size.height, opts...))
		// Signed out first, for the sign-in page.
		tb.open(t, f.URL+"/signin")
		tb.screenshot(t, filepath.Join(dir, "signin-"+size.name+".png"))
		tb.signIn(t, f)
		for _, p := range pages {
			status := tb.openStatus(t, f.URL+p.path)
			if status != 200 {
				t.Errorf("%s (%s): HTTP %d; no screenshot", p.name, p.path, status)
				continue
			}
			// Countdowns and live content settle after the script runs.
			tb.do(t, chromedp.Sleep(150*time.Millisecond))
			tb.screenshot(t, filepath.Join(dir, p.name+"-"+size.name+".png"))
		}
	}
}

// browser is one headless Chromium shared by a test's subtests.
type browser struct{ ctx context.Context }

// startBrowser starts Chromium for the test, or skips it when none is
// installed.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Skip("no Chromium on PATH (chromium, chromium-browser, google-chrome): .ci/run installs it (apt-get install -y chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		// CI runs as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(desktopWidth, desktopHeight),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first run starts the browser; it lives as long as ctx, so ctx
	// has no deadline (each tab has its own).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return &browser{ctx: ctx}
}

// tab is one browser tab in a browser context of its own (its own cookie
// jar), closed when the test ends. Confirmation dialogs (data-confirm) are
// accepted and remembered.
type tab struct {
	ctx     context.Context
	mu      sync.Mutex
	asked   []string
	metrics *pageMetrics
}

func (b *browser) tab(t *testing.T) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(ctx, tabTimeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	tb := &tab{ctx: ctx, metrics: &pageMetrics{byID: map[network.RequestID]*download{}}}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.asked = append(tb.asked, ev.Message)
			tb.mu.Unlock()
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	if err := chromedp.Listen(ctx, tb.metrics.listen); err != nil {
		t.Fatal(err)
	}
	return tb
}

func (tb *tab) dialogs() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Clone(tb.asked)
}

func (tb *tab) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// open loads url and fails the test unless it answers 200.
func (tb *tab) open(t *testing.T, url string) {
	t.Helper()
	if status := tb.openStatus(t, url); status != 200 {
		t.Fatalf("GET %s: HTTP %d, want 200 (is the page written yet?)", url, status)
	}
}

func (tb *tab) openStatus(t *testing.T, url string) int64 {
	t.Helper()
	resp, err := chromedp.Run(tb.ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.Status
}

// signIn signs in as the bootstrap operator the way a person does: the
// token typed into the sign-in form.
func (tb *tab) signIn(t *testing.T, f *factory) {
	t.Helper()
	tb.open(t, f.URL+"/signin")
	tb.do(t, chromedp.SendKeys(chromedp.ID("token"), f.Operator))
	resp, err := chromedp.RunResponse(tb.ctx, chromedp.Click(chromedp.CSS(`form[action="/signin"] button[type="submit"]`)))
	if err != nil {
		t.Fatalf("signing in: %v", err)
	}
	if resp.Status != 200 || strings.TrimSuffix(resp.URL, "/") != strings.TrimSuffix(f.URL, "/") {
		t.Fatalf("signing in landed on %s (HTTP %d), want the overview", resp.URL, resp.Status)
	}
	if h := tb.text(t, "h1"); h != "Overview" {
		t.Fatalf("after signing in: h1 %q, want Overview", h)
	}
}

func (tb *tab) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(tb.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// click clicks the first element sel matches once it is visible; a
// missing element fails after a few seconds, not the tab's whole minute.
func (tb *tab) click(t *testing.T, sel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("clicking %s: %v", sel, err)
	}
}

func (tb *tab) fill(t *testing.T, sel, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(sel), value)); err != nil {
		t.Fatalf("typing into %s: %v", sel, err)
	}
}

func (tb *tab) eval(t *testing.T, js string) any {
	t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[any](js))
	if err != nil {
		t.Fatalf("evaluating %.60q: %v", js, err)
	}
	return v
}

// pollValue waits until js is truthy in the page and returns its value.
func pollValue[T any](t *testing.T, tb *tab, js string, timeout time.Duration, what string) T {
	t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Poll[T](js,
		chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		t.Fatalf("waited %v for %s: %v", timeout, what, err)
	}
	return v
}

// waitLive waits until the page's event stream is connected: changes from
// then on reach the page.
func (tb *tab) waitLive(t *testing.T) {
	t.Helper()
	pollValue[bool](t, tb, `document.body.dataset.live === "ready"`, 10*time.Second, "the live event stream (body[data-live=ready])")
}

// phone makes the tab an iPhone 12-sized touch screen at the given pixel
// density.
func (tb *tab) phone(t *testing.T, scale float64) {
	t.Helper()
	tb.do(t, chromedp.EmulateViewport(phoneWidth, phoneHeight, chromedp.EmulateScale(scale), chromedp.EmulateMobile, chromedp.EmulateTouch))
}

// screenBox is where an element is on the screen, in CSS pixels relative to the
// viewport, with the page's scroll position and width.
type screenBox struct {
	Top, Left, Bottom, Right float64
	ScrollX, ScrollY         float64
	ScrollWidth              float64
}

func (tb *tab) screenBox(t *testing.T, sel string) screenBox {
	t.Helper()
	pollValue[bool](t, tb, fmt.Sprintf(`!!document.querySelector(%q)`, sel), 5*time.Second, sel)
	b, err := chromedp.Run(tb.ctx, chromedp.Evaluate[screenBox](fmt.Sprintf(`(function () {
		const r = document.querySelector(%q).getBoundingClientRect();
		return {Top: r.top, Left: r.left, Bottom: r.bottom, Right: r.right,
			ScrollX: window.scrollX, ScrollY: window.scrollY,
			ScrollWidth: document.documentElement.scrollWidth};
	})()`, sel)))
	if err != nil {
		t.Fatalf("locating %s: %v", sel, err)
	}
	return b
}

// screenshot writes a PNG of the whole page, beyond the viewport.
func (tb *tab) screenshot(t *testing.T, path string) {
	t.Helper()
	png, err := chromedp.Run(tb.ctx, fullPage)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d KB", filepath.Base(path), (len(png)+1023)/1024)
	if len(png) > 300<<10 {
		t.Logf("%s is over 300 KB: too big to commit comfortably", filepath.Base(path))
	}
}

// fullPage captures the page's whole scrollable area as a PNG at the
// emulated device's pixel density.
func fullPage(ctx context.Context, target *chromedp.Target) ([]byte, error) {
	m, err := cdp.Call(ctx, target, page.GetLayoutMetrics, cdp.Empty{})
	if err != nil {
		return nil, err
	}
	if m.CSSContentSize == nil {
		return nil, errors.New("no content size")
	}
	beyond := true
	shot, err := cdp.Call(ctx, target, page.CaptureScreenshot, page.CaptureScreenshotParams{
		Format:                page.CaptureScreenshotFormatPng,
		CaptureBeyondViewport: &beyond,
		Clip:                  &page.Viewport{X: 0, Y: 0, Width: m.CSSContentSize.Width, Height: m.CSSContentSize.Height, Scale: 1},
	})
	return shot.Data, err
}

// pageMetrics adds up what the tab downloads, by kind of resource.
type pageMetrics struct {
	mu   sync.Mutex
	byID map[network.RequestID]*download
}

type download struct {
	url   string
	kind  network.ResourceType
	bytes int64
	done  bool
}

// listen runs in the tab's event loop, in the order events arrive.
func (m *pageMetrics) listen(ev any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventResponseReceived:
		r := m.get(ev.RequestID)
		r.url, r.kind = ev.Response.URL, ev.Type
	case *network.EventLoadingFinished:
		r := m.get(ev.RequestID)
		r.bytes, r.done = int64(ev.EncodedDataLength), true
	}
}

func (m *pageMetrics) get(id network.RequestID) *download {
	r, ok := m.byID[id]
	if !ok {
		r = &download{}
		m.byID[id] = r
	}
	return r
}

// pageSize is what loading a page cost, in bytes on the wire (headers
// included).
type pageSize struct {
	html, css, js, other int64
}

func (s pageSize) total() int64 { return s.html + s.css + s.js + s.other }

func (s pageSize) String() string {
	return fmt.Sprintf("%.1f KB (HTML %.1f KB + CSS %.1f KB + JS %.1f KB + other %.1f KB)",
		kib(s.total()), kib(s.html), kib(s.css), kib(s.js), kib(s.other))
}

func kib(n int64) float64 { return float64(n) / 1024 }

// pageSize loads url with the cache off and adds up every finished
// download: the document, its stylesheet, its script, its icon. The event
// stream the page keeps open is not a download.
func (tb *tab) pageSize(t *testing.T, url string) pageSize {
	t.Helper()
	if _, err := chromedp.Call(tb.ctx, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true}); err != nil {
		t.Fatal(err)
	}
	tb.metrics.mu.Lock()
	clear(tb.metrics.byID)
	tb.metrics.mu.Unlock()
	tb.open(t, url)
	// The icon may come after the load event.
	pollValue[bool](t, tb, `document.readyState === "complete"`, 5*time.Second, "the page to load")
	tb.do(t, chromedp.Sleep(200*time.Millisecond))
	tb.metrics.mu.Lock()
	defer tb.metrics.mu.Unlock()
	var s pageSize
	for _, r := range tb.metrics.byID {
		if !r.done {
			continue
		}
		switch r.kind {
		case network.ResourceTypeDocument:
			s.html += r.bytes
		case network.ResourceTypeStylesheet:
			s.css += r.bytes
		case network.ResourceTypeScript:
			s.js += r.bytes
		default:
			s.other += r.bytes
		}
	}
	if s.html == 0 || s.css == 0 || s.js == 0 {
		t.Fatalf("%s: measured %s: the document, stylesheet or script was not seen", url, s)
	}
	return s
}

// bootstrapSubject is the name decisions made with the bootstrap token (and
// its console sessions) are recorded under.
func bootstrapSubject(t *testing.T, f *factory) string {
	t.Helper()
	who, err := factoryv1.NewAccessServiceClient(f.dial(t, f.Operator)).WhoAmI(t.Context(), &factoryv1.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return who.GetSubject()
}

// waitingAgent is an agent with its own token, as the factory's agents call.
type waitingAgent struct {
	name      string
	approvals factoryv1.ApprovalServiceClient
}

func newWaitingAgent(t *testing.T, f *factory, name string, roles ...string) *waitingAgent {
	t.Helper()
	_, secret := f.token(t, factoryv1.Role_ROLE_AGENT, name, roles...)
	return &waitingAgent{name: name, approvals: factoryv1.NewApprovalServiceClient(f.dial(t, secret))}
}

// requestTier2 asks for a decision a person must make.
func (a *waitingAgent) requestTier2(t *testing.T, what, kind string) *factoryv1.Approval {
	t.Helper()
	r, err := a.approvals.RequestApproval(t.Context(), &factoryv1.RequestApprovalRequest{
		What: what, Why: "the release checklist is green and the change is reviewed",
		Agent: a.name, Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_HIGH, Tier: 2, Kind: kind,
		PayloadJson: `{"version": "1.4.0", "hosts": ["app-1", "app-2"]}`,
		Timeout:     durationpb.New(10 * time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetApproval().GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING {
		t.Fatalf("request %q: %v, want PENDING (Tier 2 waits for a person)", what, r.GetApproval().GetState())
	}
	return r.GetApproval()
}

// wait opens the agent's WaitApproval stream and returns a channel that
// gets the final state. It returns once the stream has sent the current
// (pending) state, so a decision after it must wake the stream.
func (a *waitingAgent) wait(t *testing.T, id string) <-chan *factoryv1.Approval {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := a.approvals.WaitApproval(ctx, &factoryv1.WaitApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetFinal() || first.GetApproval().GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING {
		t.Fatalf("WaitApproval began with %v (final %v), want PENDING", first.GetApproval().GetState(), first.GetFinal())
	}
	final := make(chan *factoryv1.Approval, 1)
	go func() {
		defer close(final)
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			if m.GetFinal() {
				final <- m.GetApproval()
				return
			}
		}
	}()
	return final
}

// decisionOf waits a few seconds for the agent's stream to tell it the
// decision.
func decisionOf(t *testing.T, final <-chan *factoryv1.Approval, want string) *factoryv1.Approval {
	t.Helper()
	select {
	case a, ok := <-final:
		if !ok {
			t.Fatalf("the WaitApproval stream ended without a final state, want %s", want)
		}
		return a
	case <-time.After(5 * time.Second):
		t.Fatalf("the WaitApproval stream got no %s within 5s of the click", want)
	}
	return nil
}

// morning names the task and the request whose own pages are pictured.
type morning struct {
	task, approval string
}

// seedMorning fills f with a morning's work: tasks in every state, two
// requests waiting for a person and one decided, two agents' spend on
// three models today and three weeks of it before, against a budget (one
// agent over its alert line, which also fires the runaway alert), a
// dead-lettered task (another alert), and a GPU host with its agents.
func seedMorning(t *testing.T, f *factory) morning {
	t.Helper()
	ctx := t.Context()
	opConn := f.dial(t, f.Operator)
	queue := factoryv1.NewQueueServiceClient(opConn)
	budget := factoryv1.NewBudgetServiceClient(opConn)
	fleetc := factoryv1.NewFleetServiceClient(opConn)
	var d morning

	// The host and its agents first: placements let the agents' own
	// tokens report spend, and the host shows on the fleet page.
	for _, a := range []string{"forge", "scout", "sentinel"} {
		if _, err := fleetc.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: a, Host: "gpu-1"}); err != nil {
			t.Fatal(err)
		}
	}
	connectGPUHost(t, fleetc)

	create := func(r *factoryv1.CreateTaskRequest) *factoryv1.Task {
		t.Helper()
		res, err := queue.CreateTask(ctx, r)
		if err != nil {
			t.Fatalf("create %q: %v", r.GetTitle(), err)
		}
		return res.GetTask()
	}

	// One in progress and one dead-lettered, each through a real claim.
	_, forgeSecret := f.token(t, factoryv1.Role_ROLE_AGENT, "forge", "builder")
	forgeQ := factoryv1.NewQueueServiceClient(f.dial(t, forgeSecret))
	building := create(&factoryv1.CreateTaskRequest{Title: "Build forge v1.4 release artefacts (linux/amd64, linux/arm64)",
		Kind: "build", Role: "builder", Priority: 10, PayloadJson: `{"ref": "v1.4.0", "targets": ["linux/amd64", "linux/arm64"]}`,
		Labels: map[string]string{"release": "1.4"}})
	if _, err := forgeQ.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"},
		LeaseDuration: durationpb.New(30 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	_, sentinelSecret := f.token(t, factoryv1.Role_ROLE_AGENT, "sentinel", "tester")
	sentinelQ := factoryv1.NewQueueServiceClient(f.dial(t, sentinelSecret))
	flaky := create(&factoryv1.CreateTaskRequest{Title: "Run the integration suite against staging",
		Kind: "test", Role: "tester", Priority: 5, MaxAttempts: 1, Labels: map[string]string{"release": "1.4"}})
	claim, err := sentinelQ.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "sentinel", Roles: []string{"tester"}})
	if err != nil || len(claim.GetTasks()) != 1 {
		t.Fatalf("sentinel's claim: %v (%d tasks)", err, len(claim.GetTasks()))
	}
	if _, err := sentinelQ.FailTask(ctx, &factoryv1.FailTaskRequest{TaskId: flaky.GetId(), Agent: "sentinel",
		FencingToken: claim.GetTasks()[0].GetLease().GetToken(), Permanent: true,
		Error: "exit status 1: 3 of 212 tests failed (TestClaimUnderLoad, TestLeaseRescue, TestSpendRollover): staging database refused connections"}); err != nil {
		t.Fatal(err)
	}
	d.task = building.GetId()

	for _, r := range []*factoryv1.CreateTaskRequest{
		{Title: "Write the v1.4 release notes from the merged pull requests", Kind: "draft", Role: "researcher", Priority: 5, InitialState: factoryv1.TaskState_TASK_STATE_READY},
		{Title: "Compare hosted inference prices for Qwen2.5 72B", Kind: "research", Role: "researcher", InitialState: factoryv1.TaskState_TASK_STATE_READY},
		{Title: "Review the pricing page copy", Kind: "code_review", Role: "reviewer", InitialState: factoryv1.TaskState_TASK_STATE_REVIEW},
		{Title: "Deploy forge v1.4 to production", Kind: "production_deploy", Role: "deployer", DependsOn: []string{building.GetId()}},
		{Title: "Summarise yesterday's support inbox", Kind: "summary", Role: "researcher", InitialState: factoryv1.TaskState_TASK_STATE_DONE},
		{Title: "Rotate the staging TLS certificate", Kind: "build", Role: "builder", InitialState: factoryv1.TaskState_TASK_STATE_DONE},
		{Title: "Crawl competitor changelogs (paused for the quota)", Kind: "research", Role: "researcher", InitialState: factoryv1.TaskState_TASK_STATE_PAUSED},
	} {
		create(r)
	}

	// Two requests waiting for a person, one already decided.
	forge := newWaitingAgent(t, f, "forge")
	scout := newWaitingAgent(t, f, "scout")
	a := forge.requestTier2(t, "Deploy forge v1.4 to production (app-1, app-2)", "production_deploy")
	d.approval = a.GetId()
	scout.requestTier2(t, "Email the first customer the launch notes", "first_customer_message")
	rejected := scout.requestTier2(t, "Post the launch thread on the company account", "public_post")
	if _, err := factoryv1.NewApprovalServiceClient(opConn).Decide(ctx, &factoryv1.DecideRequest{ApprovalId: rejected.GetId(),
		Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT, Reason: "after the launch email, not before"}); err != nil {
		t.Fatal(err)
	}

	// A budget, and a day's spend by two agents on three models.
	for _, bud := range []*factoryv1.Budget{
		{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, TargetMicros: 30e6, AlertMicros: 50e6, CapMicros: 80e6, EmergencyMicros: 100e6},
		{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_AGENT, Key: "forge", TargetMicros: 6e6, AlertMicros: 8e6, CapMicros: 15e6},
	} {
		if _, err := budget.SetBudget(ctx, &factoryv1.SetBudgetRequest{Budget: bud}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	for _, who := range []struct {
		agent string
		calls []llmCall
	}{
		{"forge", []llmCall{
			{"claude-sonnet-4", "anthropic", factoryv1.SpendTier_SPEND_TIER_FRONTIER, 420_000, 61_000, 8_450_000},
			{"claude-sonnet-4", "anthropic", factoryv1.SpendTier_SPEND_TIER_FRONTIER, 95_000, 12_000, 2_210_000},
			{"qwen2.5:32b", "ollama", factoryv1.SpendTier_SPEND_TIER_LOCAL, 310_000, 44_000, 0},
		}},
		{"scout", []llmCall{
			{"gpt-4.1-mini", "openai", factoryv1.SpendTier_SPEND_TIER_MID, 880_000, 90_000, 1_640_000},
			{"claude-sonnet-4", "anthropic", factoryv1.SpendTier_SPEND_TIER_FRONTIER, 120_000, 18_000, 3_020_000},
		}},
	} {
		_, secret := f.token(t, factoryv1.Role_ROLE_AGENT, who.agent)
		b := factoryv1.NewBudgetServiceClient(f.dial(t, secret))
		for i, c := range who.calls {
			cost := c.micros
			if _, err := b.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
				Id: fmt.Sprintf("%s-%d", who.agent, i), Agent: who.agent, Host: "gpu-1", Model: c.model, Provider: c.provider,
				Tier: c.tier, InputTokens: c.in, OutputTokens: c.out, CostMicros: &cost,
				OccurredAt: timestamppb.New(now.Add(-time.Duration(len(who.calls)-i) * 37 * time.Minute)),
			}}); err != nil {
				t.Fatalf("%s's spend: %v", who.agent, err)
			}
		}
	}

	// Three weeks of history behind today, for the spend chart: weekdays
	// busier than weekends, nothing above the alert line.
	history := make([]*factoryv1.SpendEvent, 0, 2*21)
	for day := 1; day <= 21; day++ {
		at := now.AddDate(0, 0, -day)
		busy := int64(1)
		if wd := at.Weekday(); wd == time.Saturday || wd == time.Sunday {
			busy = 0
		}
		forgeCost := 4_000_000 + busy*9_000_000 + int64(day*733_000%5_000_000)
		scoutCost := 1_500_000 + busy*3_000_000 + int64(day*411_000%2_000_000)
		history = append(history,
			&factoryv1.SpendEvent{Id: fmt.Sprintf("forge-h%d", day), Agent: "forge", Host: "gpu-1", Model: "claude-sonnet-4",
				Provider: "anthropic", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER, InputTokens: forgeCost / 25, OutputTokens: forgeCost / 160,
				CostMicros: &forgeCost, OccurredAt: timestamppb.New(at)},
			&factoryv1.SpendEvent{Id: fmt.Sprintf("scout-h%d", day), Agent: "scout", Host: "gpu-1", Model: "gpt-4.1-mini",
				Provider: "openai", Tier: factoryv1.SpendTier_SPEND_TIER_MID, InputTokens: scoutCost / 2, OutputTokens: scoutCost / 18,
				CostMicros: &scoutCost, OccurredAt: timestamppb.New(at)})
	}
	if _, err := budget.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: history}); err != nil {
		t.Fatalf("spend history: %v", err)
	}

	// The alert evaluator runs every second here: wait for it to fire.
	ops := factoryv1.NewOpsServiceClient(opConn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := ops.ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		firing := 0
		for _, a := range r.GetAlerts() {
			if a.GetState() == factoryv1.AlertState_ALERT_STATE_FIRING {
				firing++
			}
		}
		if firing > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Log("no alert fired within 10s; the alerts picture shows none")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

type llmCall struct {
	model, provider string
	tier            factoryv1.SpendTier
	in, out         int64
	micros          int64
}

// connectGPUHost connects gpu-1 as its sidecar would, with an H100's
// readings, and keeps the stream open until the test ends.
func connectGPUHost(t *testing.T, fleetc factoryv1.FleetServiceClient) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := fleetc.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &factoryv1.Hello{Host: "gpu-1", Version: "1.4.0", Labels: map[string]string{"site": "home-lab", "gpu": "H100"},
		Capabilities: []string{"gpu", "disk", "probe"},
		Agents: []*factoryv1.HostedAgent{
			{Name: "forge", Roles: []string{"builder"}},
			{Name: "scout", Roles: []string{"researcher"}},
			{Name: "sentinel", Roles: []string{"tester"}},
		}}
	if err := st.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("gpu-1's Hello: %v", err)
	}
	const gib = 1 << 30
	tel := &factoryv1.Telemetry{CollectedAt: timestamppb.Now(),
		Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 80GB HBM3", Uuid: "GPU-5d3f1c2a-8e4b-4f7a-9c61-2b7d0e9a4f11",
			MemoryUsedBytes: 61 * gib, MemoryTotalBytes: 80 * gib, UtilizationPercent: 87, MemoryUtilizationPercent: 64,
			TemperatureCelsius: 63, PowerMilliwatts: 512_000, PowerLimitMilliwatts: 700_000, SmClockMhz: 1980, MemoryClockMhz: 2619}},
		Disks: []*factoryv1.DiskUsage{{Path: "/", UsedBytes: 412 * gib, AvailableBytes: 1298 * gib, TotalBytes: 1800 * gib}},
	}
	if err := st.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}
	// Answers (acks, commands) are read and dropped while the test runs.
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
}
