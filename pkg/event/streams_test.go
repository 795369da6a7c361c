package event_test

import (
	"strings"
	"testing"

	"github.com/logbookhq/logbook/pkg/event"
)

func TestSubjects(t *testing.T) {
	k := event.RawKeySubject("org_a", "a key.with*odd>chars")
	if !strings.HasPrefix(k, "logbook.raw.org_a.k.") || len(k) != len("logbook.raw.org_a.k.")+32 || strings.ContainsAny(k[len("logbook.raw.org_a.k."):], ".*> ") {
		t.Fatalf("a key's subject is one safe token under the organization: %q", k)
	}
	if k == event.RawKeySubject("org_a", "another key") || k != event.RawKeySubject("org_a", "a key.with*odd>chars") {
		t.Fatal("a key's subject is a function of the key")
	}
	for subject, org := range map[string]string{
		event.RawSubject("org_a"):         "org_a",
		k:                                 "org_a",
		event.ValidSubject("org_b"):       "org_b",
		event.RejectedSubject("_invalid"): "_invalid",
		"logbook.raw":                     "",
		"other.raw.org_a":                 "",
	} {
		if got := event.OrgFromSubject(subject); got != org {
			t.Errorf("OrgFromSubject(%q) = %q, want %q", subject, got, org)
		}
	}
}
