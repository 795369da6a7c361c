package faults

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	for time.Now().Before(end) {
		n := start(t, dir, "", env...)
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
	for _, o := range orgs {
		counts[o] = stored(t, final.addr, o)
	}
	final.kill()
	rows := copies(t, dir, orgs...)
	var report []string
	failed := false
	for _, o := range orgs {
		l := ledgers[o]
		lost, dup := 0, 0
		for i := range l.acked {
			if counts[o][i] == 0 {
				lost++
			}
		}
		for i, c := range counts[o] {
			if c > 1 || !l.sent[i] {
				dup++
			}
		}
		for _, r := range rows[o] {
			if r > 1 {
				dup++
			}
		}
		failed = failed || lost > 0 || dup > 0
		report = append(report, fmt.Sprintf("%-15s sent %6d  acked %6d  stored %6d  lost %d  duplicated %d",
			o, len(l.sent), len(l.acked), len(counts[o]), lost, dup))
	}
	sort.Strings(report)
	fmt.Printf("%s: %s, %d kills, %d pauses %v\n%s\n", t.Name(), duration, kills, pauses, env, strings.Join(report, "\n"))
	require.False(t, failed, "events were lost or duplicated")
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
