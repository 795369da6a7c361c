package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// emitAction posts event number i of org with action; true when Logbook acknowledged it.
func emitAction(addr, org, action string, i int) bool {
	body, _ := json.Marshal(map[string]any{
		"organization_id": org,
		"event": map[string]any{
			"action": action, "occurred_at": time.Now().UTC().Format(time.RFC3339Nano),
			"actor":    map[string]any{"id": "user_1", "type": "user"},
			"targets":  []any{map[string]any{"id": "doc_1", "type": "doc"}},
			"context":  map[string]any{"location": "127.0.0.1"},
			"metadata": map[string]any{"n": i},
		},
	})
	req, _ := http.NewRequest("POST", "http://"+addr+"/audit_logs/events", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", org, i))
	res, err := client.Do(req)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == 200
}

// startDying is start for a process that may die on its own during start-up: it returns nil
// when it did.
func startDying(t *testing.T, dataDir, failpoints string) *node {
	t.Helper()
	n := &node{addr: freeAddr(t), nats: freeAddr(t), log: &bytes.Buffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(binary)
	n.cmd.Env = append(os.Environ(),
		"LOGBOOK_DATA_DIR="+dataDir, "LOGBOOK_ADDR="+n.addr, "LOGBOOK_API_KEY="+apiKey,
		"LOGBOOK_BATCH_WAIT=100ms", "LOGBOOK_VALIDATOR_ACK_WAIT=3s", "LOGBOOK_WRITER_ACK_WAIT=3s",
		"LOGBOOK_FAILPOINTS="+failpoints, "LOGBOOK_LOG_LEVEL=warn", "LOGBOOK_NATS_LISTEN="+n.nats)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	require.NoError(t, n.cmd.Start())
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() { n.kill() })
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n.exited() {
			return nil
		}
		if res, err := http.Get("http://" + n.addr + "/healthz"); err == nil {
			res.Body.Close()
			return n
		}
	}
	t.Fatalf("logbook did not serve within 60s:\n%s", n.log)
	return nil
}

// rejectedOf returns the rejected-stream messages of org, or an error when the process is not
// answering.
func rejectedOf(n *node, org string) ([]*jetstream.RawStreamMsg, error) {
	nc, err := nats.Connect("nats://"+n.nats, nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "LOGBOOK_REJECTED")
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			return nil, err
		}
		if m.Subject == "logbook.rejected."+org {
			out = append(out, m)
		}
	}
	return out, nil
}

// A record the validator process dies on (a fatal error that recover() cannot catch, here a
// SIGKILL while validating it) stops nothing for good: every other event is stored, and the
// record is dead-lettered as "validator crashed on it" after the process died on it alone
// CrashLimit times. The restarts are what an orchestrator does.
func TestRecordTheValidatorDiesOnIsDeadLettered(t *testing.T) {
	dir := t.TempDir()
	const org, poison = "org_crash", 10
	fp := "validator-validate:test.crash=kill"
	n := start(t, dir, fp)
	acked := map[int]bool{}
	deaths := 0
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if n == nil || n.exited() {
			deaths++
			if n != nil {
				require.Contains(t, n.log.String(), "failpoint validator-validate:test.crash")
			}
			n = startDying(t, dir, fp)
			continue
		}
		// Producers send, and retry with their idempotency keys what was not acknowledged.
		tried := true
		for i := 0; i < 21; i++ {
			action := "doc.updated"
			if i == poison {
				action = "test.crash"
			}
			if n.exited() {
				tried = false
				break
			}
			if !acked[i] && emitAction(n.addr, org, action, i) {
				acked[i] = true
			}
		}
		if rej, err := rejectedOf(n, org); err == nil && tried && len(rej) > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NotNil(t, n)
	t.Logf("the process died %d times; %d of 21 events acknowledged", deaths, len(acked))
	require.Greater(t, len(acked), 15, "the producers got through")
	waitSettled(t, n)
	require.False(t, n.exited(), "the process must survive once the record is dead-lettered:\n%s", n.log)
	rej, err := rejectedOf(n, org)
	require.NoError(t, err)
	require.Len(t, rej, 1, "only the record the process died on is dead-lettered")
	assert.Equal(t, "validator_crashed", rej[0].Header.Get("Logbook-Reject-Category"))
	assert.Contains(t, rej[0].Header.Get("Logbook-Reject-Reason"), "the process died 3 times validating this record alone")
	var rec struct {
		Event struct {
			Action string `json:"action"`
		} `json:"event"`
	}
	require.NoError(t, json.Unmarshal(rej[0].Data, &rec))
	assert.Equal(t, "test.crash", rec.Event.Action)
	counts := stored(t, n.addr, org)
	for i := 0; i < 21; i++ {
		switch {
		case i == poison:
			assert.Zero(t, counts[i], "the poison is not stored")
		case acked[i]:
			assert.Equal(t, 1, counts[i], "acknowledged event %d stored once", i)
		default: // a request cut by a death: stored at most once
			assert.LessOrEqual(t, counts[i], 1, "event %d", i)
		}
	}
	assert.GreaterOrEqual(t, deaths, 3)
}
