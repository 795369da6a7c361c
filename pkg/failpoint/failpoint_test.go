package failpoint

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	p := parse("a=kill, b=kill@3,c=sleep:5ms@2,d=bogus,e")
	if p["a"].kind != "kill" || p["a"].after != 1 {
		t.Fatalf("a: %+v", p["a"])
	}
	if p["b"].after != 3 {
		t.Fatalf("b: %+v", p["b"])
	}
	if p["c"].kind != "sleep" || p["c"].sleep != 5*time.Millisecond || p["c"].after != 2 {
		t.Fatalf("c: %+v", p["c"])
	}
	if _, ok := p["d"]; ok {
		t.Fatal("unknown actions are ignored")
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
