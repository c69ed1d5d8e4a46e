#!/usr/bin/env bash
# Differential test: jwtgate's Cedar decisions against cedarpy (Cedar's Rust engine through its
# Python bindings) on Cognito tokens issued by moto, in every cell of a generated matrix.
# Usage: tests/interop/run-cedar.sh [PATH_TO_JWTGATE_BINARY]   (default: <repo>/target/debug/jwtgate)
# Needs python3 with the venv module (Debian: apt-get install python3-venv). Exit code = test result.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${1:-$REPO/target/debug/jwtgate}"

VENV="$("$HERE/venv.sh")"

exec "$VENV/bin/python" "$HERE/cedar_matrix.py" "$BIN"
