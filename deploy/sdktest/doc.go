// Package sdktest proves Logbook's WorkOS compatibility with the official SDKs: its tests start one
// real single-process Logbook and drive the Go SDK (github.com/workos/workos-go/v7 and the legacy
// v4 pkg/auditlogs) and the Node SDK (@workos-inc/node 11.0.0 and 8.13.0, run with node) against
// it. It is a module of its own so that no service depends on an SDK. The package has no code
// besides its tests.
package sdktest
