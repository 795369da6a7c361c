// Package cluster is `make cluster`: Logbook scaled out on one machine as separate OS processes —
// a three-node nats-server cluster (the module version the project pins) with R3 streams and
// buckets, two `ingest` and two `validator` service processes, one storage node (`logbook` with
// LOGBOOK_ROLES=writer,query) — loaded by producers spread over the ingest processes while NATS
// nodes are killed or cut off and the services are killed, rolled and scaled. Then it checks that
// every acknowledged event is stored, nothing is stored that was not sent, and nothing twice.
package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/logbookhq/logbook/deploy/logbook/proc"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

const (
	apiKey        = "sk_cluster_tests_0123456789abcdef"
	natsUser      = "logbook"
	natsPassword  = "cluster0c0ffee0123456789abcdef"
	routePassword = "route0c0ffee0123456789abcdef"
)

var bins map[string]string

func TestMain(m *testing.M) {
	if task := os.Getenv(engineTaskEnv); task != "" {
		os.Exit(engineChild(task)) // a child on the storage node's data directory
	}
	if os.Getenv("LOGBOOK_CLUSTER") != "1" {
		os.Exit(m.Run()) // TestCluster skips itself; nothing to build
	}
	os.Exit(proc.BuildAndRun(m, &bins, proc.NATSServer, proc.Logbook, proc.Ingest, proc.Validator))
}

// deployment is the services around the NATS cluster.
type deployment struct {
	nats       *natsCluster
	storage    *proc.Service
	storageDir string
	ingests    []*proc.Service

	mu         sync.Mutex
	validators []*proc.Service
}

// env is every Logbook process's environment: the NATS cluster (all three nodes) and its
// credentials, three replicas for streams and buckets, the API key.
func (d *deployment) env(extra ...string) []string {
	return append([]string{"LOGBOOK_NATS_URL=" + d.nats.URLs, "LOGBOOK_NATS_USER=" + natsUser,
		"LOGBOOK_NATS_PASSWORD=" + natsPassword, "LOGBOOK_STREAM_REPLICAS=3", "LOGBOOK_API_KEY=" + apiKey,
		"LOGBOOK_LOG_LEVEL=warn"}, extra...)
}

// deploy starts the storage node, two ingest and two validator processes on c at once (each
// creates the streams and buckets the fresh cluster does not have yet), and waits until every one
// is ready.
func deploy(t *testing.T, c *natsCluster) *deployment {
	t.Helper()
	d := &deployment{nats: c, storageDir: t.TempDir()}
	var prepared string
	engine(t, "prepare", d.storageDir, nil, &prepared)
	// store-stop-merges: the test's merge stop (engine "prepare") holds in the table's settings;
	// the failpoint adds what the binary knows of it, where it does.
	d.storage = proc.StartStorage(t, bins["logbook"], d.env("LOGBOOK_DATA_DIR="+d.storageDir,
		"LOGBOOK_FAILPOINTS=store-stop-merges=value:on")...)
	for i := range 2 {
		d.ingests = append(d.ingests, proc.StartIngest(t, fmt.Sprintf("ingest-%d", i), bins["ingest"], d.env()...))
	}
	for range 2 {
		d.addValidator(t)
	}
	for _, s := range d.all() {
		s.WaitReady(t)
	}
	return d
}

// addValidator starts one more validator process (not waiting for it).
func (d *deployment) addValidator(t *testing.T) *proc.Service {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	v := proc.StartValidator(t, fmt.Sprintf("validator-%d", len(d.validators)), bins["validator"], d.env()...)
	d.validators = append(d.validators, v)
	return v
}

// running returns the validators that have not been stopped.
func (d *deployment) running() []*proc.Service {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*proc.Service
	for _, v := range d.validators {
		if !v.Exited() {
			out = append(out, v)
		}
	}
	return out
}

func (d *deployment) all() []*proc.Service {
	return append(append([]*proc.Service{d.storage}, d.ingests...), d.running()...)
}

