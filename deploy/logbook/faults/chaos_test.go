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

// TestChaos is `make chaos`: a bounded soak (LOGBOOK_CHAOS_DURATION, default 2m, at most 3m) in
// which several producers load the single-process Logbook. It opens with an outage: the writer is
// held (writer-after-record=block) four times longer than the streams keep settled events (keep
// 2 s) while producers send, then released; it reports that phase per organization. Then, for the
// rest of the duration, Logbook is killed with SIGKILL or paused with SIGSTOP every few seconds.
// It prints sent / acked / stored / lost / duplicated per organization and fails on any loss or
// duplicate. Skipped unless LOGBOOK_CHAOS=1.
func TestChaos(t *testing.T) {
	if os.Getenv("LOGBOOK_CHAOS") != "1" {
		t.Skip("chaos soak runs with `make chaos` (LOGBOOK_CHAOS=1)")
	}
	duration := 2 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("LOGBOOK_CHAOS_DURATION")); err == nil && d > 0 {
		duration = min(d, 3*time.Minute)
	}
	orgs := []string{"org_chaos_a", "org_chaos_b", "org_chaos_c"}
	ledgers := map[string]*ledger{}
	next := map[string]*int{}
	for _, o := range orgs {
		ledgers[o] = &ledger{sent: map[int]bool{}, acked: map[int]bool{}}
		next[o] = new(int)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	end := time.Now().Add(duration)
	failed := false

	// The outage: producers send while the writer is held past the keep time, then it is released.
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
	for _, o := range orgs {
		line, bad := tally(t, n.addr, o, ledgers[o])
		failed = failed || bad
		report = append(report, line)
	}
	sort.Strings(report)
	fmt.Printf("chaos outage: writer held %s, streams keep 2s\n%s\n", outage, strings.Join(report, "\n"))
	n.kill()
	require.Contains(t, n.log.String(), "failpoint writer-after-record: blocking", "the writer was never held")

	kills, pauses := 0, 0
	for time.Now().Before(end) {
		n := start(t, dir, "")
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
			time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
			pauses++
		}
		time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
		n.kill()
		kills++
		close(stop)
		wg.Wait()
	}
	final := start(t, dir, "")
	report = nil
	for _, o := range orgs {
		l := ledgers[o]
		for i := range l.sent { // producers retry what was not acknowledged, with the same keys
			if !l.acked[i] && emit(final.addr, o, i) {
				l.acked[i] = true
			}
		}
	}
	waitSettled(t, final)
	for _, o := range orgs {
		line, bad := tally(t, final.addr, o, ledgers[o])
		failed = failed || bad
		report = append(report, line)
	}
	sort.Strings(report)
	fmt.Printf("chaos: %s, %d kills, %d pauses\n%s\n", duration, kills, pauses, strings.Join(report, "\n"))
	require.False(t, failed, "events were lost or duplicated")
}

// tally compares what org's producers know with what Logbook at addr stores: one report line, and
// whether anything acknowledged is missing or anything is stored twice or unsent.
func tally(t *testing.T, addr, org string, l *ledger) (string, bool) {
	counts := stored(t, addr, org)
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
	return fmt.Sprintf("%-12s sent %6d  acked %6d  stored %6d  lost %d  duplicated %d",
		org, len(l.sent), len(l.acked), len(counts), lost, dup), lost > 0 || dup > 0
}
