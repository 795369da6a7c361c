package benchmark

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Client talks to the Logbook under test.
type Client struct {
	Base string
	HTTP *http.Client
}

// NewClient returns a client keeping up to conns connections to base.
func NewClient(base string, conns int) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &Client{Base: base, HTTP: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// Do sends a request with the API key and returns the status and body.
func (c *Client) Do(ctx context.Context, method, path, contentType string, body []byte, hdr map[string]string) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+APIKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// nodeKey is an Idempotency-Key as the WorkOS Node SDK (v11) generates it: workos-node-<uuid v4>.
func nodeKey(r *rand.Rand) string {
	var u [16]byte
	for i := 0; i < 16; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			u[i+j] = byte(v >> (8 * j))
		}
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return "workos-node-" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// emit sends one create-event request as the Node SDK does (with its Idempotency-Key).
func (c *Client) emit(ctx context.Context, body []byte, r *rand.Rand) (int, error) {
	return c.emitKeyed(ctx, body, r, true)
}

// emitKeyed sends one create-event request, with the Node SDK's Idempotency-Key when keyed.
func (c *Client) emitKeyed(ctx context.Context, body []byte, r *rand.Rand, keyed bool) (int, error) {
	hdr := map[string]string{"User-Agent": "workos-node/11.0.0 bench"}
	if keyed {
		hdr["Idempotency-Key"] = nodeKey(r)
	}
	status, _, err := c.Do(ctx, http.MethodPost, "/audit_logs/events", "application/json", body, hdr)
	return status, err
}

// Failures counts non-2xx answers and transport errors by kind.
type Failures struct {
	mu sync.Mutex
	m  map[string]int
}

func (f *Failures) add(kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]int{}
	}
	f.m[kind]++
}

// Total is the number of failures.
func (f *Failures) Total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, v := range f.m {
		n += v
	}
	return n
}

func (f *Failures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var parts []string
	for k, v := range f.m {
		parts = append(parts, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (f *Failures) record(status int, err error) bool {
	switch {
	case err != nil:
		f.add("transport error")
	case status/100 != 2:
		f.add(fmt.Sprintf("HTTP %d", status))
	default:
		return true
	}
	return false
}

// StepResult is one single-event ingest step.
type StepResult struct {
	Conc    int
	Keyed   bool
	OK      int64
	Elapsed time.Duration
	End     time.Time     // when the step stopped sending
	Drain   time.Duration // from End until the pipeline had stored everything
	Lat     []time.Duration
	Fail    *Failures
}

// Rate is the sustained 2xx rate.
func (s *StepResult) Rate() float64 { return float64(s.OK) / s.Elapsed.Seconds() }

// SingleEvents runs conc senders, each posting one event per request (bodies cycled) for d, with
// an Idempotency-Key each when keyed.
func (c *Client) SingleEvents(ctx context.Context, bodies [][]byte, conc int, keyed bool, d time.Duration) *StepResult {
	res := &StepResult{Conc: conc, Keyed: keyed, Fail: &Failures{}}
	var ok atomic.Int64
	var next atomic.Int64
	lats := make([][]time.Duration, conc)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for ctx.Err() == nil {
				b := bodies[int(next.Add(1))%len(bodies)]
				t := time.Now()
				status, err := c.emitKeyed(ctx, b, r, keyed)
				if ctx.Err() != nil {
					return // cut off by the end of the step: neither counted nor failed
				}
				if res.Fail.record(status, err) {
					lats[w] = append(lats[w], time.Since(t))
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	res.End = time.Now()
	res.Elapsed = res.End.Sub(start)
	res.OK = ok.Load()
	for _, l := range lats {
		res.Lat = append(res.Lat, l...)
	}
	return res
}

// BulkResult is one bulk load.
type BulkResult struct {
	Events      int64
	Accepted    int64
	Duplicates  int64
	Failed      int64
	Requests    int
	ReqLat      []time.Duration
	AcceptedIn  time.Duration // first request sent → last answer received
	VisibleIn   time.Duration // first request sent → everything stored (visible in search)
	PerOrg      map[string]int64
	Fail        *Failures
	BytesPerReq int64
}

type bulkAnswer struct {
	Accepted   int64 `json:"accepted"`
	Duplicates int64 `json:"duplicates"`
	Failed     int64 `json:"failed"`
	Results    []struct {
		Line   int    `json:"line"`
		Status string `json:"status"`
		ID     string `json:"id"`
		Error  *struct {
			Status int    `json:"status"`
			Code   string `json:"code"`
		} `json:"error"`
	} `json:"results"`
}

// Bulk posts events [0, g.N) of g through POST /audit_logs/events/bulk, lines per request, from
// senders concurrent senders, then waits until srv's pipeline has stored all of them.
func (c *Client) Bulk(ctx context.Context, srv *Server, g *Gen, senders, lines int) (*BulkResult, error) {
	res := &BulkResult{Events: g.N, PerOrg: map[string]int64{}, Fail: &Failures{}}
	var mu sync.Mutex
	var next atomic.Int64
	var reqBytes atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			var buf bytes.Buffer
			perOrg := map[string]int64{}
			var lat []time.Duration
			var acc, dup, failed int64
			reqs := 0
			defer func() {
				mu.Lock()
				defer mu.Unlock()
				for k, v := range perOrg {
					res.PerOrg[k] += v
				}
				res.ReqLat = append(res.ReqLat, lat...)
				res.Accepted, res.Duplicates, res.Failed = res.Accepted+acc, res.Duplicates+dup, res.Failed+failed
				res.Requests += reqs
			}()
			for ctx.Err() == nil {
				first := (next.Add(1) - 1) * int64(lines)
				if first >= g.N {
					return
				}
				buf.Reset()
				last := min(g.N, first+int64(lines))
				counts := map[string]int64{}
				for i := first; i < last; i++ {
					e := g.At(i)
					counts[e.Org]++
					buf.Write(e.Body())
					buf.WriteByte('\n')
				}
				reqBytes.Add(int64(buf.Len()))
				t := time.Now()
				status, body, err := c.Do(ctx, http.MethodPost, "/audit_logs/events/bulk", "application/x-ndjson", buf.Bytes(), nil)
				reqs++
				if !res.Fail.record(status, err) {
					failed += last - first
					if status != 0 && len(body) > 0 {
						res.Fail.add(fmt.Sprintf("HTTP %d %s", status, truncate(string(body), 120)))
					}
					continue
				}
				lat = append(lat, time.Since(t))
				var a bulkAnswer
				if err := json.Unmarshal(body, &a); err != nil {
					res.Fail.add("unreadable bulk answer: " + truncate(string(body), 120))
					failed += last - first
					continue
				}
				acc, dup, failed = acc+a.Accepted, dup+a.Duplicates, failed+a.Failed
				if a.Failed > 0 {
					for _, r := range a.Results {
						if r.Status == "error" && r.Error != nil {
							res.Fail.add(fmt.Sprintf("line error %d %s", r.Error.Status, r.Error.Code))
						}
					}
				}
				for k, v := range counts {
					perOrg[k] += v
				}
			}
		})
	}
	wg.Wait()
	res.AcceptedIn = time.Since(start)
	if res.Requests > 0 {
		res.BytesPerReq = reqBytes.Load() / int64(res.Requests)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	done, err := srv.WaitDrained(ctx, 100*time.Millisecond, 2*time.Hour)
	if err != nil {
		return nil, err
	}
	res.VisibleIn = done.Sub(start)
	return res, nil
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
