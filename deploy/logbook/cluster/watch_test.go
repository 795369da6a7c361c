package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
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
		ready := map[*service]int{}
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
				go func() { defer pw.Done(); codes[i] = proc.Status(s.ready) }()
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

// clients lists the NATS clients connected to node n by name, from its monitoring endpoint.
func clients(n *natsNode) string {
	res, err := client.Get(n.Monitor + "/connz?limit=1024")
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	var body struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return err.Error()
	}
	count := map[string]int{}
	for _, c := range body.Connections {
		count[or(c.Name, "unnamed")]++
	}
	var out []string
	for name, k := range count {
		out = append(out, fmt.Sprintf("%s ×%d", name, k))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
