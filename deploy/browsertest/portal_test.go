package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/deploy/logbook/app"
	"github.com/logbookhq/logbook/pkg/config"
)

const apiKey = "sk_browser_test_0123456789abcdefghij"

// chromium finds the browser: LOGBOOK_CHROMIUM, else chromium on the PATH. Without one the test
// is skipped, unless LOGBOOK_REQUIRE_BROWSER=1 (set by .ci/run, which installs it) makes that a
// failure.
func chromium(t *testing.T) string {
	path := os.Getenv("LOGBOOK_CHROMIUM")
	if path == "" {
		path, _ = exec.LookPath("chromium")
	}
	if path == "" {
		if os.Getenv("LOGBOOK_REQUIRE_BROWSER") == "1" {
			t.Fatal("chromium not found and LOGBOOK_REQUIRE_BROWSER=1: apt-get install -y chromium")
		}
		t.Skip("chromium not installed (apt-get install -y chromium; .ci/run does)")
	}
	return path
}

type logbook struct {
	t    *testing.T
	base string
}

func (l *logbook) call(method, path string, body any) (int, []byte) {
	l.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(method, l.base+path, bytes.NewReader(b))
	require.NoError(l.t, err)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(l.t, err)
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

func (l *logbook) emit(org, action, actorID, actorName string, at time.Time, meta map[string]any) {
	l.t.Helper()
	status, body := l.call("POST", "/audit_logs/events", map[string]any{
		"organization_id": org,
		"event": map[string]any{
			"action": action, "occurred_at": at.UTC().Format(time.RFC3339Nano),
			"actor":    map[string]any{"id": actorID, "type": "user", "name": actorName},
			"targets":  []any{map[string]any{"id": "doc_42", "type": "document", "name": "Q3 plan"}},
			"context":  map[string]any{"location": "203.0.113.9", "user_agent": "Firefox/128.0"},
			"metadata": meta,
		},
	})
	require.Equal(l.t, http.StatusOK, status, "%s", body)
}

func (l *logbook) waitStored(org string, n int) {
	l.t.Helper()
	require.Eventually(l.t, func() bool {
		_, body := l.call("GET", "/audit_logs/events?limit=1000&organization_id="+org, nil)
		var list struct{ Data []any }
		_ = json.Unmarshal(body, &list)
		return len(list.Data) == n
	}, 30*time.Second, 50*time.Millisecond)
}

func (l *logbook) link(org string) string {
	l.t.Helper()
	status, body := l.call("POST", "/portal/links", map[string]string{"organization_id": org})
	require.Equal(l.t, http.StatusCreated, status, "%s", body)
	var out struct{ URL string }
	require.NoError(l.t, json.Unmarshal(body, &out))
	return out.URL
}

// run runs one browser action and returns its value, failing the test on error.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return run(t, ctx, chromedp.Text(chromedp.CSS(sel)))
}

// screenshot saves the page as a PNG in dir, the test's temporary folder (and in
// LOGBOOK_SCREENSHOT_DIR when set, to keep it).
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := run(t, ctx, chromedp.FullScreenshot(100))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o600))
	keep(t, name, png)
	t.Logf("screenshot: %s (%d bytes)", filepath.Join(dir, name), len(png))
}

func keep(t *testing.T, name string, png []byte) {
	if dir := os.Getenv("LOGBOOK_SCREENSHOT_DIR"); dir != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o600))
	}
}

func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(60*time.Second))
}

