#!/usr/bin/env bash
# Fetches libchdb.so, the in-process ClickHouse engine that pkg/chdb loads,
# once per machine. The target is $LOGBOOK_CHDB_LIB if set, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/logbook/chdb/<version>/libchdb.so: the same
# path as chdb.DefaultLibPath(). Prints the path on stdout; progress goes to
# stderr. Safe to run concurrently: each run downloads into its own temp dir
# next to the target and renames the file into place. The archive must match
# the sha512 pinned below (the registry's dist.integrity), or nothing is
# installed.
set -euo pipefail

version=26.7.3-stable.1 # keep in step with chdb.LibVersion
package="@chdb/lib-linux-x64-gnu@${version}"
# npm view @chdb/lib-linux-x64-gnu@26.7.3-stable.1 dist.integrity
integrity="sha512-XP97mMqnc5tZpKQywR8N7cLTsHNiTmHr30pC5mzo3jWmukjKn2IBa60c2B/gWUNcuFjOMjWoorQICCqBVj5wpw=="
target="${LOGBOOK_CHDB_LIB:-${XDG_CACHE_HOME:-$HOME/.cache}/logbook/chdb/${version}/libchdb.so}"

if [[ -s "$target" ]]; then
	echo "$target"
	exit 0
fi

command -v npm >/dev/null || {
	echo "fetch-libchdb: npm is needed to download $package" >&2
	exit 1
}

dir=$(dirname "$target")
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch-libchdb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetching libchdb.so (178 MB download, once per machine)" >&2
# npm shows no progress when it is not on a terminal: report the bytes received so far.
(
	while sleep 1; do
		bytes=$(du -sb "$tmp/npm-cache" 2>/dev/null | cut -f1)
		printf '  %d MB of about 178 MB\n' $((${bytes:-0} / 1048576)) >&2
	done
) &
progress=$!
trap 'kill $progress 2>/dev/null || true; rm -rf "$tmp"' EXIT
npm pack "$package" --pack-destination "$tmp" --cache "$tmp/npm-cache" --loglevel warn >&2
kill $progress 2>/dev/null || true
tgz=("$tmp"/*.tgz)
if [[ ! -s "${tgz[0]}" ]]; then
	echo "fetch-libchdb: npm pack left no archive of $package" >&2
	exit 1
fi
expected=$(printf '%s' "${integrity#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
actual=$(sha512sum "${tgz[0]}" | cut -d' ' -f1)
if [[ "$actual" != "$expected" ]]; then
	echo "fetch-libchdb: the downloaded archive of $package does not match its pinned sha512; nothing was installed" >&2
	echo "  expected $expected" >&2
	echo "  got      $actual" >&2
	exit 1
fi
tar -xzf "${tgz[0]}" -C "$tmp" package/libchdb.so
if [[ ! -s "$tmp/package/libchdb.so" ]]; then
	echo "fetch-libchdb: $package has no package/libchdb.so" >&2
	exit 1
fi
# Same folder, so the rename is atomic: readers see no file or a whole one.
mv -f "$tmp/package/libchdb.so" "$target"
echo "$target"
