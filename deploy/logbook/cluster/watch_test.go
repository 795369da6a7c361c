package cluster

import (
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/logbookhq/logbook/deploy/logbook/proc"
	"github.com/logbookhq/logbook/pkg/event"
)

// watch notes in the current phase, every quarter second, each change of a service's /readyz
// answer and of the streams' leaders, until stop closes: the report then shows how long each
// fault took a service out and when JetStream elected a new leader.
func watch(d *deployment, l *load, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ready := map[*proc.Service]int{}
		leaders := map[string]string{}
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			services := d.all()
			codes := make([]int, len(services))
			var pw sync.WaitGroup
			for i, s := range services {
				pw.Add(1)
				go func() { defer pw.Done(); codes[i] = proc.Status(s.Ready) }()
			}
			pw.Wait()
			for i, s := range services {
				if last, seen := ready[s]; !seen && codes[i] == http.StatusOK || seen && last == codes[i] {
					ready[s] = codes[i]
					continue
				}
				ready[s] = codes[i]
				l.note("%s /readyz %s", s.Name, statusText(codes[i]))
			}
			for _, stream := range []string{event.StreamRaw, event.StreamValid} {
				now, seen := or(d.nats.leader(stream), "none"), leaders[stream]
				if now != seen && (seen != "" || now == "none") { // the first leader found is no news
					l.note("%s leader %s", stream, now)
				}
				leaders[stream] = now
			}
		}
	}()
	return &wg
}

func statusText(code int) string {
	switch code {
	case 0:
		return "no answer"
	case http.StatusOK:
		return "200"
	}
	return fmt.Sprint(code)
}

func or(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

// connectedTo returns the names of the services with a TCP connection to n's client port (ss
// lists the connections with the process that owns each).
func connectedTo(d *deployment, n *natsNode) []string {
	out, err := exec.Command("ss", "-tnpH", "state", "established", "dst", strings.TrimPrefix(n.URL, "nats://")).Output()
	if err != nil {
		return nil
	}
	pids := map[string]bool{}
	for _, m := range pidRE.FindAllStringSubmatch(string(out), -1) {
		pids[m[1]] = true
	}
	var names []string
	for _, s := range d.all() {
		if pids[strconv.Itoa(s.Pid())] {
			names = append(names, s.Name)
		}
	}
	return names
}

var pidRE = regexp.MustCompile(`pid=(\d+)`)