// TestCluster is `make cluster` (LOGBOOK_CLUSTER=1; LOGBOOK_CLUSTER_DURATION, default 2m, at most
// 3m, is how long the producers run; each fault gets a share of it). It prints a table of the
// phases (acknowledged events per second under each fault) and per organization sent, acked,
// stored, lost and duplicated, and fails on any loss, duplicate or event stored that was never
// sent.
func TestCluster(t *testing.T) {
	if os.Getenv("LOGBOOK_CLUSTER") != "1" {
		t.Skip("the scaled-out cluster soak runs with `make cluster` (LOGBOOK_CLUSTER=1)")
	}
	duration := 2 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("LOGBOOK_CLUSTER_DURATION")); err == nil && d > 0 {
		duration = min(d, 3*time.Minute)
	}
	dwell := duration / 12 // twelve stretches of load: steady, nine under or after faults, two scaled
	orgs := []string{"org_cluster_a", "org_cluster_b", "org_cluster_c"}

	c := startNATSCluster(t)
	d := deploy(t, c)
	c.waitCurrent(t, time.Minute)
	cutHow := "network namespace: the host end of the node's veth pair taken down"
	if c.cut == nil {
		cutHow = fmt.Sprintf("frozen with SIGSTOP (no network namespace here: %v)", c.cutErr)
	}
	t.Logf("NATS %s; storage %s; ingest %s, %s", c.URLs, d.storage.Addr, d.ingests[0].Addr, d.ingests[1].Addr)

	l := startLoad([]string{d.ingests[0].Addr, d.ingests[1].Addr}, orgs)
	stopWatch := make(chan struct{})
	watching := watch(d, l, stopWatch)
	time.Sleep(dwell)

	// SIGKILL the raw stream's leader, then restart it on its data.
	first := c.node(c.waitLeader(t, event.StreamRaw))
	l.begin("SIGKILL " + first.name + " (leader of " + event.StreamRaw + ")")
	first.Kill()
	time.Sleep(dwell)
	l.begin("restart " + first.name)
	first.Restart(t)
	first.WaitHealthy(t)
	c.waitCurrent(t, 2*time.Minute)
	time.Sleep(dwell / 2)

	// Then another node: the raw stream's new leader, or the valid stream's.
	var second *natsNode
	for _, s := range []string{event.StreamRaw, event.StreamValid} {
		if n := c.node(c.waitLeader(t, s)); n != first {
			second = n
			break
		}
	}
	if second == nil {
		second = c.nodes[(slices.Index(c.nodes, first)+1)%3]
	}
	l.begin("SIGKILL " + second.name)
	second.Kill()
	time.Sleep(dwell)
	l.begin("restart " + second.name)
	second.Restart(t)
	second.WaitHealthy(t)
	c.waitCurrent(t, 2*time.Minute)
	time.Sleep(dwell / 2)

	// SIGKILL an ingest and a validator process, and restart them.
	l.begin("SIGKILL ingest-0 and validator-0")
	d.ingests[0].Kill()
	d.validators[0].Kill()
	time.Sleep(dwell)
	l.begin("restart ingest-0 and validator-0")
	d.ingests[0].Restart(t)
	d.validators[0].Restart(t)
	d.ingests[0].WaitReady(t)
	d.validators[0].WaitReady(t)
	time.Sleep(dwell / 2)

	// Roll the validators one at a time: SIGTERM, start, ready.
	l.begin("roll the validators")
	for _, v := range d.running() {
		v.Stop(30 * time.Second)
		v.Restart(t)
		v.WaitReady(t)
	}
	time.Sleep(dwell / 2)

	// Scale the validators 2 → 4 → 1.
	l.begin("validators 2 → 4")
	for range 2 {
		d.addValidator(t)
	}
	for _, v := range d.running() {
		v.WaitReady(t)
	}
	time.Sleep(dwell)
	// The one kept is connected to the node the cut will take off, where one is: so that the
	// cut shows a service leaving a node that stopped answering.
	cutNode := c.nodes[2]
	l.begin("validators 4 → 1")
	keep := d.running()[0]
	for _, v := range d.running() {
		if slices.Contains(connectedTo(d, cutNode), v.Name) {
			keep = v
			break
		}
	}
	for _, v := range d.running() {
		if v != keep {
			v.Stop(30 * time.Second)
		}
	}
	time.Sleep(dwell)

	// Cut the third node off (it runs in its own network namespace), with the raw and valid
	// streams' leadership moved onto it first, then heal the cut.
	for _, s := range []string{event.StreamRaw, event.StreamValid} {
		c.moveLeader(t, s, cutNode.name)
	}
	// Where no service is on the cut node yet, restart the validator until it lands there (it
	// picks one of the three URLs at random).
	for i := 0; i < 15 && len(connectedTo(d, cutNode)) == 0; i++ {
		keep.Stop(30 * time.Second)
		keep.Restart(t)
		keep.WaitReady(t)
	}
	on := connectedTo(d, cutNode)
	l.begin("cut " + cutNode.name + " off (leader of both streams)")
	l.note("services connected to %s: %s", cutNode.name, or(strings.Join(on, ", "), "none (the move away from a silent node is not shown)"))
	if c.cut != nil {
		if err := c.cut.Cut(); err != nil {
			t.Fatal(err)
		}
	} else {
		freeze(t, cutNode.Process, true)
	}
	// Every service, those connected to the cut node included, is ready again while the cut
	// lasts: the other two nodes elect new leaders, and a client on the cut node notices that it
	// stopped answering (natsx.StaleAfter) and moves to another.
	cutAt := time.Now()
	for _, s := range d.all() {
		for proc.Status(s.Ready) != http.StatusOK {
			if time.Since(cutAt) > natsx.StaleAfter+time.Minute {
				t.Fatalf("%s is not ready %s into the cut: it never left the cut node", s.Name, time.Since(cutAt).Round(time.Second))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	l.note("every service ready again")
	time.Sleep(dwell)
	l.begin("heal the cut")
	if c.cut != nil {
		if err := c.cut.Heal(); err != nil {
			t.Fatal(err)
		}
	} else {
		freeze(t, cutNode.Process, false)
	}
	cutNode.WaitHealthy(t)
	c.waitCurrent(t, 2*time.Minute)
	l.begin("after the faults")
	time.Sleep(dwell)
	close(stopWatch)
	watching.Wait()
	l.finish()

	// Every process is still up and ready.
	for _, s := range d.all() {
		if s.Exited() {
			t.Fatalf("%s exited:\n%s", s.Name, s.Output())
		}
		s.WaitReady(t)
	}
	l.retryUnacked(t)
	settle(t, c, 3*time.Minute)
	counts := map[string]map[int]int{}
	for _, o := range orgs {
		counts[o] = stored(t, d.storage.Addr, o)
	}
	d.storage.Stop(60 * time.Second)
	var rows map[string]map[string]uint64
	engine(t, "rows", d.storageDir, orgs, &rows)

	failed := report(t, l, counts, rows, duration, cutHow)
	if failed != "" {
		locate(t, c.js, l, counts)
		t.Fatal(failed)
	}
}

// freeze stops (SIGSTOP) or resumes (SIGCONT) p: where no network namespace can be made, the cut
// node is frozen instead, which the others see as a node that stopped answering.
func freeze(t *testing.T, p *proc.Process, stop bool) {
	t.Helper()
	do := p.Resume
	if stop {
		do = p.Pause
	}
	if err := do(); err != nil {
		t.Fatal(err)
	}
}

// settle waits until the validators and the writer have settled everything: both durable
// consumers have nothing pending and nothing unacknowledged.
func settle(t *testing.T, c *natsCluster, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	why := ""
	for time.Now().Before(deadline) {
		why = ""
		for _, sc := range [][2]string{{event.StreamRaw, event.ConsumerValidator}, {event.StreamValid, event.ConsumerWriter}} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cons, err := c.js.Consumer(ctx, sc[0], sc[1])
			if err == nil {
				info, ierr := cons.Info(ctx)
				if err = ierr; err == nil && (info.NumPending > 0 || info.NumAckPending > 0) {
					why = fmt.Sprintf("%s/%s: %d pending, %d unacknowledged", sc[0], sc[1], info.NumPending, info.NumAckPending)
				}
			}
			cancel()
			if err != nil {
				why = fmt.Sprintf("%s/%s: %v", sc[0], sc[1], err)
			}
			if why != "" {
				break
			}
		}
		if why == "" {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("the pipeline did not settle within %s: %s", timeout, why)
}

// report prints the phases and the per-organization tally; it returns what failed, or "".
func report(t *testing.T, l *load, counts map[string]map[int]int, rows map[string]map[string]uint64,
	duration time.Duration, cutHow string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "make cluster: 3 nats-server nodes (R3), 2 ingest, 2 validator (scaled to 4, then 1), 1 storage node; %d producers, %s of load\n",
		producers, duration)
	fmt.Fprintf(&b, "cut: %s\n\n", cutHow)
	fmt.Fprintf(&b, "%-52s %8s %8s %8s %10s   %s\n", "phase", "seconds", "acked", "failed", "acked/s", "by ingest-0 / -1")
	for _, p := range l.phases {
		secs := p.end.Sub(p.start).Seconds()
		fmt.Fprintf(&b, "%-52s %8.1f %8d %8d %10.0f   %d / %d\n", p.name, secs, p.acked, p.failed,
			float64(p.acked)/max(secs, 0.001), p.ackedBy[0], p.ackedBy[1])
		if p.failed > 0 {
			var f []string
			for code, k := range p.failures {
				f = append(f, fmt.Sprintf("%s ×%d", statusText(code), k))
			}
			sort.Strings(f)
			fmt.Fprintf(&b, "    failed attempts: %s\n", strings.Join(f, ", "))
		}
		for _, n := range p.notes {
			fmt.Fprintf(&b, "    %s\n", n)
		}
	}
	fmt.Fprintf(&b, "\n%-16s %8s %8s %8s %6s %11s %7s\n", "organization", "sent", "acked", "stored", "lost", "duplicated", "unsent")
	var problems []string
	for _, o := range l.orgs {
		lost, dup, unsent := 0, 0, 0
		for n := range l.acked[o] {
			if counts[o][n] == 0 {
				lost++
			}
		}
		for n, k := range counts[o] {
			if k > 1 {
				dup++ // one event stored under two ids
			}
			if !l.sent[o][n] {
				unsent++
			}
		}
		for _, r := range rows[o] {
			if r > 1 {
				dup++ // one id held by more than one row
			}
		}
		fmt.Fprintf(&b, "%-16s %8d %8d %8d %6d %11d %7d\n", o, len(l.sent[o]), len(l.acked[o]), len(counts[o]), lost, dup, unsent)
		if lost > 0 || dup > 0 || unsent > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d lost, %d duplicated, %d stored but never sent", o, lost, dup, unsent))
		}
		if len(l.acked[o]) == 0 {
			problems = append(problems, o+": nothing was acknowledged, so nothing was tested")
		}
		if len(rows[o]) != len(counts[o]) {
			problems = append(problems, fmt.Sprintf("%s: the engine holds %d ids, the query API lists %d events", o, len(rows[o]), len(counts[o])))
		}
	}
	if last := l.phases[len(l.phases)-2]; last.acked == 0 {
		problems = append(problems, "nothing was acknowledged after the faults: the deployment did not recover")
	}
	fmt.Print(b.String())
	return strings.Join(problems, "; ")
}
