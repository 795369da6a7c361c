#!/usr/bin/env bash
# Installs the official WorkOS Node SDKs that the SDK compatibility tests (deploy/sdktest) drive,
# once per machine, as npm aliases side by side (workos-node-11 = @workos-inc/node@11.0.0,
# workos-node-8 = @workos-inc/node@8.13.0) into $LOGBOOK_SDK_NODE_DIR, by default
# ${XDG_CACHE_HOME:-$HOME/.cache}/logbook/sdk/<versions>: the folder the tests look in. Nothing is
# installed inside the repository. Prints the folder on stdout; npm's output goes to stderr.
set -euo pipefail

packages=(workos-node-11@npm:@workos-inc/node@11.0.0 workos-node-8@npm:@workos-inc/node@8.13.0)
target="${LOGBOOK_SDK_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/logbook/sdk/node-11.0.0-8.13.0}"
want="${packages[*]}"

if [[ -f "$target/.installed" && "$(cat "$target/.installed")" == "$want" ]]; then
	echo "$target"
	exit 0
fi
command -v npm >/dev/null || {
	echo "fetch-sdks: npm is needed to install the WorkOS Node SDKs" >&2
	exit 1
}
mkdir -p "$(dirname "$target")"
tmp=$(mktemp -d "$(dirname "$target")/.fetch-sdks.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo '{"private":true,"description":"WorkOS SDKs for the Logbook SDK tests"}' >"$tmp/package.json"
# 11.0.0 declares Node >= 22.11 but runs on Node 20 (npm only warns: EBADENGINE).
(cd "$tmp" && npm install --no-audit --no-fund --save-exact --loglevel=error "${packages[@]}") >&2
echo "$want" >"$tmp/.installed"
rm -rf "$target"
mv "$tmp" "$target"
trap - EXIT
echo "$target"
