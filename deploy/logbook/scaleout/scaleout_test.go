// Package scaleout runs Logbook scaled out as separate OS processes: a nats-server (the module
// version the project pins, with deploy/nats/nats.conf and its credentials), the `ingest` and
// `validator` service binaries, and the single-process binary in the storage role
// (LOGBOOK_ROLES=writer,query against the external NATS, on the embedded ClickHouse engine): the
// shape the README's "Run as services" section shows, with the same commands.
package scaleout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/deploy/logbook/proc"
)

const (
	apiKey       = "sk_scaleout_tests_0123456789abcdef"
	natsUser     = "logbook"
	natsPassword = "scaleout0c0ffee0123456789"
)

var bins map[string]string

func TestMain(m *testing.M) {
	os.Exit(proc.BuildAndRun(m, &bins, proc.NATSServer, proc.Logbook, proc.Ingest, proc.Validator))
}

// deployment is one NATS server, ingest and validator services, and one storage node.
type deployment struct {
	nats       *proc.NATS
	ingests    []*proc.Service
	validators []*proc.Service
	storage    *proc.Service
}

// common is every Logbook process's environment: the external NATS and its credentials, the key.
func (d *deployment) common() []string {
	return []string{"LOGBOOK_NATS_URL=" + d.nats.URL, "LOGBOOK_NATS_USER=" + natsUser,
		"LOGBOOK_NATS_PASSWORD=" + natsPassword, "LOGBOOK_API_KEY=" + apiKey, "LOGBOOK_LOG_LEVEL=warn"}
}

// startNATS runs nats-server with the configuration Logbook ships for one server,
// deploy/nats/nats.conf, its store directory and credentials from the environment.
func startNATS(t *testing.T) *proc.NATS {
	t.Helper()
	return proc.StartNATS(t, bins["nats-server"], "../../nats/nats.conf", []string{"NATS_STORE_DIR=" + t.TempDir(),
		"LOGBOOK_NATS_USER=" + natsUser, "LOGBOOK_NATS_PASSWORD=" + natsPassword})
}

// deploy starts nats-server with deploy/nats/nats.conf, then the storage node, then ingests
// ingest and validators validator services, and waits until every one is ready.
func deploy(t *testing.T, ingests, validators int) *deployment {
	t.Helper()
	d := &deployment{}
	d.nats = startNATS(t)
	d.storage = proc.StartStorage(t, bins["logbook"], append(d.common(), "LOGBOOK_DATA_DIR="+t.TempDir(), "LOGBOOK_BATCH_WAIT=100ms")...)
	for i := 0; i < ingests; i++ {
		d.ingests = append(d.ingests, proc.StartIngest(t, fmt.Sprintf("ingest-%d", i), bins["ingest"], d.common()...))
	}
	for i := 0; i < validators; i++ {
		d.validators = append(d.validators, proc.StartValidator(t, fmt.Sprintf("validator-%d", i), bins["validator"], d.common()...))
	}
	for _, s := range d.all() {
		s.WaitReady(t)
	}
	return d
}

func (d *deployment) all() []*proc.Service {
	return append(append([]*proc.Service{d.storage}, d.ingests...), d.validators...)
}

var client = &http.Client{Timeout: 15 * time.Second}

// emit posts event n of org to an ingest process; it returns the status (0: no answer).
func emit(addr, org string, n int) int {
	return proc.Emit(client, addr, apiKey, org, n, time.Now())
}

// emitAll posts events from..to-1 of org, spread over the ingest processes by 8 producers, and
// requires each to be acknowledged.
func (d *deployment) emitAll(t *testing.T, org string, from, to int) {
	t.Helper()
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := map[int]int{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range next {
				if code := emit(d.ingests[n%len(d.ingests)].Addr, org, n); code != http.StatusOK {
					mu.Lock()
					failed[n] = code
					mu.Unlock()
				}
			}
		}()
	}
	for n := from; n < to; n++ {
		next <- n
	}
	close(next)
	wg.Wait()
	require.Empty(t, failed, "events not acknowledged (event: status)")
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
		require.NoError(t, err)
		var page struct {
			Data []struct {
				Metadata map[string]int `json:"metadata"`
			} `json:"data"`
			ListMetadata struct {
				After *string `json:"after"`
			} `json:"list_metadata"`
		}
		require.Equal(t, http.StatusOK, res.StatusCode)
		require.NoError(t, json.NewDecoder(res.Body).Decode(&page))
		res.Body.Close()
		for _, e := range page.Data {
			counts[e.Metadata["n"]]++
		}
		if page.ListMetadata.After == nil {
			return counts
		}
		after = *page.ListMetadata.After
	}
}

