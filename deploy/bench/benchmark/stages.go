package benchmark

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Stages CPU is reported for, in table order. Logbook labels its goroutines (deploy/logbook/app:
// stage=http, gateway, nats, validator, writer, outputs, query, other); what runs in the embedded
// ClickHouse engine is told apart by the stack.
var Stages = []string{"gateway", "nats", "validator", "writer", "engine", "outputs", "runtime", "other"}

// StageCPU is where Logbook's CPU went during a phase: CPU seconds per stage, from CPU profiles
// covering the phase (sample shares), scaled to the CPU the process used over the same time.
type StageCPU struct {
	Phase   string
	Events  int64         // events the phase took in (or stored)
	Elapsed time.Duration // the profiled time
	CPU     float64       // the process's CPU seconds over it (/proc)
	Seconds map[string]float64
	Bench   float64 // the benchmark client's CPU seconds over it (same machine)
}

// PerEvent is stage's CPU per event.
func (s *StageCPU) PerEvent(stage string) time.Duration {
	if s.Events == 0 {
		return 0
	}
	return time.Duration(s.Seconds[stage] / float64(s.Events) * 1e9)
}

// Total is the process's CPU per event.
func (s *StageCPU) Total() time.Duration {
	if s.Events == 0 {
		return 0
	}
	return time.Duration(s.CPU / float64(s.Events) * 1e9)
}

// stageSamples reads CPU profiles (go tool pprof -traces) and sums their samples by stage, in
// seconds.
func stageSamples(ctx context.Context, paths []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, p := range paths {
		b, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-traces", "-symbolize=none", p).Output()
		if err != nil {
			return nil, fmt.Errorf("pprof -traces %s: %w", p, err)
		}
		for stage, v := range classifyTraces(b) {
			out[stage] += v
		}
	}
	return out, nil
}

// spread shares cpu seconds out over the stages in proportion to their samples (the profiler
// misses some samples under load; the process's own CPU count does not).
func spread(samples map[string]float64, cpu float64) map[string]float64 {
	total := 0.0
	for _, v := range samples {
		total += v
	}
	out := map[string]float64{}
	if total <= 0 {
		return out
	}
	for k, v := range samples {
		out[k] = v / total * cpu
	}
	return out
}

// classifyTraces sums the samples of a `go tool pprof -traces` listing by stage, in seconds.
func classifyTraces(listing []byte) map[string]float64 {
	out := map[string]float64{}
	var label string
	var value float64
	var frames []string
	flush := func() {
		if value > 0 {
			out[classify(label, frames)] += value
		}
		label, value, frames = "", 0, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(listing))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			continue
		}
		trimmed := strings.TrimSpace(line)
		if k, v, ok := strings.Cut(trimmed, ":  "); ok && !strings.Contains(k, " ") && value == 0 {
			if k == "stage" {
				label = strings.TrimSpace(v)
			}
			continue
		}
		if value == 0 {
			f := strings.Fields(trimmed)
			if len(f) >= 2 {
				if d, err := time.ParseDuration(f[0]); err == nil {
					value = d.Seconds()
					frames = append(frames, strings.Join(f[1:], " "))
					continue
				}
			}
			continue
		}
		frames = append(frames, trimmed)
	}
	flush()
	return out
}

// classify names the stage of one sample: its stack (leaf first) and its stage label. Samples of
// threads Go did not start (runtime._ExternalCode: the only such threads in Logbook are the
// engine's) and of Go code calling into libchdb are the engine's; nats-server code is NATS's,
// whoever runs it; the rest goes by the label, and unlabelled code by its leaf-most Go frame.
func classify(label string, frames []string) string {
	for _, f := range frames {
		switch {
		case strings.Contains(f, "libchdb"), strings.Contains(f, "/pkg/chdb."), strings.Contains(f, "ebitengine/purego"),
			strings.HasSuffix(f, "runtime._ExternalCode"):
			return "engine"
		case strings.Contains(f, "nats-io/nats-server"):
			return "nats"
		}
	}
	switch label {
	case "http", "gateway":
		return "gateway"
	case "nats", "validator", "writer", "outputs":
		return label
	case "query", "other":
		return "other"
	}
	for _, f := range frames {
		switch {
		case strings.HasPrefix(f, "runtime."), strings.Contains(f, "["): // the runtime, or code without symbols
			continue
		case strings.Contains(f, "nats-io/nats.go"):
			return "nats"
		}
		return "other"
	}
	return "runtime" // the garbage collector's workers, the scheduler
}
