package portal

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/natstest"
)

func TestLinksRefuseForgedAlteredAndExpiredTokens(t *testing.T) {
	l, err := NewLinks([]byte(strings.Repeat("k", 32)))
	require.NoError(t, err)
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	good := l.Issue("org_a", now.Add(time.Hour))
	org, exp, err := l.Verify(good)
	require.NoError(t, err)
	assert.Equal(t, "org_a", org)
	assert.Equal(t, now.Add(time.Hour), exp)

	other, _ := NewLinks([]byte(strings.Repeat("x", 32)))
	parts := strings.Split(good, ".")
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrBadToken},
		{"garbage", "not-a-token", ErrBadToken},
		{"signed with another key", other.Issue("org_a", now.Add(time.Hour)), ErrBadToken},
		{"organization swapped", "org_b." + parts[1] + "." + parts[2], ErrBadToken},
		{"expiry extended", parts[0] + "." + "9999999999" + "." + parts[2], ErrBadToken},
		{"signature truncated", good[:len(good)-2], ErrBadToken},
		{"extra part", good + ".x", ErrBadToken},
		{"organization with a dot", "org.a." + parts[1] + "." + parts[2], ErrBadToken},
		{"expired", l.Issue("org_a", now.Add(-time.Second)), ErrExpired},
		{"expires now", l.Issue("org_a", now), ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := l.Verify(tt.token)
			assert.ErrorIs(t, err, tt.want)
		})
	}
	_, err = NewLinks([]byte("short"))
	assert.Error(t, err)
}

// Every replica loads the same key from the secrets bucket, so a link made by one works on all.
func TestLoadLinksSharesTheKeyBetweenReplicas(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	a, err := LoadLinks(ctx, js)
	require.NoError(t, err)
	b, err := LoadLinks(ctx, js)
	require.NoError(t, err)
	org, _, err := b.Verify(a.Issue("org_a", time.Now().Add(time.Minute)))
	require.NoError(t, err)
	assert.Equal(t, "org_a", org)
	assert.True(t, b.checkHandle(a.handle("org_a", "x1"), "org_a", "x1"))
	assert.False(t, b.checkHandle(a.handle("org_a", "x1"), "org_b", "x1"), "an export handle is bound to its organization")
}
