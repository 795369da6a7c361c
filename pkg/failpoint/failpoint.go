// Package failpoint lets fault tests stop a Logbook process at a chosen point of its protocols.
// LOGBOOK_FAILPOINTS lists points and actions, comma-separated:
//
//	writer-after-insert=kill      SIGKILL this process the first time the point is reached
//	writer-after-insert=kill@3    ... the third time
//	validator-after-publish=sleep:2s       sleep 2 s every time the point is reached
//	validator-after-publish=sleep:2s@3     ... from the third time on
//	writer-after-record=block:8s@2         hold the second arrival 8 s, once (an outage that ends)
//	store-poison-action=value:test.poison  a value the code at that point reads with Value
//
// A value that does not parse injects nothing; Err reports it, and every Logbook main refuses to
// start with it (a typo must not turn a fault test into a test of nothing). Unset (production),
// Inject costs one map lookup. The points are named where they are called.
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
	kind  string // kill, sleep, block, value
	value string
	after int // act on this hit (1-based)
	sleep time.Duration
	hits  int
}

var (
	mu            sync.Mutex
	points, badFP = parse(os.Getenv("LOGBOOK_FAILPOINTS"))
)

// Err reports a LOGBOOK_FAILPOINTS value that does not parse, naming the bad item, or nil.
func Err() error { return badFP }

func parse(spec string) (map[string]*action, error) {
	out := map[string]*action{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, a, err := parseItem(item)
		if err != nil {
			return nil, fmt.Errorf("LOGBOOK_FAILPOINTS: item %q: %w "+
				"(want <point>=kill, sleep:<duration>, block:<duration> or value:<v>, optionally followed by @<n>)", item, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("LOGBOOK_FAILPOINTS: item %q: point %s is named twice", item, name)
		}
		out[name] = a
	}
	return out, nil
}

func parseItem(item string) (string, *action, error) {
	name, act, ok := strings.Cut(item, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return "", nil, fmt.Errorf("not <point>=<action>")
	}
	a := &action{after: 1}
	if kind, n, ok := strings.Cut(act, "@"); ok && !strings.HasPrefix(act, "value:") {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 {
			return "", nil, fmt.Errorf("hit number %q is not a positive integer", n)
		}
		act, a.after = kind, v
	}
	kind, arg, _ := strings.Cut(act, ":")
	switch kind {
	case "kill":
		if arg != "" {
			return "", nil, fmt.Errorf("kill takes no argument")
		}
	case "value":
		a.value = arg
	case "sleep", "block":
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 {
			return "", nil, fmt.Errorf("%s needs a positive duration, got %q", kind, arg)
		}
		a.sleep = d
	default:
		return "", nil, fmt.Errorf("unknown action %q", act)
	}
	a.kind = kind
	return name, a, nil
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
	case "block":
		fmt.Fprintf(os.Stderr, "failpoint %s: blocking for %s\n", point, a.sleep)
		time.Sleep(a.sleep)
		fmt.Fprintf(os.Stderr, "failpoint %s: released\n", point)
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
