package failpoint

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	p, err := parse("a=kill, b=kill@3,c=sleep:5ms@2, d=block:1s@4,e=value:x.y,")
	if err != nil {
		t.Fatal(err)
	}
	if p["a"].kind != "kill" || p["a"].after != 1 {
		t.Fatalf("a: %+v", p["a"])
	}
	if p["b"].after != 3 {
		t.Fatalf("b: %+v", p["b"])
	}
	if p["c"].kind != "sleep" || p["c"].sleep != 5*time.Millisecond || p["c"].after != 2 {
		t.Fatalf("c: %+v", p["c"])
	}
	if p["d"].kind != "block" || p["d"].sleep != time.Second || p["d"].after != 4 {
		t.Fatalf("d: %+v", p["d"])
	}
	if p["e"].kind != "value" || p["e"].value != "x.y" {
		t.Fatalf("e: %+v", p["e"])
	}
	if p, err := parse(""); err != nil || len(p) != 0 {
		t.Fatalf("unset: %v %v", p, err)
	}
}

// A value that does not parse is an error naming the item, never a silent no-op.
func TestParseRefusesTypos(t *testing.T) {
	for _, spec := range []string{
		"writer-after-insert=kil@3",
		"writer-after-insert=kill@0",
		"writer-after-insert=kill@x",
		"writer-after-insert",
		"=kill",
		"a=sleep:soon",
		"a=sleep",
		"a=block:-1s",
		"a=kill:now",
		"a=kill,a=kill@2",
		"a=kill;b=kill",
	} {
		p, err := parse(spec)
		if err == nil {
			t.Errorf("%q: parsed as %v, want an error", spec, p)
			continue
		}
		if !strings.Contains(err.Error(), "LOGBOOK_FAILPOINTS") {
			t.Errorf("%q: error %q does not name the variable", spec, err)
		}
		if len(p) != 0 {
			t.Errorf("%q: a bad value must inject nothing, got %v", spec, p)
		}
	}
	_, err := parse("writer-after-record=kill@2, writer-after-insert=kil@3")
	if err == nil || !strings.Contains(err.Error(), `"writer-after-insert=kil@3"`) {
		t.Fatalf("the error must name the bad item: %v", err)
	}
}

// The kill action really ends the process with SIGKILL, on the configured hit.
func TestKill(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Inject("p") // first hit: nothing
		os.Stdout.WriteString("survived first\n")
		Inject("p") // second: killed
		os.Stdout.WriteString("survived second\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", "LOGBOOK_FAILPOINTS=p=kill@2")
	out, err := cmd.Output()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("want the child killed, got %v", err)
	}
	if !strings.Contains(string(out), "survived first") || strings.Contains(string(out), "survived second") {
		t.Fatalf("child output %q", out)
	}
}

// block holds exactly the configured hit, once; sleep holds every hit from the configured one on.
func TestBlockHoldsOneHit(t *testing.T) {
	p, err := parse("b=block:50ms@2,s=sleep:20ms@2")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	saved := points
	points = p
	mu.Unlock()
	defer func() { mu.Lock(); points = saved; mu.Unlock() }()
	timed := func(point string) time.Duration {
		start := time.Now()
		Inject(point)
		return time.Since(start)
	}
	if d := timed("b"); d >= 50*time.Millisecond {
		t.Fatalf("first hit held %s", d)
	}
	if d := timed("b"); d < 50*time.Millisecond {
		t.Fatalf("second hit held only %s", d)
	}
	if d := timed("b"); d >= 50*time.Millisecond {
		t.Fatalf("third hit held %s: block is once", d)
	}
	timed("s")
	if d := timed("s") + timed("s"); d < 40*time.Millisecond {
		t.Fatalf("sleep held %s over two hits", d)
	}
}
