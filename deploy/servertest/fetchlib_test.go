package servertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeNPM is an `npm` whose `pack` leaves an archive holding package/libchdb.so with other bytes
// than the registry's: what a tampered mirror or a man in the middle would hand over.
const fakeNPM = `#!/usr/bin/env bash
set -euo pipefail
dest=
while [[ $# -gt 0 ]]; do
	case "$1" in
	--pack-destination) dest=$2; shift ;;
	esac
	shift
done
work=$(mktemp -d)
mkdir -p "$work/package"
echo 'not the ClickHouse engine' >"$work/package/libchdb.so"
tar -czf "$dest/chdb-lib-linux-x64-gnu-26.7.3-stable.1.tgz" -C "$work" package
rm -rf "$work"
`

// fetch-libchdb.sh installs the engine only from an archive matching its pinned sha512: a
// different archive aborts with a clear message and leaves no file behind.
func TestFetchLibchdbRefusesATamperedArchive(t *testing.T) {
	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "npm"), []byte(fakeNPM), 0o755))
	dir := filepath.Join(t.TempDir(), "chdb")
	target := filepath.Join(dir, "libchdb.so")
	cmd := exec.Command("bash", filepath.Join(root, "deploy/scripts/fetch-libchdb.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "LOGBOOK_CHDB_LIB="+target)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "a tampered archive was accepted:\n%s", out)
	assert.Contains(t, string(out), "does not match its pinned sha512")
	assert.NoFileExists(t, target)
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	assert.Empty(t, names, "files left behind: %s", strings.Join(names, ", "))
}
