# Logbook. `make run` starts everything in one process; `make test` runs every module's tests.
SHELL := /bin/bash
# Go 1.27.3, fetched once per machine by the go command from the Go module proxy (~76 MB); a machine
# starts on its own Go and ignores a toolchain line in go.mod, so it is set here for every target.
export GOTOOLCHAIN := go1.27.3
MODULES := pkg ingest validator writer queryapi deploy/logbook deploy/sdktest deploy/bench deploy/browsertest deploy/servertest
GO_PKGS := $(addprefix ./,$(addsuffix /...,$(MODULES)))
# The packages that start goroutines run under the race detector: the shared packages, the four
# services and the single-process wiring. The rest (fault, scale-out and chaos tests that drive the
# binaries as processes, the SDK, browser and compose tests, the load tool) run without it.
RACE_PKGS := ./pkg/... ./ingest/... ./validator/... ./writer/... ./queryapi/... ./deploy/logbook/app/...
PLAIN_PKGS := ./deploy/logbook ./deploy/logbook/faults/... ./deploy/logbook/proc/... ./deploy/logbook/scaleout/... \
	./deploy/sdktest/... ./deploy/bench/... ./deploy/browsertest/... ./deploy/servertest/...
CHDB_LIB ?= $(or $(LOGBOOK_CHDB_LIB),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logbook/chdb/26.7.3-stable.1/libchdb.so)
export LOGBOOK_CHDB_LIB := $(CHDB_LIB)
SDK_NODE_DIR ?= $(or $(LOGBOOK_SDK_NODE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logbook/sdk/node-11.0.0-8.13.0)
export LOGBOOK_SDK_NODE_DIR := $(SDK_NODE_DIR)
VERSITYGW ?= $(or $(LOGBOOK_VERSITYGW),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logbook/versitygw/v1.8.0/versitygw)
export LOGBOOK_VERSITYGW := $(VERSITYGW)
TEST_FLAGS ?= -count=1 -timeout 15m

.PHONY: run test chaos cluster libchdb sdk versitygw build vet bench clean

## run: start Logbook in one process (embedded NATS + embedded ClickHouse, data in ./data)
run: libchdb
	go run ./deploy/logbook

## test: every module's tests, against real NATS JetStream and the real ClickHouse engine, and the
## official WorkOS SDKs (Go and Node) against a running Logbook (deploy/sdktest); RACE_PKGS under
## the race detector. The server-backend
## suite (deploy/servertest under testcontainers: a ClickHouse server, the NATS image) is compiled
## with -tags docker only where `docker info` answers; whatever did not run is named after the
## summary (tests append it to the file LOGBOOK_NOT_RUN names), never skipped in silence.
test: libchdb sdk versitygw
	@tags=$$(timeout 10 docker info >/dev/null 2>&1 && echo -tags=docker); \
	notrun=$$(mktemp); status=0; \
	echo go vet $$tags $(GO_PKGS) && go vet $$tags $(GO_PKGS) || exit $$?; \
	echo go test -race $(TEST_FLAGS) $(RACE_PKGS); \
	LOGBOOK_NOT_RUN=$$notrun go test -race $(TEST_FLAGS) $(RACE_PKGS) || status=$$?; \
	echo go test $(TEST_FLAGS) $$tags $(PLAIN_PKGS); \
	LOGBOOK_NOT_RUN=$$notrun go test $(TEST_FLAGS) $$tags $(PLAIN_PKGS) || status=$$?; \
	if [ -s $$notrun ]; then echo; sort -u $$notrun; fi; rm -f $$notrun; exit $$status

## chaos: a bounded soak (CHAOS_DURATION, default 2m, at most 3m, shared by the scenarios):
## producers load the single-process Logbook while it is killed or paused every few seconds, with
## one writer loop and then with two (LOGBOOK_WRITERS=2); prints sent/acked/stored/lost/duplicated
## per organization and fails on any loss or duplicate; then a three-node R3 NATS cluster on loopback
## loses its stream leader and its quorum, and every acknowledged write must survive
CHAOS_DURATION ?= 2m
chaos: libchdb
	LOGBOOK_CHAOS=1 LOGBOOK_CHAOS_DURATION=$(CHAOS_DURATION) go test -count=1 -timeout 10m -v \
		-run '^(TestChaos|TestChaosTwoWriters|TestR3ClusterKeepsAcknowledgedWrites)$$' ./deploy/logbook/faults/ ./pkg/natsx/

## cluster: Logbook scaled out on this machine as separate OS processes (deploy/logbook/cluster):
## three nats-server nodes (the pinned version; R3 streams and buckets), one storage node (logbook,
## LOGBOOK_ROLES=writer,query), two ingest and two validator processes, producers spread over the
## ingest processes. Under load it SIGKILLs the stream leader's node and then another, SIGKILLs an
## ingest and a validator process, rolls the validators and scales them 2 → 4 → 1, cuts a node off
## (its own network namespace; as root) and heals it; prints each phase's throughput and
## sent/acked/stored/lost/duplicated per organization, and fails on any loss or duplicate.
## CLUSTER_DURATION (default 2m, at most 3m) is the time under load; the whole run stays under 5m.
CLUSTER_DURATION ?= 2m
cluster: libchdb
	LOGBOOK_CLUSTER=1 LOGBOOK_CLUSTER_DURATION=$(CLUSTER_DURATION) go test -count=1 -timeout 6m -v \
		-run '^TestCluster$$' ./deploy/logbook/cluster/

## bench: build and start the single-process Logbook on a fresh temp dir, load it (single-event and
## bulk ingest, end to end, search and export at 1M and 10M events), measure the ceilings (raw
## JetStream publish, raw ClickHouse INSERT) in the same run; one table, written to
## docs/benchmarks.md. BENCH_QUICK=1 make bench is a smoke run (20k/100k events, a few minutes).
## Not part of make test. BENCH_FLAGS passes flags (go run ./deploy/bench -h).
bench: libchdb
	go run ./deploy/bench $(BENCH_FLAGS)

## libchdb: fetch libchdb.so (ClickHouse engine, 178 MB download) into the per-user cache, once
libchdb: $(CHDB_LIB)
$(CHDB_LIB):
	LOGBOOK_CHDB_LIB=$(CHDB_LIB) bash deploy/scripts/fetch-libchdb.sh

## sdk: install the official WorkOS Node SDKs (11.0.0 and 8.13.0) into the per-user cache, once
sdk: $(SDK_NODE_DIR)/.installed
$(SDK_NODE_DIR)/.installed:
	LOGBOOK_SDK_NODE_DIR=$(SDK_NODE_DIR) bash deploy/scripts/fetch-sdks.sh

## versitygw: build versitygw (an S3-compatible server that checks SigV4) into the per-user cache,
## once; the log-stream tests deliver S3 objects to it on loopback
versitygw: $(VERSITYGW)
$(VERSITYGW):
	LOGBOOK_VERSITYGW=$(VERSITYGW) bash deploy/scripts/fetch-versitygw.sh

## build: the single-process binary, the four service binaries, the keys, schemas and redrive
## commands, and the nats-server version the project pins (to run the services on one machine:
## README, "Run as services"), into ./bin
build:
	CGO_ENABLED=0 go build -o bin/logbook ./deploy/logbook
	CGO_ENABLED=0 go build -o bin/nats-server github.com/nats-io/nats-server/v2
	CGO_ENABLED=0 go build -tags nochdb -o bin/ingest ./ingest/cmd/ingest
	CGO_ENABLED=0 go build -tags nochdb -o bin/schemas ./ingest/cmd/schemas
	CGO_ENABLED=0 go build -tags nochdb -o bin/validator ./validator/cmd/validator
	CGO_ENABLED=0 go build -tags nochdb -o bin/writer ./writer/cmd/writer
	CGO_ENABLED=0 go build -tags nochdb -o bin/queryapi ./queryapi/cmd/queryapi
	CGO_ENABLED=0 go build -tags nochdb -o bin/keys ./queryapi/cmd/keys
	CGO_ENABLED=0 go build -tags nochdb -o bin/redrive ./validator/cmd/redrive

## vet: go vet everything, the Docker-only server-backend suite included (-tags docker)
vet:
	go vet $(GO_PKGS)
	go vet -tags docker ./deploy/servertest/...

clean:
	rm -rf bin
