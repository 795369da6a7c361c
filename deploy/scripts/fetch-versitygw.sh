#!/usr/bin/env bash
# Builds versitygw, an S3-compatible server that verifies SigV4 signatures, from its Go module
# (github.com/versity/versitygw, Apache-2.0) into the per-user cache, once per machine:
# $LOGBOOK_VERSITYGW, by default ${XDG_CACHE_HOME:-$HOME/.cache}/logbook/versitygw/<version>/versitygw.
# The log-stream tests (writer/logstream) deliver S3 objects to it on loopback; nothing is installed
# inside the repository. Prints the binary's path on stdout; the go command's output goes to stderr.
set -euo pipefail

version=v1.8.0
target="${LOGBOOK_VERSITYGW:-${XDG_CACHE_HOME:-$HOME/.cache}/logbook/versitygw/$version/versitygw}"

if [[ -x "$target" ]]; then
	echo "$target"
	exit 0
fi
command -v go >/dev/null || {
	echo "fetch-versitygw: the go command is needed to build versitygw" >&2
	exit 1
}
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
dir=$(dirname "$target")
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch-versitygw.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Outside any module (GOWORK=off, GOFLAGS cleared), so the build uses versitygw's own go.mod.
(cd "$tmp" && GOWORK=off GOFLAGS= GOBIN="$tmp" go install "github.com/versity/versitygw/cmd/versitygw@$version") >&2
mv "$tmp/versitygw" "$target"
echo "$target"
