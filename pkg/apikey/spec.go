package apikey

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/logbookhq/logbook/pkg/event"
)

// MaxOrganizations caps the organizations one key may be limited to.
const MaxOrganizations = 100

// Spec is what a new key is made from: its name, and optionally scopes and organizations.
type Spec struct {
	Name          string   `json:"name"`
	Scopes        []string `json:"scopes,omitempty"`
	Organizations []string `json:"organizations,omitempty"`
}

// FieldError says what is wrong with one field of a Spec.
type FieldError struct {
	Field string `json:"field"`
	Code  string `json:"code"`
}

func (e *FieldError) Error() string { return e.Code }

// ErrMalformed is returned by ParseSpec for a body that is not one JSON object.
var ErrMalformed = errors.New("the body must be one JSON object")

// ParseSpec reads a create-key body: {"name": …, "scopes": […], "organizations": […]}, nothing
// else. Errors are ErrMalformed or a *FieldError.
func ParseSpec(body []byte) (*Spec, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, ErrMalformed
	}
	var s Spec
	for k, v := range raw {
		var err error
		switch k {
		case "name":
			err = json.Unmarshal(v, &s.Name)
		case "scopes":
			err = json.Unmarshal(v, &s.Scopes)
		case "organizations":
			err = json.Unmarshal(v, &s.Organizations)
		default:
			return nil, &FieldError{Field: k, Code: k + " is not a known field"}
		}
		if err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return nil, &FieldError{Field: k, Code: k + " has the wrong type"}
		}
	}
	if _, err := s.Check(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Check validates s and returns its scopes, expanded ("read" is every read scope), deduplicated
// and sorted. The name "env" is reserved for LOGBOOK_API_KEY.
func (s *Spec) Check() ([]Scope, error) {
	switch {
	case s.Name == "":
		return nil, &FieldError{Field: "name", Code: "name is required"}
	case !ValidName(s.Name):
		return nil, &FieldError{Field: "name", Code: "name must be 1 to 64 letters, digits, '_' or '-', starting with a letter or digit"}
	case s.Name == EnvName:
		return nil, &FieldError{Field: "name", Code: "the name env is reserved for the key LOGBOOK_API_KEY sets"}
	}
	var scopes []Scope
	for _, v := range s.Scopes {
		switch {
		case v == ScopeRead:
			scopes = append(scopes, readScopes...)
		case slices.Contains(Scopes, Scope(v)):
			scopes = append(scopes, Scope(v))
		default:
			return nil, &FieldError{Field: "scopes", Code: fmt.Sprintf("unknown scope %q: use %s or read", truncate(v, 40), scopeList())}
		}
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	if len(s.Organizations) > MaxOrganizations {
		return nil, &FieldError{Field: "organizations", Code: fmt.Sprintf("organizations may list at most %d", MaxOrganizations)}
	}
	for _, org := range s.Organizations {
		if !event.ValidOrgID(org) {
			return nil, &FieldError{Field: "organizations", Code: "organizations must be ids of 1 to 64 letters, digits, '_' and '-'"}
		}
		if org == event.SelfAuditOrgID {
			return nil, &FieldError{Field: "organizations", Code: event.SelfAuditOrgID + " is Logbook's own audit trail: only full keys read it"}
		}
	}
	if len(s.Organizations) > 0 && slices.Contains(scopes, ScopeAdmin) {
		return nil, &FieldError{Field: "scopes", Code: "admin is environment-wide: a key limited to organizations cannot have it"}
	}
	return scopes, nil
}

func scopeList() string {
	names := make([]string, len(Scopes))
	for i, s := range Scopes {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