// waitStored waits until the storage node lists events from..to-1 of org, each exactly once.
func (d *deployment) waitStored(t *testing.T, org string, from, to int) {
	t.Helper()
	var counts map[int]int
	require.Eventually(t, func() bool {
		counts = stored(t, d.storage.Addr, org)
		return len(counts) >= to-from
	}, 60*time.Second, 200*time.Millisecond, "events never became searchable on the storage node")
	for n := from; n < to; n++ {
		assert.Equal(t, 1, counts[n], "event %d", n)
	}
	assert.Len(t, counts, to-from, "only the events sent")
}

// Stateless intake and validators as separate service processes, one storage node running the
// writer and the query API on the embedded engine: every event posted to any ingest process is
// stored once and searchable through the storage node, which serves no intake itself.
func TestStorageRoleBehindServiceProcesses(t *testing.T) {
	d := deploy(t, 2, 2)
	const org = "org_scaleout_storage"
	d.emitAll(t, org, 0, 400)
	d.waitStored(t, org, 0, 400)

	req, _ := http.NewRequest(http.MethodPost, "http://"+d.storage.Addr+"/audit_logs/events", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	res, err := client.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, res.StatusCode,
		"the storage role serves no intake")
}

// readyBody GETs a /readyz and returns its status and the outcome of its nats check.
func readyBody(u string) (int, string) {
	res, err := client.Get(u)
	if err != nil {
		return 0, ""
	}
	defer res.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	_ = json.NewDecoder(res.Body).Decode(&body)
	return res.StatusCode, body.Checks["nats"]
}

// Each service binary's /readyz answers 503 (the nats check failing) while its NATS connection
// is lost, and 200 again once NATS is back; the pipeline then carries events again, end to end.
func TestServiceReadinessFollowsNATS(t *testing.T) {
	d := deploy(t, 1, 1)
	const org = "org_scaleout_ready"
	d.emitAll(t, org, 0, 20)
	d.waitStored(t, org, 0, 20)

	d.nats.Kill()
	for _, s := range d.all() {
		require.Eventually(t, func() bool {
			code, nats := readyBody(s.Ready)
			return code == http.StatusServiceUnavailable && nats == "failing"
		}, 15*time.Second, 50*time.Millisecond, "%s stayed ready without NATS", s.Name)
	}
	time.Sleep(time.Second) // and stays unready while NATS is away
	for _, s := range d.all() {
		code, nats := readyBody(s.Ready)
		assert.Equal(t, http.StatusServiceUnavailable, code, s.Name)
		assert.Equal(t, "failing", nats, s.Name)
		assert.False(t, s.Exited(), "%s exited while NATS was away", s.Name)
	}

	d.nats.Restart(t)
	d.nats.WaitHealthy(t)
	for _, s := range d.all() {
		require.Eventually(t, func() bool {
			code, nats := readyBody(s.Ready)
			return code == http.StatusOK && nats == "ok"
		}, 30*time.Second, 50*time.Millisecond, "%s did not become ready again", s.Name)
	}
	d.emitAll(t, org, 20, 60)
	d.waitStored(t, org, 0, 60)
}

// The storage node keeps its engine's files under LOGBOOK_DATA_DIR and no NATS data: JetStream is
// the external server's, which (deploy/nats/nats.conf) refuses clients without the credentials.
func TestStorageRoleStartsNoNATS(t *testing.T) {
	nats := startNATS(t)
	_, err := natsgo.Connect(nats.URL, natsgo.Timeout(5*time.Second))
	require.ErrorIs(t, err, natsgo.ErrAuthorization, "a client without credentials")
	dir, addr := t.TempDir(), proc.FreeAddr(t)
	p := proc.Start(t, "storage", bins["logbook"], nil, []string{"LOGBOOK_NATS_URL=" + nats.URL, "LOGBOOK_NATS_USER=" + natsUser,
		"LOGBOOK_NATS_PASSWORD=" + natsPassword, "LOGBOOK_API_KEY=" + apiKey, "LOGBOOK_ROLES=writer,query",
		"LOGBOOK_ADDR=" + addr, "LOGBOOK_DATA_DIR=" + dir})
	proc.WaitStatus(t, p, "http://"+addr+"/readyz", http.StatusOK, 90*time.Second)
	assert.DirExists(t, filepath.Join(dir, "clickhouse"))
	assert.NoDirExists(t, filepath.Join(dir, "nats"), "the storage role started an embedded NATS server")
}
