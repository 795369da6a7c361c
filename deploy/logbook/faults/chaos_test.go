package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// chaosDuration is the whole chaos budget (LOGBOOK_CHAOS_DURATION, default 2m, at most 3m),
// shared by the scenarios below.
func chaosDuration(t *testing.T) time.Duration {
	if os.Getenv("LOGBOOK_CHAOS") != "1" {
		t.Skip("chaos soak runs with `make chaos` (LOGBOOK_CHAOS=1)")
	}
	duration := 2 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("LOGBOOK_CHAOS_DURATION")); err == nil && d > 0 {
		duration = min(d, 3*time.Minute)
	}
	return duration
}

// TestChaos is `make chaos`: a bounded soak (two thirds of the chaos budget) in which several
// producers load the single-process Logbook. It opens with an outage: the writer is held
// (writer-after-record=block) four times longer than the streams keep settled events (keep 2 s)
// while producers send, then released; that phase is reported per organization. Then Logbook is
// killed with SIGKILL or paused with SIGSTOP every few seconds. It prints sent / acked / stored /
// lost / duplicated per organization and fails on any loss or duplicate. Skipped unless
// LOGBOOK_CHAOS=1.
func TestChaos(t *testing.T) {
	soak(t, chaosDuration(t)*2/3, []string{"org_chaos_a", "org_chaos_b", "org_chaos_c"}, true)
}

// TestChaosTwoWriters is `make chaos`'s two-writer scenario (a third of the budget): the same
// soak with two writer loops (LOGBOOK_WRITERS=2, and two validator loops where the process has
// LOGBOOK_VALIDATORS) on a short ack wait, so pauses longer than it make JetStream redeliver
// messages to the other loop while an INSERT holding them is under way.
func TestChaosTwoWriters(t *testing.T) {
	soak(t, chaosDuration(t)/3, []string{"org_chaos_2w_a", "org_chaos_2w_b"}, false,
		"LOGBOOK_WRITERS=2", "LOGBOOK_VALIDATORS=2", "LOGBOOK_WRITER_ACK_WAIT=1s", "LOGBOOK_VALIDATOR_ACK_WAIT=1s")
}

// soak loads a Logbook on one data directory for duration while killing and pausing it (after an
// outage of the writer first, with withOutage), then restarts it, lets producers retry what was
// not acknowledged, and reports per organization. Duplicates are counted as rows per event id with
// merges stopped (copies).
func soak(t *testing.T, duration time.Duration, orgs []string, withOutage bool, env ...string) {
	ledgers := map[string]*ledger{}
	next := map[string]*int{}
	for _, o := range orgs {
		ledgers[o] = &ledger{sent: map[int]bool{}, acked: map[int]bool{}}
		next[o] = new(int)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	end := time.Now().Add(duration)
	if withOutage {
		writerOutage(t, dir, orgs, ledgers, next)
	}
	kills, pauses := 0, 0
	var nodes []*node // every run of the soak, for its log on failure
	for time.Now().Before(end) {
		n := start(t, dir, "", env...)
		nodes = append(nodes, n)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, o := range orgs {
			wg.Add(1)
			go func(o string) { defer wg.Done(); load(n, o, ledgers[o], next[o], stop) }(o)
		}
		// A few pauses, then a kill.
		for i := 0; i < rng.IntN(3); i++ {
			time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
			_ = n.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
			pauses++
		}
		time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
		n.kill()
		kills++
		close(stop)
		wg.Wait()
	}
	final := start(t, dir, "", env...)
	nodes = append(nodes, final)
	for _, o := range orgs {
		l := ledgers[o]
		for i := range l.sent { // producers retry what was not acknowledged, with the same keys
			if !l.acked[i] && emit(final.addr, o, i) {
				l.acked[i] = true
			}
		}
	}
	waitSettled(t, final)
	counts := map[string]map[int]int{}
	listedIDs := map[string]map[int][]string{}
	for _, o := range orgs {
		listedIDs[o] = listed(t, final.addr, o)
		counts[o] = map[int]int{}
		for i, ids := range listedIDs[o] {
			counts[o][i] = len(ids)
		}
	}
	inStreams := streamCopies(final, orgs) // read before the kill: the streams keep everything here
	final.kill()
	rows := copies(t, dir, orgs...)
	var report, diag []string
	failed := false
	for _, o := range orgs {
		l := ledgers[o]
		lost, dup := 0, 0
		for i := range l.acked {
			if counts[o][i] == 0 {
				lost++
			}
		}
		idNum := map[string]int{} // event id → number, from the listing
		for i, ids := range listedIDs[o] {
			for _, id := range ids {
				idNum[id] = i
			}
		}
		for i, c := range counts[o] {
			if c > 1 || !l.sent[i] {
				dup++
				diag = append(diag, fmt.Sprintf("%s n=%d listed %d times by the API (ids %v, sent %v, acked %v); rows per id %v; streams: %s",
					o, i, c, listedIDs[o][i], l.sent[i], l.acked[i], rowsOf(rows[o], listedIDs[o][i]), strings.Join(inStreams[streamKey{o, i}], ", ")))
			}
		}
		for id, r := range rows[o] {
			if r > 1 {
				dup++
				i, ok := idNum[id]
				where := "not listed by the API"
				if ok {
					where = fmt.Sprintf("n=%d listed %d times (ids %v); streams: %s", i, counts[o][i], listedIDs[o][i],
						strings.Join(inStreams[streamKey{o, i}], ", "))
				}
				diag = append(diag, fmt.Sprintf("%s id %s has %d rows in ClickHouse; %s", o, id, r, where))
			}
		}
		failed = failed || lost > 0 || dup > 0
		report = append(report, fmt.Sprintf("%-15s sent %6d  acked %6d  stored %6d  lost %d  duplicated %d",
			o, len(l.sent), len(l.acked), len(counts[o]), lost, dup))
	}
	sort.Strings(report)
	fmt.Printf("%s: %s, %d kills, %d pauses %v\n%s\n", t.Name(), duration, kills, pauses, env, strings.Join(report, "\n"))
	if failed {
		sort.Strings(diag)
		fmt.Printf("what is doubled:\n%s\n", strings.Join(diag, "\n"))
		for k, n := range nodes {
			fmt.Printf("run %d of %d (pid %d): WARN/ERROR lines of logbook's log:\n%s\n", k+1, len(nodes), n.cmd.Process.Pid, warnings(n.log.String()))
		}
	}
	require.False(t, failed, "events were lost or duplicated")
}

// rowsOf returns the rows ClickHouse holds for each of ids.
func rowsOf(rows map[string]uint64, ids []string) map[string]uint64 {
	out := map[string]uint64{}
	for _, id := range ids {
		out[id] = rows[id]
	}
	return out
}

// warnings returns the lines of a logbook log that are not INFO or DEBUG (WARN, ERROR, and
// anything that is not a JSON log line, such as a panic), at most the last 400.
func warnings(log string) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if line == "" || strings.Contains(line, `"level":"INFO"`) || strings.Contains(line, `"level":"DEBUG"`) {
			continue
		}
		out = append(out, line)
	}
	if len(out) > 400 {
		out = append([]string{fmt.Sprintf("(%d lines before left out)", len(out)-400)}, out[len(out)-400:]...)
	}
	return strings.Join(out, "\n")
}

