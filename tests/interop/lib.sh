# Shared by the interop scripts that run node services (sourced, not run): installs a
# directory's npm packages when its lock file changed, and stops by PID whatever the script
# started, on any exit.

# npm_ci_when_changed DIR: `npm ci` in DIR when node_modules is missing or was installed from
# another package-lock.json.
npm_ci_when_changed() {
    local dir="$1" sum stamp
    sum="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    stamp="$dir/node_modules/.interop-lock-sha256"
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$sum" ]; then
        echo "installing npm packages (npm ci) in $dir/node_modules"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        printf '%s' "$sum" > "$stamp"
    fi
}

# A scratch directory, and the PIDs of what the script starts (append with PIDS+=("$!")):
# on exit each gets SIGTERM, then SIGKILL after 5 s, and the directory goes.
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
