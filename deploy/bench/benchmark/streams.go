package benchmark

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Organizations of the alert and log-stream phases (the generator never uses them).
const (
	AlertOrg  = "org_bench_alerts"
	StreamOrg = "org_bench_stream"
)

// AlertResult is the alert phase: latency from a triggering event's 2xx to the firing's arrival
// at a webhook, under a paced background load.
type AlertResult struct {
	Lat        []time.Duration
	Probes     int
	Unseen     int
	Background *StepResult
}

// CatchUpResult is the log-stream phase: one stream catching up on a backlog after its
// destination was down.
type CatchUpResult struct {
	Events int
	// FirstAfter is from the destination's return to the first delivery (the backoff then in
	// force); Drain from the first delivery to the last.
	FirstAfter, Drain time.Duration
	Requests          int64
}

// Rate is the catch-up throughput in events per second.
func (c *CatchUpResult) Rate() float64 { return float64(c.Events) / c.Drain.Seconds() }

// loopback serves h on a free loopback port until the returned stop is called.
func loopback(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// createJSON POSTs body to path and decodes the answer's id.
func (c *Client) createJSON(ctx context.Context, path, body string) (string, error) {
	status, b, err := c.Do(ctx, http.MethodPost, path, "application/json", []byte(body), nil)
	if err != nil {
		return "", err
	}
	if status != http.StatusCreated {
		return "", fmt.Errorf("POST %s: %d %s", path, status, truncate(string(b), 300))
	}
	var v struct{ ID string }
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	return v.ID, nil
}

// alarmLine is a bulk line for AlertOrg whose action the benchmark's rule matches.
func alarmLine(i int) []byte {
	return fmt.Appendf(nil, `{"organization_id":%q,"event":{"action":"bench.alarm","occurred_at":%q,`+
		`"actor":{"id":"user_%d","type":"user"},"targets":[],"context":{"location":"198.51.100.1"}}}`+"\n",
		AlertOrg, time.Now().UTC().Format(time.RFC3339Nano), i)
}

// AlertLatency creates a rule firing on every bench.alarm event of AlertOrg, delivered to a webhook
// on loopback, then for d sends bgRate events/s of background load (bgConc senders) and 10
// triggering events a second, each through a one-line bulk request (whose answer names the
// event's id). The latency of a probe is from its 2xx to the firing's arrival.
func (c *Client) AlertLatency(ctx context.Context, bodies [][]byte, bgRate float64, bgConc int, d time.Duration) (*AlertResult, error) {
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	url, stop, err := loopback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		var f struct {
			EventIDs []string `json:"event_ids"`
		}
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &f) == nil && len(f.EventIDs) > 0 {
			mu.Lock()
			if _, ok := arrived[f.EventIDs[0]]; !ok {
				arrived[f.EventIDs[0]] = now
			}
			mu.Unlock()
		}
	}))
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, err := c.createJSON(ctx, "/alert_rules", fmt.Sprintf(`{"organization_id":%q,"name":"bench alarm",`+
		`"match":{"actions":["bench.alarm"]},"destination":{"type":"webhook","url":%q}}`, AlertOrg, url)); err != nil {
		return nil, err
	}
	res := &AlertResult{}
	bgCtx, bgCancel := context.WithTimeout(ctx, d)
	defer bgCancel()
	var bgWG sync.WaitGroup
	res.Background = c.paced(bgCtx, &bgWG, bodies, bgRate, bgConc)

	acked := map[string]time.Time{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var probeWG sync.WaitGroup
	for i := 0; bgCtx.Err() == nil; i++ {
		select {
		case <-bgCtx.Done():
		case <-tick.C:
			probeWG.Go(func() {
				status, b, err := c.Do(ctx, http.MethodPost, "/audit_logs/events/bulk", "application/x-ndjson", alarmLine(i), nil)
				at := time.Now()
				if err != nil || status != http.StatusOK {
					return
				}
				var ans bulkAnswer
				if json.Unmarshal(b, &ans) != nil || len(ans.Results) != 1 || ans.Results[0].ID == "" {
					return
				}
				mu.Lock()
				acked[ans.Results[0].ID] = at
				mu.Unlock()
			})
		}
	}
	probeWG.Wait()
	bgWG.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		missing := 0
		for id := range acked {
			if _, ok := arrived[id]; !ok {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	res.Probes = len(acked)
	for id, at := range acked {
		if got, ok := arrived[id]; ok {
			res.Lat = append(res.Lat, got.Sub(at))
		} else {
			res.Unseen++
		}
	}
	return res, nil
}

// paced sends rate events/s until ctx ends (wg tracks its goroutines): every 100 ms a bulk request
// of rate/10 lines, each request on its own goroutine, so the load holds even on a busy machine
// where one-event requests could not reach it.
func (c *Client) paced(ctx context.Context, wg *sync.WaitGroup, bodies [][]byte, rate float64, conc int) *StepResult {
	st := &StepResult{Conc: conc, Fail: &Failures{}}
	per := max(1, int(rate/10))
	start := time.Now()
	var mu sync.Mutex
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		sem := make(chan struct{}, conc)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				mu.Lock()
				st.Elapsed = time.Since(start)
				mu.Unlock()
				return
			case <-tick.C:
			}
			var blob []byte
			for k := range per {
				blob = append(blob, bodies[(i*per+k)%len(bodies)]...)
				blob = append(blob, '\n')
			}
			select {
			case sem <- struct{}{}:
			default:
				st.Fail.add("client_busy") // the previous requests have not come back
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				status, b, err := c.Do(ctx, http.MethodPost, "/audit_logs/events/bulk", "application/x-ndjson", blob, nil)
				if ctx.Err() != nil {
					return
				}
				var ans bulkAnswer
				if st.Fail.record(status, err) && json.Unmarshal(b, &ans) == nil {
					mu.Lock()
					st.OK += ans.Accepted
					mu.Unlock()
				}
			})
		}
	})
	return st
}

