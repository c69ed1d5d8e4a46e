#!/usr/bin/env bash
# Interop test: jwtgate against Cognito tokens issued by moto (a local AWS emulator).
# Usage: tests/interop/run-moto.sh [PATH_TO_JWTGATE_BINARY]   (default: <repo>/target/debug/jwtgate)
# Needs python3 with the venv module (Debian: apt-get install python3-venv). Exit code = test result.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/target/interop-venv"
BIN="${1:-$REPO/target/debug/jwtgate}"

# Pinned: moto 5.2.5 is the version whose Cognito behaviour the test was written against.
REQUIREMENTS=("moto[server]==5.2.5" "boto3==1.44.5")
STAMP="$VENV/.interop-requirements"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV"
    mkdir -p "$REPO/target"
    python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "${REQUIREMENTS[*]}" ]; then
    echo "installing ${REQUIREMENTS[*]} into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
    printf '%s' "${REQUIREMENTS[*]}" > "$STAMP"
fi

exec "$VENV/bin/python" "$HERE/cognito_moto.py" "$BIN"
