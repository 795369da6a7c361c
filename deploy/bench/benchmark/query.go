package benchmark

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
)

// E2EOrg receives the end-to-end probes; LiveOrgs the single-event load (kept apart from the
// stored data set so its counts stay exact).
const E2EOrg = "org_01BENCHE2EPROBE"

// LiveOrgs receive the single-event and background load.
var LiveOrgs = []string{"org_01BENCHLIVE1", "org_01BENCHLIVE2", "org_01BENCHLIVE3", "org_01BENCHLIVE4"}

// LiveBodies are n create-event bodies spread over LiveOrgs, occurred now.
func LiveBodies(n int, seed uint64) [][]byte {
	g := &Gen{End: time.Now(), Span: time.Hour, N: int64(n), Seed: seed}
	out := make([][]byte, n)
	for i := range out {
		e := g.At(int64(i))
		e.Org = LiveOrgs[i%len(LiveOrgs)]
		out[i] = e.Body()
	}
	return out
}

// E2EResult is the end-to-end phase: background load plus probes.
type E2EResult struct {
	Lat        []time.Duration // 2xx → first seen in GET /audit_logs/events
	Probes     int
	Unseen     int
	Background *StepResult
	BgTarget   float64
}

type listPage struct {
	Data []struct {
		ID    string `json:"id"`
		Actor struct {
			ID string `json:"id"`
		} `json:"actor"`
	} `json:"data"`
}

// EndToEnd runs a paced background load of bgRate events/s (bgConc senders) for d while sending
// 10 probe events a second to E2EOrg; one poller lists E2EOrg's newest events every 20 ms and
// records when each acknowledged probe first appears.
func (c *Client) EndToEnd(ctx context.Context, bodies [][]byte, bgRate float64, bgConc int, d time.Duration) (*E2EResult, error) {
	res := &E2EResult{BgTarget: bgRate}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Background: a pacer hands out send slots at bgRate; senders take them.
	slots := make(chan struct{}, bgConc)
	bg := &StepResult{Conc: bgConc, Fail: &Failures{}}
	bgCtx, bgCancel := context.WithTimeout(ctx, d)
	defer bgCancel()
	var bgWG sync.WaitGroup
	bgStart := time.Now()
	bgWG.Go(func() {
		defer close(slots)
		for i := 0; ; i++ {
			at := bgStart.Add(time.Duration(float64(i) / bgRate * float64(time.Second)))
			select {
			case <-bgCtx.Done():
				return
			case <-time.After(time.Until(at)):
			}
			select {
			case slots <- struct{}{}:
			case <-bgCtx.Done():
				return
			}
		}
	})
	var bgMu sync.Mutex
	for w := range bgConc {
		bgWG.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for range slots {
				t := time.Now()
				status, err := c.emit(bgCtx, bodies[r.IntN(len(bodies))], r)
				if bgCtx.Err() != nil {
					return
				}
				if bg.Fail.record(status, err) {
					lat := time.Since(t)
					bgMu.Lock()
					bg.OK++
					bg.Lat = append(bg.Lat, lat)
					bgMu.Unlock()
				}
			}
		})
	}

	// Probes and the poller.
	var mu sync.Mutex
	acked := map[string]time.Time{}
	seen := map[string]time.Time{}
	probeFail := &Failures{}
	var probeWG sync.WaitGroup
	stopPoll := make(chan struct{})
	pollDone := make(chan error, 1)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		q := "/audit_logs/events?organization_id=" + E2EOrg + "&limit=100"
		for {
			select {
			case <-stopPoll:
				pollDone <- nil
				return
			case <-ctx.Done():
				pollDone <- ctx.Err()
				return
			case <-t.C:
			}
			status, body, err := c.Do(ctx, http.MethodGet, q, "", nil, nil)
			if err != nil || status != http.StatusOK {
				if ctx.Err() == nil {
					pollDone <- fmt.Errorf("list during end-to-end: %d %v %s", status, err, truncate(string(body), 200))
				}
				return
			}
			now := time.Now()
			var p listPage
			if err := json.Unmarshal(body, &p); err != nil {
				pollDone <- err
				return
			}
			mu.Lock()
			for _, e := range p.Data {
				if _, ok := seen[e.Actor.ID]; !ok {
					seen[e.Actor.ID] = now
				}
			}
			mu.Unlock()
		}
	}()
	probeTick := time.NewTicker(100 * time.Millisecond)
	r := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	end := time.Now().Add(d)
	run := fmt.Sprintf("%x", time.Now().UnixNano())
	for n := 0; time.Now().Before(end); n++ {
		<-probeTick.C
		actor := fmt.Sprintf("probe_%s_%d", run, n)
		e := Ev{Org: E2EOrg, Event: event.Event{Action: "user.signed_in", OccurredAt: time.Now().UTC().Truncate(time.Millisecond),
			Actor: event.Entity{ID: actor, Type: "user", Name: "Probe"}, Targets: []event.Entity{{ID: "team_probe", Type: "team"}},
			Context: event.Context{Location: "127.0.0.1"}}}
		body := e.Body()
		res.Probes++
		probeWG.Go(func() {
			status, err := c.emit(ctx, body, rand.New(rand.NewPCG(uint64(n), r.Uint64())))
			if probeFail.record(status, err) {
				mu.Lock()
				acked[actor] = time.Now()
				mu.Unlock()
			}
		})
	}
	probeTick.Stop()
	probeWG.Wait()
	bgCancel()
	bgWG.Wait()
	bg.Elapsed = time.Since(bgStart)
	res.Background = bg
	// Wait (at most 30 s) for the last probes to appear.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		missing := 0
		for a := range acked {
			if _, ok := seen[a]; !ok {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stopPoll)
	if err := <-pollDone; err != nil {
		return nil, err
	}
	if n := probeFail.Total(); n > 0 {
		return nil, fmt.Errorf("end-to-end probes failed: %s", probeFail)
	}
	mu.Lock()
	defer mu.Unlock()
	for a, t := range acked {
		s, ok := seen[a]
		if !ok {
			res.Unseen++
			continue
		}
		res.Lat = append(res.Lat, max(0, s.Sub(t)))
	}
	return res, nil
}