func TestPortalInChromium(t *testing.T) {
	exe := chromium(t)
	dir := t.TempDir()
	cfg := app.ConfigFromEnv(config.FromMap(map[string]string{
		"LOGBOOK_DATA_DIR": filepath.Join(dir, "data"), "LOGBOOK_ADDR": "127.0.0.1:0",
		"LOGBOOK_API_KEY": apiKey, "LOGBOOK_BATCH_WAIT": "50ms",
	}))
	a, err := app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer func() { require.NoError(t, a.Close()) }()
	lb := &logbook{t: t, base: "http://" + a.Addr}

	const org, other = "org_acme", "org_globex"
	base := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	actions := []string{"user.signed_in", "document.viewed", "document.updated", "user.signed_out"}
	const total = 150 // more than one page (100), so the table must load more as it scrolls
	for i := 0; i < total; i++ {
		lb.emit(org, actions[i%4], fmt.Sprintf("user_%02d", i%5), []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"}[i%5],
			base.Add(time.Duration(i)*time.Minute), map[string]any{"request_no": i, "plan": "enterprise", "mfa": i%2 == 0})
	}
	lb.emit(other, "document.deleted", "user_x", "Hank Scorpio", base, map[string]any{"secret": "globex-only"})
	lb.waitStored(org, total)
	lb.waitStored(other, 1)
	link := lb.link(org)

	downloads := filepath.Join(dir, "downloads")
	require.NoError(t, os.MkdirAll(downloads, 0o750))
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1400, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	do(t, bctx) // starts the browser; its context carries no timeout, or the timeout would end the browser
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	_, err = chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	})
	require.NoError(t, err)

	start := time.Now()
	res, err := chromedp.RunResponse(ctx, chromedp.Navigate(link))
	require.NoError(t, err)
	require.EqualValues(t, http.StatusOK, res.Status)
	do(t, ctx, chromedp.WaitVisible(chromedp.CSS(`#events tbody tr`)),
		until(`document.getElementById('status').textContent === '100 events shown'`))
	t.Logf("page showed its first 100 events %s after navigating", time.Since(start))
	assert.Equal(t, org, text(t, ctx, `#org`))
	assert.Equal(t, actions[(total-1)%4], text(t, ctx, `#events tbody tr:first-child td:nth-child(2)`), "newest first")
	png := run(t, ctx, chromedp.CaptureScreenshot())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "portal-list.png"), png, 0o600))
	keep(t, "portal-list.png", png)

	// Scrolling to the end loads the next page through the cursor, until the trail ends.
	do(t, ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, document.body.scrollHeight)`),
		until(`document.getElementById('status').textContent.includes('end of the audit trail')`))
	assert.Equal(t, total, run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('#events tbody tr').length`)))
	assert.Equal(t, total, run(t, ctx, chromedp.Evaluate[int](`new Set([...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.id)).size`)), "no event twice")
	assert.Equal(t, actions[0], text(t, ctx, `#events tbody tr:last-child td:nth-child(2)`), "oldest last")

	// Filter by an action prefix and an actor id: the table shows exactly the matching events.
	do(t, ctx,
		chromedp.SetValue(chromedp.CSS(`input[name=actions]`), "document.*"),
		chromedp.SetValue(chromedp.CSS(`input[name=actor]`), "user_01"),
		chromedp.Click(chromedp.CSS(`#filters button[type=submit]`)),
		until(`document.getElementById('status').textContent.startsWith('16 events')`))
	shown := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#events tbody tr td:nth-child(2)')].map(td => td.textContent)`))
	// user_01 acts on i%5 == 1 and document.* actions are i%4 in {1, 2}: i%20 in {1, 6}, newest first.
	require.Len(t, shown, 16)
	for i, a := range shown {
		assert.Equal(t, []string{"document.updated", "document.viewed"}[i%2], a)
	}

	// Open the newest match: the detail view shows its actor, context and every metadata key.
	do(t, ctx, chromedp.Click(chromedp.CSS(`#events tbody tr:first-child`)), chromedp.WaitVisible(chromedp.CSS(`#detail`)))
	assert.Equal(t, "document.updated", text(t, ctx, `#detail-title`))
	actor := text(t, ctx, `#detail-actor`)
	assert.Contains(t, actor, "Grace Hopper")
	assert.Contains(t, actor, "user_01")
	metadata := text(t, ctx, `#detail-metadata`)
	for _, want := range []string{"mfa", "true", "plan", "enterprise", "request_no", "146"} {
		assert.Contains(t, metadata, want)
	}
	assert.Contains(t, text(t, ctx, `#detail pre`), `"location": "203.0.113.9"`)

	screenshot(t, ctx, dir, "portal-detail.png")

	// Export what the filters select (actions and the actor id) and download the CSV.
	do(t, ctx, chromedp.Click(chromedp.CSS(`#close`)), chromedp.Click(chromedp.CSS(`#export`)),
		until(`document.getElementById('export-status').textContent.startsWith('Export ready')`))
	var csv []byte
	require.Eventually(t, func() bool {
		files, _ := filepath.Glob(filepath.Join(downloads, "*.csv"))
		if len(files) != 1 {
			return false
		}
		csv, _ = os.ReadFile(files[0])
		return bytes.Count(csv, []byte("\n")) >= 5
	}, 20*time.Second, 50*time.Millisecond, "the CSV was not downloaded")
	assert.Equal(t, 16, strings.Count(string(csv), "Grace Hopper"), "the export holds the filtered events")
	assert.NotContains(t, string(csv), "Hank Scorpio")

	// No other organization's data ever reaches the page.
	assert.NotContains(t, text(t, ctx, `body`), "Hank Scorpio")

	// A forged link and a link pointed at another organization get a 401 or 403 page, no data.
	u, err := url.Parse(link)
	require.NoError(t, err)
	tok := u.Query().Get("token")
	forged, otherOrg := *u, *u
	forged.RawQuery = url.Values{"token": {other + tok[strings.IndexByte(tok, '.'):]}}.Encode()
	otherOrg.RawQuery = url.Values{"token": {tok}, "organization_id": {other}}.Encode()
	for _, c := range []struct {
		url    string
		status int64
	}{{forged.String(), http.StatusUnauthorized}, {otherOrg.String(), http.StatusForbidden}} {
		res, err := chromedp.RunResponse(ctx, chromedp.Navigate(c.url))
		require.NoError(t, err)
		assert.Equal(t, c.status, res.Status)
		assert.NotEmpty(t, text(t, ctx, `#denied-reason`))
		assert.Zero(t, run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('table').length`)))
		body := text(t, ctx, `body`)
		assert.NotContains(t, body, "Hank Scorpio")
		assert.NotContains(t, body, "Ada Lovelace")
	}
	screenshot(t, ctx, dir, "portal-denied.png")
}