// streamKey is an event of the soak: its organization and number.
type streamKey struct {
	org string
	n   int
}

// streamCopies reads the raw, valid and rejected streams of a running node and returns, per event
// of orgs, where each copy is: stream, sequence, event id and message id.
func streamCopies(n *node, orgs []string) map[streamKey][]string {
	out := map[streamKey][]string{}
	validSeqs := map[streamKey][]uint64{} // for the writer's batch records below
	want := map[string]bool{}
	for _, o := range orgs {
		want[o] = true
	}
	nc, err := nats.Connect("nats://" + n.nats)
	if err != nil {
		out[streamKey{}] = []string{err.Error()}
		return out
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		out[streamKey{}] = []string{err.Error()}
		return out
	}
	ctx := context.Background()
	for _, stream := range []string{"LOGBOOK_RAW", "LOGBOOK_VALID", "LOGBOOK_REJECTED"} {
		_ = eachRecord(ctx, js, stream, func(m jetstream.Msg, rec streamRecord) {
			if !want[rec.Org] {
				return
			}
			meta, _ := m.Metadata()
			k := streamKey{rec.Org, rec.Event.Metadata["n"]}
			out[k] = append(out[k], fmt.Sprintf("%s seq %d id %s msg-id %s", stream, meta.Sequence.Stream, rec.ID,
				m.Headers().Get(jetstream.MsgIDHeader)))
			if stream == "LOGBOOK_VALID" {
				validSeqs[k] = append(validSeqs[k], meta.Sequence.Stream)
			}
		})
	}
	// The writer's batch records (its ledger bucket) that hold each valid message: two records
	// holding one sequence would mean two batches stored it.
	kv, err := js.KeyValue(ctx, "logbook_writer_batches")
	if err != nil {
		return out
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return out
	}
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var r struct {
			Runs   [][2]uint64 `json:"runs"`
			State  string      `json:"state"`
			Writer string      `json:"writer"`
			Token  string      `json:"token"`
		}
		if json.Unmarshal(e.Value(), &r) != nil {
			continue
		}
		for k, seqs := range validSeqs {
			for _, seq := range seqs {
				for _, run := range r.Runs {
					if run[0] <= seq && seq <= run[1] {
						out[k] = append(out[k], fmt.Sprintf("valid seq %d in batch record %s rev %d state %s writer %s token %s runs %v",
							seq, key, e.Revision(), r.State, r.Writer, r.Token, r.Runs))
					}
				}
			}
		}
	}
	return out
}

// writerOutage is the outage phase: producers send while the writer is held past the streams'
// keep time, then it is released; every acknowledged event must be stored (nothing expired
// unconsumed). It reports the phase per organization and fails the test on a loss or duplicate.
func writerOutage(t *testing.T, dir string, orgs []string, ledgers map[string]*ledger, next map[string]*int) {
	t.Helper()
	n := start(t, dir, "writer-after-record=block:"+outage.String(), shortKeep...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, o := range orgs {
		wg.Add(1)
		go func(o string) { defer wg.Done(); load(n, o, ledgers[o], next[o], stop) }(o)
	}
	time.Sleep(outage / 2)
	close(stop)
	wg.Wait()
	waitSettled(t, n)
	var report []string
	failed := false
	for _, o := range orgs {
		counts := stored(t, n.addr, o)
		l := ledgers[o]
		lost, dup := 0, 0
		for i := range l.acked {
			if counts[i] == 0 {
				lost++
			}
		}
		for i, c := range counts {
			if c > 1 || !l.sent[i] {
				dup++
			}
		}
		failed = failed || lost > 0 || dup > 0
		report = append(report, fmt.Sprintf("%-15s sent %6d  acked %6d  stored %6d  lost %d  duplicated %d",
			o, len(l.sent), len(l.acked), len(counts), lost, dup))
	}
	sort.Strings(report)
	fmt.Printf("chaos outage: writer held %s, streams keep 2s\n%s\n", outage, strings.Join(report, "\n"))
	n.kill()
	require.Contains(t, n.log.String(), "failpoint writer-after-record: blocking", "the writer was never held")
	require.False(t, failed, "events were lost or duplicated across the writer outage")
}
