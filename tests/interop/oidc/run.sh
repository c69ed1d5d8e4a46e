#!/usr/bin/env bash
# Browser-login interop test: jwtgate's login mode (auth = "login", like ALB authenticate-oidc)
# against a real OpenID Provider (oidc-provider), driven by headless Chromium, with the
# x-amzn-oidc-data header checked by aws-jwt-verify's AlbJwtVerifier.
# Usage: tests/interop/oidc/run.sh [PATH_TO_JWTGATE_BINARY]   (default: <repo>/target/debug/jwtgate)
# Needs node >= 20 with npm, and Debian's chromium at /usr/bin/chromium (or CHROMIUM_PATH).
# Exit code = test result.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
BIN="${1:-$REPO/target/debug/jwtgate}"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH

CLIENT_ID="jwtgate-test"
ALB_ARN="arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/jwtgate-test/50dc6c495c0c9188"

die() { echo "run.sh: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no jwtgate binary at $BIN (cargo build --bin jwtgate)"
command -v node >/dev/null || die "node is not installed (node >= 20 with npm)"
command -v npm >/dev/null || die "npm is not installed"
[ -x "$CHROMIUM_PATH" ] || die "no Chromium at $CHROMIUM_PATH (Debian: apt-get install chromium)"

. "$HERE/../lib.sh"
npm_ci_when_changed "$HERE"

# Free ports for the proxy and its admin listener (the provider needs the proxy's URL up front;
# the provider and the upstream pick their own ports and print them).
read -r PROXY_PORT ADMIN_PORT < <(node -e '
  const net = require("node:net");
  const get = () => new Promise((ok) => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => ok(s)); });
  Promise.all([get(), get()]).then((ss) => { console.log(ss.map((s) => s.address().port).join(" ")); ss.forEach((s) => s.close()); });')
PROXY="http://127.0.0.1:$PROXY_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
SECRET="$(node -e 'console.log(require("node:crypto").randomBytes(24).toString("hex"))')"
STAFF_SECRET="$(node -e 'console.log(require("node:crypto").randomBytes(24).toString("hex"))')"

# start_node NAME KEY SCRIPT ARGS...: starts a node server, waits for its {"KEY":"URL"} line, sets URL.
start_node() {
    local name="$1" key="$2"; shift 2
    node "$@" > "$TMP/$name.out" 2> "$TMP/$name.err" &
    PIDS+=("$!")
    local pid="$!" line=""
    for _ in $(seq 150); do
        line="$(grep -m1 "^{\"$key\":" "$TMP/$name.out" || true)"
        [ -n "$line" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$line" ]; then
        echo "run.sh: $name did not start; its output:" >&2
        cat "$TMP/$name.out" "$TMP/$name.err" >&2
        exit 1
    fi
    URL="$(printf '%s' "$line" | sed -E "s/^\\{\"$key\":\"([^\"]+)\".*/\\1/")"
}

start_node provider issuer "$HERE/provider.mjs" --proxy-base "$PROXY" --client-secret "$SECRET" --client-id "$CLIENT_ID"
ISSUER="$URL"
# A second provider for the [[logins]] "staff" provider: its own callback path, and its own cookie
# names (cookies ignore ports, and both providers live on 127.0.0.1).
start_node provider-staff issuer "$HERE/provider.mjs" --proxy-base "$PROXY" --client-secret "$STAFF_SECRET" \
    --client-id "$CLIENT_ID" --callback-path /oauth2/idpresponse/staff --cookie-prefix staff
STAFF_ISSUER="$URL"
start_node upstream upstream "$HERE/upstream.mjs"
UPSTREAM="$URL"
echo "provider $ISSUER, staff provider $STAFF_ISSUER, upstream $UPSTREAM, proxy $PROXY, admin $ADMIN"

cat > "$TMP/jwtgate.toml" <<EOF
[server]
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"

[upstream]
url = "$UPSTREAM"

[login]
issuer = "$ISSUER"
client_id = "$CLIENT_ID"
client_secret_env = "JWTGATE_CLIENT_SECRET"
scope = "openid email profile offline_access"
extra_params = { prompt = "consent" }
secure_cookies = false
alb_signer = "$ALB_ARN"
logout_redirect = "$PROXY/"

[[logins]]
name = "staff"
issuer = "$STAFF_ISSUER"
client_id = "$CLIENT_ID"
client_secret_env = "JWTGATE_STAFF_CLIENT_SECRET"
scope = "openid email profile"
secure_cookies = false
logout_redirect = "$PROXY/"

[[routes]]
name = "admin"
path = "/admin/**"
auth = "login"
login = "staff"

[[routes]]
name = "app"
path = "/app/**"
auth = "login"

[[routes]]
name = "public"
path = "/**"
auth = "none"
EOF

export JWTGATE_STAFF_CLIENT_SECRET="$STAFF_SECRET"
if ! JWTGATE_CLIENT_SECRET="$SECRET" "$BIN" check --config "$TMP/jwtgate.toml" > "$TMP/check.out" 2>&1; then
    echo "run.sh: jwtgate check refused the config:" >&2
    cat "$TMP/check.out" >&2
    exit 1
fi

JWTGATE_CLIENT_SECRET="$SECRET" "$BIN" run --config "$TMP/jwtgate.toml" > "$TMP/jwtgate.log" 2>&1 &
JWTGATE_PID="$!"
PIDS+=("$JWTGATE_PID")

jwtgate_tail() {
    echo "---- jwtgate log (last 60 lines) ----"
    tail -n 60 "$TMP/jwtgate.log"
    echo "---- end of jwtgate log ----"
}

# Ready when GET <admin>/readyz answers 200 (20 s at most).
if ! node -e '
  const [url, pid] = process.argv.slice(1);
  const deadline = Date.now() + 20000;
  (async () => {
    while (Date.now() < deadline) {
      try { process.kill(Number(pid), 0); } catch { console.error("jwtgate exited"); process.exit(1); }
      try { const r = await fetch(url, { signal: AbortSignal.timeout(1000) }); if (r.status === 200) process.exit(0); } catch {}
      await new Promise((ok) => setTimeout(ok, 100));
    }
    console.error("jwtgate not ready within 20 s: " + url); process.exit(1);
  })();' "$ADMIN/readyz" "$JWTGATE_PID"; then
    jwtgate_tail
    exit 1
fi

status=0
TMPDIR="$TMP" node "$HERE/browser-login.mjs" \
    --proxy "$PROXY" --admin "$ADMIN" --issuer "$ISSUER" --upstream "$UPSTREAM" \
    --client-id "$CLIENT_ID" --alb-arn "$ALB_ARN" || status=$?
# Two providers (run after the first script, whose cases do not involve /admin/**).
TMPDIR="$TMP" node "$HERE/browser-logins.mjs" \
    --proxy "$PROXY" --issuer "$ISSUER" --staff-issuer "$STAFF_ISSUER" --upstream "$UPSTREAM" || status=$?
if [ "$status" -ne 0 ]; then
    jwtgate_tail
    echo "---- provider stderr (last 20 lines) ----"
    tail -n 20 "$TMP/provider.err"
    echo "---- staff provider stderr (last 20 lines) ----"
    tail -n 20 "$TMP/provider-staff.err"
fi
exit "$status"
