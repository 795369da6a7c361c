package obs_test

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/obs"
)

// A service's admin listener (metrics, readiness) binds loopback unless LOGBOOK_ADMIN_ADDR says
// otherwise: its metrics describe the deployment and are served without a key.
func TestAdminListensOnLoopbackByDefault(t *testing.T) {
	host, _, err := net.SplitHostPort(obs.DefaultAdminAddr)
	require.NoError(t, err)
	ip := net.ParseIP(host)
	assert.True(t, ip != nil && ip.IsLoopback(), "default admin address %q is not loopback", obs.DefaultAdminAddr)
}
