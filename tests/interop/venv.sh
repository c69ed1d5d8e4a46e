#!/usr/bin/env bash
# Creates target/interop-venv (python3 -m venv; Debian: python3-venv) with the packages pinned in
# tests/interop/requirements.txt, installing only when that file changed. Prints the venv's path.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/target/interop-venv"
STAMP="$VENV/.requirements"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV" >&2
    mkdir -p "$REPO/target"
    python3 -m venv "$VENV"
fi
if ! cmp -s "$HERE/requirements.txt" "$STAMP"; then
    echo "installing tests/interop/requirements.txt into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
    cp "$HERE/requirements.txt" "$STAMP"
fi
echo "$VENV"
