# Logbook. `make run` starts everything in one process; `make test` runs every module's tests.
SHELL := /bin/bash
# Go 1.27.3, fetched once per machine by the go command from the Go module proxy (~76 MB); a machine
# starts on its own Go and ignores a toolchain line in go.mod, so it is set here for every target.
export GOTOOLCHAIN := go1.27.3
MODULES := pkg ingest validator writer queryapi deploy/logbook deploy/sdktest deploy/bench deploy/browsertest deploy/servertest
GO_PKGS := $(addprefix ./,$(addsuffix /...,$(MODULES)))
CHDB_LIB ?= $(or $(LOGBOOK_CHDB_LIB),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logbook/chdb/26.7.3-stable.1/libchdb.so)
export LOGBOOK_CHDB_LIB := $(CHDB_LIB)
SDK_NODE_DIR ?= $(or $(LOGBOOK_SDK_NODE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logbook/sdk/node-11.0.0-8.13.0)
export LOGBOOK_SDK_NODE_DIR := $(SDK_NODE_DIR)
VERSITYGW ?= $(or $(LOGBOOK_VERSITYGW),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/logbook/versitygw/v1.8.0/versitygw)
export LOGBOOK_VERSITYGW := $(VERSITYGW)
TEST_FLAGS ?= -count=1 -timeout 15m

.PHONY: run test chaos libchdb sdk versitygw build vet bench clean

## run: start Logbook in one process (embedded NATS + embedded ClickHouse, data in ./data)
run: libchdb
	go run ./deploy/logbook

## test: every module's tests, against real NATS JetStream and the real ClickHouse engine, and the
## official WorkOS SDKs (Go and Node) against a running Logbook (deploy/sdktest)
test: libchdb sdk versitygw
	go vet $(GO_PKGS)
	go test $(TEST_FLAGS) $(GO_PKGS)

## chaos: a bounded soak (CHAOS_DURATION, default 2m, at most 3m): producers load the single-process
## Logbook while it is killed or paused every few seconds; prints sent/acked/stored/lost/duplicated
## per organization and fails on any loss or duplicate; then a three-node R3 NATS cluster on loopback
## loses its stream leader and its quorum, and every acknowledged write must survive
CHAOS_DURATION ?= 2m
chaos: libchdb
	LOGBOOK_CHAOS=1 LOGBOOK_CHAOS_DURATION=$(CHAOS_DURATION) go test -count=1 -timeout 10m -v \
		-run '^(TestChaos|TestR3ClusterKeepsAcknowledgedWrites)$$' ./deploy/logbook/faults/ ./pkg/natsx/

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

## build: the single-process binary and the four service binaries, into ./bin
build:
	CGO_ENABLED=0 go build -o bin/logbook ./deploy/logbook
	CGO_ENABLED=0 go build -tags nochdb -o bin/ingest ./ingest/cmd/ingest
	CGO_ENABLED=0 go build -tags nochdb -o bin/validator ./validator/cmd/validator
	CGO_ENABLED=0 go build -tags nochdb -o bin/writer ./writer/cmd/writer
	CGO_ENABLED=0 go build -tags nochdb -o bin/queryapi ./queryapi/cmd/queryapi

vet:
	go vet $(GO_PKGS)

clean:
	rm -rf bin
