package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/logbookhq/logbook/deploy/logbook/proc"
)

var client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}

// epoch dates the events: event n occurred at epoch + n ms, so a retry is the same request.
var epoch = time.Now().UTC().Truncate(time.Second)

// emit posts event n of org to the ingest process at addr with an Idempotency-Key, as the SDKs
// do; it returns the status (0: no answer).
func emit(addr, org string, n int) int {
	return proc.Emit(client, addr, apiKey, org, n, epoch.Add(time.Duration(n)*time.Millisecond))
}

// phase is a stretch of the run under one fault, with what the producers saw during it.
type phase struct {
	name          string
	start, end    time.Time
	acked, failed int
	ackedBy       [2]int      // acknowledged by each ingest process
	failures      map[int]int // failed attempts by status (0: no answer)
	notes         []string
}

// load is the producers: they post events of several organizations over the ingest processes,
// each event tried a few times (the next attempt on the next ingest process, same key) before
// they move on, and keep what they sent and what was acknowledged.
type load struct {
	ingests []string // the ingest processes' addresses
	orgs    []string

	mu     sync.Mutex
	next   map[string]int
	sent   map[string]map[int]bool
	acked  map[string]map[int]bool
	phases []*phase

	stop chan struct{}
	wg   sync.WaitGroup
}

const producers = 8

func startLoad(ingests, orgs []string) *load {
	l := &load{ingests: ingests, orgs: orgs, next: map[string]int{}, sent: map[string]map[int]bool{},
		acked: map[string]map[int]bool{}, stop: make(chan struct{})}
	for _, o := range orgs {
		l.sent[o], l.acked[o] = map[int]bool{}, map[int]bool{}
	}
	l.begin("steady")
	for w := range producers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for k := 0; ; k++ {
				select {
				case <-l.stop:
					return
				default:
				}
				org := l.orgs[(w+k)%len(l.orgs)]
				l.mu.Lock()
				n := l.next[org]
				l.next[org]++
				l.sent[org][n] = true
				l.mu.Unlock()
				l.send(org, n, 5)
			}
		}()
	}
	return l
}

// send posts event n of org up to attempts times, on the next ingest process each time.
func (l *load) send(org string, n, attempts int) bool {
	for a := range attempts {
		i := (n + a) % len(l.ingests)
		code := emit(l.ingests[i], org, n)
		l.mu.Lock()
		p := l.phases[len(l.phases)-1]
		if code == http.StatusOK {
			l.acked[org][n] = true
			p.acked++
			p.ackedBy[i]++
		} else {
			p.failed++
			p.failures[code]++
		}
		l.mu.Unlock()
		if code == http.StatusOK {
			return true
		}
		time.Sleep(time.Duration(100*(a+1)) * time.Millisecond)
	}
	return false
}

// begin ends the current phase and starts the next.
func (l *load) begin(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if len(l.phases) > 0 {
		l.phases[len(l.phases)-1].end = now
	}
	l.phases = append(l.phases, &phase{name: name, start: now, failures: map[int]int{}})
}

// note adds a remark to the current phase (printed under it).
func (l *load) note(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.phases[len(l.phases)-1]
	p.notes = append(p.notes, fmt.Sprintf("%5.1fs ", time.Since(p.start).Seconds())+fmt.Sprintf(format, args...))
}

// finish stops the producers and ends the last phase.
func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	l.phases[len(l.phases)-1].end = time.Now()
	l.mu.Unlock()
}

// retryUnacked sends every event that was sent and not acknowledged again, with its key, until it
// is acknowledged (a producer that saw an error retries, as the SDKs do), in a last phase.
func (l *load) retryUnacked(t *testing.T) {
	t.Helper()
	l.begin("retry unacknowledged")
	var wg sync.WaitGroup
	for _, org := range l.orgs {
		l.mu.Lock()
		var todo []int
		for n := range l.sent[org] {
			if !l.acked[org][n] {
				todo = append(todo, n)
			}
		}
		l.mu.Unlock()
		for _, n := range todo {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.send(org, n, 20)
			}()
		}
	}
	wg.Wait()
	l.mu.Lock()
	l.phases[len(l.phases)-1].end = time.Now()
	l.mu.Unlock()
}

// stored lists org's events through the storage node's query API: how often each number occurs.
func stored(t *testing.T, addr, org string) map[int]int {
	t.Helper()
	counts := map[int]int{}
	after := ""
	for {
		q := "organization_id=" + org + "&limit=1000"
		if after != "" {
			q += "&after=" + url.QueryEscape(after)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/audit_logs/events?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("listing %s: %v", org, err)
		}
		var page struct {
			Data []struct {
				Metadata map[string]int `json:"metadata"`
			} `json:"data"`
			ListMetadata struct {
				After *string `json:"after"`
			} `json:"list_metadata"`
		}
		err = json.NewDecoder(res.Body).Decode(&page)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("listing %s: status %d, %v", org, res.StatusCode, err)
		}
		for _, e := range page.Data {
			counts[e.Metadata["n"]]++
		}
		if page.ListMetadata.After == nil {
			return counts
		}
		after = *page.ListMetadata.After
	}
}
