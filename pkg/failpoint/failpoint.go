// Package failpoint lets fault tests stop a Logbook process at a chosen point of its protocols.
// LOGBOOK_FAILPOINTS lists points and actions, comma-separated:
//
//	writer-after-insert=kill      SIGKILL this process the first time the point is reached
//	writer-after-insert=kill@3    ... the third time
//	validator-after-publish=sleep:2s
//	store-poison-action=value:test.poison   a value the code at that point reads with Value
//
// Unset (production), Inject costs one map lookup. The points are named where they are called.
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type action struct {
	kind  string // kill, sleep, value
	value string
	after int // act on this hit (1-based)
	sleep time.Duration
	hits  int
}

var (
	mu     sync.Mutex
	points = parse(os.Getenv("LOGBOOK_FAILPOINTS"))
)

func parse(spec string) map[string]*action {
	out := map[string]*action{}
	for _, item := range strings.Split(spec, ",") {
		name, act, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			continue
		}
		a := &action{after: 1}
		if kind, n, ok := strings.Cut(act, "@"); ok {
			act = kind
			if v, err := strconv.Atoi(n); err == nil && v > 0 {
				a.after = v
			}
		}
		switch {
		case act == "kill":
			a.kind = "kill"
		case strings.HasPrefix(act, "value:"):
			a.kind, a.value = "value", strings.TrimPrefix(act, "value:")
		case strings.HasPrefix(act, "sleep:"):
			d, err := time.ParseDuration(strings.TrimPrefix(act, "sleep:"))
			if err != nil {
				continue
			}
			a.kind, a.sleep = "sleep", d
		default:
			continue
		}
		out[name] = a
	}
	return out
}

// Inject runs the action configured for point, if any.
func Inject(point string) {
	if len(points) == 0 {
		return
	}
	mu.Lock()
	a, ok := points[point]
	if !ok {
		mu.Unlock()
		return
	}
	a.hits++
	hit := a.hits == a.after || (a.kind == "sleep" && a.hits >= a.after)
	mu.Unlock()
	if !hit {
		return
	}
	switch a.kind {
	case "kill":
		fmt.Fprintf(os.Stderr, "failpoint %s: killing process %d\n", point, os.Getpid())
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	case "sleep":
		time.Sleep(a.sleep)
	}
}

// Value returns the value configured for point ("value:<v>"), or "".
func Value(point string) string {
	if len(points) == 0 {
		return ""
	}
	mu.Lock()
	defer mu.Unlock()
	if a, ok := points[point]; ok && a.kind == "value" {
		return a.value
	}
	return ""
}

// Enabled reports whether any failpoint is configured.
func Enabled() bool { return len(points) > 0 }