// IsolationResult is what heavy searches cost the ingest path in the single process: the
// end-to-end phase (paced single-event ingest plus probes) run quiet and then again while
// SearchConc clients loop on free-text searches that scan the organization.
type IsolationResult struct {
	Quiet, Loaded *E2EResult
	SearchConc    int
	Searches      []time.Duration // the heavy searches' latencies during the loaded run
	SearchErrs    int
	Size          int64
}

// Isolation runs EndToEnd quiet, then with conc heavy searches of org running all along.
func (c *Client) Isolation(ctx context.Context, bodies [][]byte, bgRate float64, d time.Duration, org string, conc int) (*IsolationResult, error) {
	res := &IsolationResult{SearchConc: conc}
	var err error
	if res.Quiet, err = c.EndToEnd(ctx, bodies, bgRate, 16, d); err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1234))
			for sctx.Err() == nil {
				q := url.Values{"organization_id": {org}, "q": {fmt.Sprintf("document_01H%08d", r.IntN(100_000))}, "limit": {"50"}}
				t := time.Now()
				status, _, err := c.Do(sctx, http.MethodGet, "/audit_logs/events?"+q.Encode(), "", nil, nil)
				lat := time.Since(t)
				if sctx.Err() != nil {
					return
				}
				mu.Lock()
				if err != nil || status != http.StatusOK {
					res.SearchErrs++
				} else {
					res.Searches = append(res.Searches, lat)
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second) // the searches are running
	res.Loaded, err = c.EndToEnd(ctx, bodies, bgRate, 16, d)
	stop()
	wg.Wait()
	return res, err
}

// SearchKind is one typical query of the search benchmark.
type SearchKind struct {
	Name  string
	Query func(r *rand.Rand, org string, end time.Time) url.Values
}

// SearchKinds are the typical filters: organization + time range + action (the target's query),
// one actor, free text (common and rare), and the plain newest page. Pages of 50.
var SearchKinds = []SearchKind{
	{"org + 30-day range + action", func(r *rand.Rand, org string, end time.Time) url.Values {
		from := end.Add(-time.Duration(r.IntN(335)+30) * 24 * time.Hour)
		return url.Values{"organization_id": {org}, "actions": {Actions[r.IntN(10)]},
			"range_start": {event.FormatTime(from)}, "range_end": {event.FormatTime(from.Add(30 * 24 * time.Hour))}, "limit": {"50"}}
	}},
	{"org + actor_ids", func(r *rand.Rand, org string, _ time.Time) url.Values {
		return url.Values{"organization_id": {org}, "actor_ids": {ActorID(org, actorZipf.draw(r))}, "limit": {"50"}}
	}},
	{"org + q (a surname)", func(r *rand.Rand, org string, _ time.Time) url.Values {
		return url.Values{"organization_id": {org}, "q": {lastNames[r.IntN(len(lastNames))]}, "limit": {"50"}}
	}},
	{"org + q (a target id, rare)", func(r *rand.Rand, org string, _ time.Time) url.Values {
		return url.Values{"organization_id": {org}, "q": {fmt.Sprintf("document_01H%08d", r.IntN(100_000))}, "limit": {"50"}}
	}},
	{"org, newest page", func(_ *rand.Rand, org string, _ time.Time) url.Values {
		return url.Values{"organization_id": {org}, "limit": {"50"}}
	}},
}

