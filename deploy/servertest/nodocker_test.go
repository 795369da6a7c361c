//go:build !docker

package servertest

import (
	"os"
	"testing"
)

// Without the docker build tag the server-backend suite (containers_test.go: the store suite on a
// ClickHouse server through clickhouse-go/v2, the streams on the NATS image, under
// testcontainers-go) is not even compiled: the Docker client and testcontainers are most of this
// package's build, and without an engine they would only skip. This test says what did not run
// and why, in the test output and, through LOGBOOK_NOT_RUN, in the `make test` summary.
func TestServerBackends(t *testing.T) {
	why := "no Docker engine here"
	if dockerSocket() {
		why = "a Docker socket is here but this run lacks -tags docker (make test adds it where `docker info` answers)"
	}
	notRun(t, "deploy/servertest: the ClickHouse-server store suite (clickhouse-go/v2) and the NATS-image streams under testcontainers", why)
}

// dockerSocket reports whether a Docker engine may be reachable: DOCKER_HOST is set or the
// default socket exists. A cheap look, not a probe.
func dockerSocket() bool {
	if os.Getenv("DOCKER_HOST") != "" {
		return true
	}
	_, err := os.Stat("/var/run/docker.sock")
	return err == nil
}
