#!/usr/bin/env bash
# Interop test: jwtgate against Cognito tokens issued by moto (a local AWS emulator).
# Usage: tests/interop/run-moto.sh [PATH_TO_JWTGATE_BINARY]   (default: <repo>/target/debug/jwtgate)
# Needs python3 with the venv module (Debian: apt-get install python3-venv). Exit code = test result.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${1:-$REPO/target/debug/jwtgate}"

VENV="$("$HERE/venv.sh")"

exec "$VENV/bin/python" "$HERE/cognito_moto.py" "$BIN"
