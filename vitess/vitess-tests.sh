#!/usr/bin/env bash
# Runs Vitess's own, unmodified backup tests with dedup in the place of
# Vitess's file backup storage: go test -overlay swaps this module's
# internal/filebackupstorage/file.go in for Vitess's
# go/vt/mysqlctl/filebackupstorage/file.go. Nothing of Vitess is changed
# or copied into this repository. The overlay also adds a TestMain to
# go/vt/wrangler/testlib (testdata/testlib_main_test.go), without which
# that package's init swallows -run and every test of it runs.
#
# go test refuses overlays of files in the module cache, and the blackbox
# tests write testdata/ beside their sources, so the tests run in a
# writable tree of the module (hard links into the module cache, made once
# per Vitess version) under .tools, in a workspace with this module and the
# storage beside it. Builds use -trimpath, so that the Go build cache
# serves them whatever the checkout's path.
#
# Usage: vitess-tests.sh [go test flags...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
GO=${GO:-go}
cd "$here"
$GO mod download vitess.io/vitess
version=$($GO list -m -f '{{.Version}}' vitess.io/vitess)
src=$($GO list -m -f '{{.Dir}}' vitess.io/vitess)
work=$top/.tools/vitess-$version

if [ ! -d "$work/src" ]; then
	rm -rf "$work"
	mkdir -p "$work"
	cp -al "$src" "$work/src.tmp" 2>/dev/null || { rm -rf "$work/src.tmp"; cp -a "$src" "$work/src.tmp"; }
	find "$work/src.tmp" -type d -exec chmod u+w {} + # directories only: the files stay the cache's
	mv "$work/src.tmp" "$work/src"
fi
goversion=$(sed -n 's/^go //p' "$work/src/go.mod")
cat >"$work/go.work" <<EOF
go $goversion

use (
	./src
	$here
	$top
)
EOF
cat >"$work/overlay.json" <<EOF
{"Replace": {
	"$work/src/go/vt/mysqlctl/filebackupstorage/file.go": "$here/internal/filebackupstorage/file.go",
	"$work/src/go/vt/wrangler/testlib/dedup_main_test.go": "$here/testdata/testlib_main_test.go"
}}
EOF
# The blackbox tests ask mysqld for its version (to lay out the redo log);
# a stand-in answers as MySQL 8.0 does.
mkdir -p "$work/mysql/bin"
printf '#!/bin/sh\necho "mysqld  Ver 8.0.40 for Linux on x86_64 (stand-in for the tests of dedupstore)"\n' >"$work/mysql/bin/mysqld"
chmod +x "$work/mysql/bin/mysqld"

# TestExecuteBackupWithFailureOnLastFile injects its fault into the file
# storage's own layout (a read-only file at the root, where that storage
# would write file 3); no other storage writes there, so it cannot fail.
cd "$work/src"
GOWORK=$work/go.work VT_MYSQL_ROOT=$work/mysql $GO test -trimpath -overlay "$work/overlay.json" -count=1 "$@" \
	-run '^(TestBackupRestore|TestBackupRestoreWithPargzip|TestBackupRestoreLagged|TestRestoreUnreachablePrimary|TestDisableActiveReparents|TestExecute.*|TestBackupRetryPropagatesHashToManifest)$' \
	-skip '^TestExecuteBackupWithFailureOnLastFile$' \
	./go/vt/wrangler/testlib ./go/vt/mysqlctl/blackbox
