package servertest

import (
	"fmt"
	"os"
	"testing"
)

// notRun skips t, saying what did not run and why, and appends the same line to the file named by
// LOGBOOK_NOT_RUN, which `make test` prints after its summary: a missing backend is never a
// silent skip.
func notRun(t *testing.T, what, why string) {
	t.Helper()
	line := fmt.Sprintf("NOT RUN: %s: %s", what, why)
	if path := os.Getenv("LOGBOOK_NOT_RUN"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatalf("failed to record %q in LOGBOOK_NOT_RUN: %v", line, err)
		}
		_, err = fmt.Fprintln(f, line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("failed to record %q in LOGBOOK_NOT_RUN: %v", line, err)
		}
	}
	t.Skip(line)
}
