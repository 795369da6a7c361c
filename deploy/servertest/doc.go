// Package servertest checks Logbook against what the distributed deployment runs: the compose
// file and its Dockerfiles and configuration (always), and the clickhouse-go/v2 store backend and
// the NATS wiring against real ClickHouse and NATS servers started with testcontainers-go (only
// where a Docker engine answers; elsewhere those tests skip with a one-line reason). It is its own
// module so that testcontainers and compose-go stay out of the service modules.
package servertest
