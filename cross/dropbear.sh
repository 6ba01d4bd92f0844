#!/usr/bin/env bash
# The dropbear releases that OpenWrt has shipped, built for the compatibility matrix:
# runs the shared build script (shared/dropbear-versions/build.sh, read-only) into
# target/dropbear/<version>/ (dbclient, dropbear, dropbearkey, dropbearconvert) and
# prints the versions built, one a line. Already-built versions are skipped by that
# script, so a rerun costs nothing.
#
# The shared folder sits beside the repository (../shared, also in CI's clean clone);
# PHONEHOME_SHARED names another one.
#
# usage: cross/dropbear.sh [VERSION...]     (no VERSION: every one in the shared folder)
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${PHONEHOME_SHARED:-$REPO_DIR/../shared}
SCRIPT=$SHARED/dropbear-versions/build.sh
OUT=$REPO_DIR/target/dropbear

if [ ! -f "$SCRIPT" ]; then
    echo "cross/dropbear.sh: no $SCRIPT: the dropbear releases of the matrix live in the shared" >&2
    echo "folder beside the repository (../shared); set PHONEHOME_SHARED=/path/to/shared" >&2
    exit 2
fi
mkdir -p "$OUT"
bash "$SCRIPT" "$OUT" "$@" >&2
versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
    for t in "$SHARED"/dropbear-versions/src/dropbear-*.tar.gz; do
        v=${t##*/dropbear-}
        versions+=("${v%.tar.gz}")
    done
fi
for v in "${versions[@]}"; do
    for p in dbclient dropbear dropbearkey; do
        [ -x "$OUT/$v/$p" ] || { echo "cross/dropbear.sh: $OUT/$v/$p was not built" >&2; exit 1; }
    done
    printf '%s\n' "$v"
done