// CatchUp creates a log stream of StreamOrg to an HTTP endpoint on loopback that answers 503, loads
// n events into StreamOrg in bulk, waits until the stream holds all of them undelivered, then lets
// the endpoint accept and measures how fast the stream delivers its backlog.
func (c *Client) CatchUp(ctx context.Context, n int) (*CatchUpResult, error) {
	var down atomic.Bool
	down.Store(true)
	var events, requests atomic.Int64
	var first, last atomic.Int64
	url, stop, err := loopback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var evs []json.RawMessage
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &evs) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		last.Store(now)
		events.Add(int64(len(evs)))
		requests.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	if err != nil {
		return nil, err
	}
	defer stop()
	id, err := c.createJSON(ctx, "/log_streams", fmt.Sprintf(`{"organization_id":%q,"name":"bench catch-up",`+
		`"destination":{"type":"http","url":%q},"batch":{"max_events":1000,"max_bytes":4194304,"linger_ms":100}}`, StreamOrg, url))
	if err != nil {
		return nil, err
	}
	// The backlog, 1,000 events per bulk request.
	for sent := 0; sent < n; {
		var body strings.Builder
		k := min(1000, n-sent)
		for i := range k {
			body.WriteString(fmt.Sprintf(`{"organization_id":%q,"event":{"action":"bench.streamed","occurred_at":%q,`+
				`"actor":{"id":"user_%d","type":"user"},"targets":[{"id":"doc_%d","type":"document"}],"context":{"location":"198.51.100.2"},"metadata":{"i":%d}}}`+"\n",
				StreamOrg, time.Now().UTC().Format(time.RFC3339Nano), (sent+i)%100, sent+i, sent+i))
		}
		status, b, err := c.Do(ctx, http.MethodPost, "/audit_logs/events/bulk", "application/x-ndjson", []byte(body.String()), nil)
		if err != nil || status != http.StatusOK {
			return nil, fmt.Errorf("bulk load of the backlog: %d %v %s", status, err, truncate(string(b), 200))
		}
		sent += k
	}
	// Wait until the whole backlog is in the stream's consumer, undelivered.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		status, b, err := c.Do(ctx, http.MethodGet, "/log_streams/"+id, "", nil, nil)
		if err != nil || status != http.StatusOK {
			return nil, fmt.Errorf("read log stream: %d %v", status, err)
		}
		var v struct {
			Lag struct{ Events *int64 } `json:"lag"`
		}
		_ = json.Unmarshal(b, &v)
		if v.Lag.Events != nil && *v.Lag.Events >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the backlog never reached the stream: %s", truncate(string(b), 300))
		}
		time.Sleep(200 * time.Millisecond)
	}
	up := time.Now()
	down.Store(false)
	for events.Load() < int64(n) {
		if time.Since(up) > 10*time.Minute {
			return nil, fmt.Errorf("catch-up delivered %d of %d in 10 minutes", events.Load(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &CatchUpResult{Events: n, FirstAfter: time.Unix(0, first.Load()).Sub(up),
		Drain: time.Duration(last.Load() - first.Load()), Requests: requests.Load()}, nil
}