// SearchResult is one kind's latencies and the average number of events returned.
type SearchResult struct {
	Kind    string
	Lat     []time.Duration
	AvgHits float64
}

// Search runs each kind n times in sequence (after 3 unmeasured warm-up queries) against org.
func (c *Client) Search(ctx context.Context, org string, end time.Time, n int) ([]SearchResult, error) {
	var out []SearchResult
	for ki, k := range SearchKinds {
		r := rand.New(rand.NewPCG(uint64(ki), 42))
		res := SearchResult{Kind: k.Name}
		hits := 0
		for i := -3; i < n; i++ {
			q := k.Query(r, org, end)
			t := time.Now()
			status, body, err := c.Do(ctx, http.MethodGet, "/audit_logs/events?"+q.Encode(), "", nil, nil)
			lat := time.Since(t)
			if err != nil || status != http.StatusOK {
				return nil, fmt.Errorf("search %q: %d %v %s", k.Name, status, err, truncate(string(body), 200))
			}
			if i < 0 {
				continue
			}
			var p listPage
			if err := json.Unmarshal(body, &p); err != nil {
				return nil, err
			}
			hits += len(p.Data)
			res.Lat = append(res.Lat, lat)
		}
		res.AvgHits = float64(hits) / float64(max(n, 1))
		out = append(out, res)
	}
	return out, nil
}

// ExportResult is one export: created, produced (ready), downloaded and counted.
type ExportResult struct {
	Rows       int64
	Produce    time.Duration // POST → state ready
	Total      time.Duration // POST → CSV fully downloaded
	Bytes      int64
	RSSBefore  int64
	PeakRSS    int64
	ExpectRows int64
}

// Export exports org's events in [from, to) as CSV and counts the downloaded rows.
func (c *Client) Export(ctx context.Context, org string, from, to time.Time) (*ExportResult, error) {
	res := &ExportResult{}
	body, _ := json.Marshal(map[string]string{"organization_id": org,
		"range_start": event.FormatTime(from), "range_end": event.FormatTime(to)})
	start := time.Now()
	status, b, err := c.Do(ctx, http.MethodPost, "/audit_logs/exports", "application/json", body, nil)
	if err != nil || status/100 != 2 {
		return nil, fmt.Errorf("create export: %d %v %s", status, err, truncate(string(b), 200))
	}
	var job struct {
		ID    string  `json:"id"`
		State string  `json:"state"`
		URL   *string `json:"url"`
	}
	if err := json.Unmarshal(b, &job); err != nil {
		return nil, err
	}
	for job.State != "ready" {
		if job.State == "error" {
			return nil, errors.New("export failed (state error)")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		status, b, err := c.Do(ctx, http.MethodGet, "/audit_logs/exports/"+job.ID, "", nil, nil)
		if err != nil || status != http.StatusOK {
			return nil, fmt.Errorf("poll export: %d %v %s", status, err, truncate(string(b), 200))
		}
		if err := json.Unmarshal(b, &job); err != nil {
			return nil, err
		}
	}
	res.Produce = time.Since(start)
	if job.URL == nil {
		return nil, errors.New("ready export without url")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *job.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("download export: %s %s", resp.Status, b)
	}
	cr := &countingReader{r: resp.Body}
	rd := csv.NewReader(cr)
	rd.ReuseRecord = true
	rd.FieldsPerRecord = -1
	var rows int64
	for {
		_, err := rd.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read export csv (row %d): %w", rows, err)
		}
		rows++
	}
	res.Total = time.Since(start)
	res.Rows = max(0, rows-1) // header
	res.Bytes = cr.n
	return res, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
