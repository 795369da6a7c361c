package apikeys_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/apikeys"
)

var quiet = slog.New(slog.DiscardHandler)

// When the self-audit record cannot be stored, no key is created and none is revoked: 503.
func TestNoRecordNoChange(t *testing.T) {
	ctx := context.Background()
	ns, js := natstest.New(t)
	s, err := apikey.Open(ctx, js)
	require.NoError(t, err)
	nc, closed, err := natsx.ConnectInProcess(ns, "closed")
	require.NoError(t, err)
	nc.Close()
	broken := apikeys.New(s, selfaudit.New(closed, quiet))
	working := apikeys.New(s, selfaudit.New(js, quiet))

	_, err = broken.Create(ctx, apikey.Spec{Name: "ci"})
	var we *wire.Error
	require.ErrorAs(t, err, &we)
	assert.Equal(t, http.StatusServiceUnavailable, we.Status)
	_, err = s.Get(ctx, "ci")
	assert.ErrorIs(t, err, apikey.ErrNotFound, "no record, no key")

	created, err := working.Create(ctx, apikey.Spec{Name: "ci"})
	require.NoError(t, err)
	_, _, err = broken.Revoke(ctx, "ci")
	require.ErrorAs(t, err, &we)
	assert.Equal(t, http.StatusServiceUnavailable, we.Status)
	v, err := apikey.NewVerifier(ctx, js, quiet)
	require.NoError(t, err)
	defer v.Close()
	assert.True(t, v.Valid(created.Secret), "no record, no revocation")

	_, err = working.Create(ctx, apikey.Spec{Name: "ci"})
	assert.ErrorIs(t, err, apikey.ErrExists)
	_, _, err = working.Revoke(ctx, "nobody")
	assert.ErrorIs(t, err, apikey.ErrNotFound)
}
