#!/usr/bin/env bash
# External-authorizer interop test: jwtgate's `type = "lambda"` authorizers calling unmodified
# Node.js Lambda authorizer handlers (a simple-response one with payload format 2.0, and an
# IAM-policy one with payload format 1.0, written as AWS documents them) run by lambda-local behind a small local HTTP endpoint (server.mjs),
# both over HTTP (`url`) and over the Lambda Invoke API (`function`): invoke_server.py speaks
# the Invoke path, checks jwtgate's SigV4 signatures with botocore, and hands the events to the
# same handlers.
# Usage: tests/interop/lambda/run.sh [PATH_TO_JWTGATE_BINARY]   (default: <repo>/target/debug/jwtgate)
# Needs node >= 20 with npm, and python3 (botocore, in target/interop-venv). Exit code = test result.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
BIN="${1:-$REPO/target/debug/jwtgate}"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac

die() { echo "run.sh: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no jwtgate binary at $BIN (cargo build --bin jwtgate)"
command -v node >/dev/null || die "node is not installed (node >= 20 with npm)"
command -v curl >/dev/null || die "curl is not installed"

. "$HERE/../lib.sh"
npm_ci_when_changed "$HERE"

node "$HERE/server.mjs" > "$TMP/server.out" 2> "$TMP/server.err" &
PIDS+=("$!")
URL=""
for _ in $(seq 100); do
    URL="$(sed -nE 's/^\{"url":"([^"]+)"\}$/\1/p' "$TMP/server.out")"
    [ -n "$URL" ] && break
    sleep 0.1
done
[ -n "$URL" ] || { cat "$TMP/server.err" >&2; die "the lambda-local endpoint did not start"; }

# The Lambda Invoke API, with the test credentials jwtgate's gateway source reads from its
# environment (AWS's documentation example key).
VENV="$("$REPO/tests/interop/venv.sh")"
REGION="us-east-1"
KEY_ID="AKIDEXAMPLE"
SECRET="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
"$VENV/bin/python" "$HERE/invoke_server.py" "$URL" "$REGION" "$KEY_ID" "$SECRET" > "$TMP/invoke.out" 2> "$TMP/invoke.err" &
PIDS+=("$!")
INVOKE=""
for _ in $(seq 100); do
    INVOKE="$(sed -nE 's/^\{"url": "([^"]+)"\}$/\1/p' "$TMP/invoke.out")"
    [ -n "$INVOKE" ] && break
    sleep 0.1
done
[ -n "$INVOKE" ] || { cat "$TMP/invoke.err" >&2; die "the Invoke API server did not start"; }

read -r PROXY_PORT ADMIN_PORT < <(node -e '
  const net = require("node:net");
  const get = () => new Promise((ok) => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => ok(s)); });
  Promise.all([get(), get()]).then((ss) => { console.log(ss.map((s) => s.address().port).join(" ")); ss.forEach((s) => s.close()); });')
PROXY="http://127.0.0.1:$PROXY_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
ARN="arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod"

cat > "$TMP/jwtgate.toml" <<TOML
[server]
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"

[upstream]
url = "$URL/upstream"

[[authorizers]]
name = "simple"
type = "lambda"
url = "$URL/simple"
identity_source = ["\$request.header.Authorization"]
context_headers = { "x-tenant" = "tenantId", "x-string" = "stringKey" }
timeout = "5s"

[[authorizers]]
name = "iam"
type = "lambda"
url = "$URL/iam"
payload_format = "1.0"
response = "iam"
api_arn = "$ARN"
identity_source = ["\$request.header.headerauth1", "\$request.querystring.QueryString1"]
context_headers = { "x-number" = "numberKey" }
timeout = "5s"

[[aws_credentials]]
name = "gateway"
source = "gateway"

[[authorizers]]
name = "invoke-simple"
type = "lambda"
function = "simple"
region = "$REGION"
endpoint = "$INVOKE"
credentials = "gateway"
qualifier = "live"
identity_source = ["\$request.header.Authorization"]
context_headers = { "x-tenant" = "tenantId" }
timeout = "5s"

[[authorizers]]
name = "invoke-iam"
type = "lambda"
function = "arn:aws:lambda:$REGION:123456789012:function:iam"
endpoint = "$INVOKE"
credentials = "gateway"
payload_format = "1.0"
response = "iam"
api_arn = "$ARN"
identity_source = ["\$request.header.headerauth1", "\$request.querystring.QueryString1"]
context_headers = { "x-number" = "numberKey" }
timeout = "5s"

[[authorizers]]
name = "invoke-failing"
type = "lambda"
function = "failing"
region = "$REGION"
endpoint = "$INVOKE"
credentials = "gateway"
identity_source = ["\$request.header.Authorization"]
timeout = "5s"

[[authorizers]]
name = "invoke-rotated"
type = "lambda"
function = "123456789012:function:rotated"
region = "$REGION"
endpoint = "$INVOKE"
credentials = "gateway"
identity_source = ["\$request.header.Authorization"]
timeout = "5s"

[[routes]]
path = "/tenants/{tenant}/**"
auth = "none"
authorizer = "simple"

[[routes]]
path = "/invoke/tenants/{tenant}/**"
auth = "none"
authorizer = "invoke-simple"

[[routes]]
path = "/invoke/reports/**"
auth = "none"
authorizer = "invoke-iam"

[[routes]]
path = "/invoke/failing/**"
auth = "none"
authorizer = "invoke-failing"

[[routes]]
path = "/invoke/rotated/**"
auth = "none"
authorizer = "invoke-rotated"

[[routes]]
path = "/reports/**"
auth = "none"
authorizer = "iam"
TOML

"$BIN" check --config "$TMP/jwtgate.toml" > "$TMP/check.out" 2>&1 || { cat "$TMP/check.out" >&2; die "jwtgate check refused the config"; }
grep -q 'authorizer "iam"  type=lambda' "$TMP/check.out" || { cat "$TMP/check.out" >&2; die "check does not show the authorizers"; }
grep -q 'authorizer "invoke-iam"  type=lambda  url='"$INVOKE"'/2015-03-31/functions/arn%3Aaws%3Alambda%3A' "$TMP/check.out" || { cat "$TMP/check.out" >&2; die "check does not show the Invoke URL"; }
# The gateway source's chain: these variables first; nothing else (no profile, no IMDS).
env -u AWS_SESSION_TOKEN -u AWS_PROFILE -u AWS_CONTAINER_CREDENTIALS_FULL_URI \
    -u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI -u AWS_WEB_IDENTITY_TOKEN_FILE \
    AWS_ACCESS_KEY_ID="$KEY_ID" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_EC2_METADATA_DISABLED=true \
    RUST_LOG=warn "$BIN" run --config "$TMP/jwtgate.toml" > "$TMP/jwtgate.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
    curl -fsS "$ADMIN/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$ADMIN/readyz" >/dev/null || { cat "$TMP/jwtgate.log" >&2; die "jwtgate not ready"; }

FAILED=0
PASSED=0
# check NAME WANT_STATUS CURL_ARGS...: the status, and the body in $TMP/body.
check() {
    local name="$1" want="$2"; shift 2
    local got
    got="$(curl -sS -o "$TMP/body" -w '%{http_code}' "$@")"
    if [ "$got" = "$want" ]; then
        PASSED=$((PASSED + 1)); echo "ok   $name ($got)"
    else
        FAILED=$((FAILED + 1)); echo "FAIL $name: status $got, want $want: $(head -c 300 "$TMP/body")"
    fi
}
# has NAME TEXT: the last body contains TEXT.
has() {
    if grep -qF -- "$2" "$TMP/body"; then
        PASSED=$((PASSED + 1)); echo "ok   $1"
    else
        FAILED=$((FAILED + 1)); echo "FAIL $1: body lacks $2: $(head -c 300 "$TMP/body")"
    fi
}
calls() { curl -fsS "$URL/__calls"; }

check "simple: the secret token is allowed" 200 -H 'Authorization: secretToken' -H 'x-tenant: forged' "$PROXY/tenants/acme/orders"
has "simple: the context tenantId reaches the upstream" '"x-tenant":"acme"'
has "simple: a string context value reaches the upstream" '"x-string":"value"'
check "simple: another token is denied" 403 -H 'Authorization: guess' "$PROXY/tenants/acme/orders"
has "simple: denial body as API Gateway's" '{"message":"Forbidden"}'
check "simple: no Authorization is 401 without a call" 401 "$PROXY/tenants/acme/orders"
check "simple: a repeated request is served from the cache" 200 -H 'Authorization: secretToken' "$PROXY/tenants/acme/orders"
calls > "$TMP/body"; has "simple: two calls for three decided requests" '"simple":2'

Q='QueryString1=queryValue1'
check "iam: Allow */* for GET" 200 -H 'headerauth1: headerValue1' "$PROXY/reports/2024?$Q"
has "iam: a number context value reaches the upstream" '"x-number":"123"'
check "iam: the explicit Deny for DELETE wins" 403 -X DELETE -H 'headerauth1: headerValue1' "$PROXY/reports/2024?$Q"
check "iam: a Deny policy" 403 -H 'headerauth1: wrong' "$PROXY/reports/2024?$Q"
check "iam: missing query identity source is 401" 401 -H 'headerauth1: headerValue1' "$PROXY/reports/2024"
calls > "$TMP/body"; has "iam: one call per identity and method" '"iam":3'

invoked() { curl -fsS "$INVOKE/__invoke"; }
check "invoke: the secret token is allowed, signed call checked by botocore" 200 -H 'Authorization: secretToken' "$PROXY/invoke/tenants/acme/orders"
has "invoke: the context tenantId reaches the upstream" '"x-tenant":"acme"'
check "invoke: another token is denied" 403 -H 'Authorization: guess' "$PROXY/invoke/tenants/acme/orders"
check "invoke: no Authorization is 401 without a call" 401 "$PROXY/invoke/tenants/acme/orders"
check "invoke: a repeated request is served from the cache" 200 -H 'Authorization: secretToken' "$PROXY/invoke/tenants/acme/orders"
check "invoke iam (full ARN): Allow */* for GET" 200 -H 'headerauth1: headerValue1' "$PROXY/invoke/reports/2024?$Q"
has "invoke iam: a number context value reaches the upstream" '"x-number":"123"'
check "invoke iam: the explicit Deny for DELETE wins" 403 -X DELETE -H 'headerauth1: headerValue1' "$PROXY/invoke/reports/2024?$Q"
invoked > "$TMP/body"; has "invoke: four signed calls accepted" '"ok": 4, "refused": 0'
has "invoke: the qualifier is sent" '"qualifiers": ["live", "live", "", ""]'
check "invoke: a function that throws (X-Amz-Function-Error) fails closed" 500 -H 'Authorization: secretToken' "$PROXY/invoke/failing/x"
has "invoke: failure body as API Gateway's" '{"message":"Internal Server Error"}'
calls > "$TMP/body"; has "invoke: the failing handler ran" '"failing":1'
check "invoke: a signature AWS refuses (403) fails closed" 500 -H 'Authorization: secretToken' "$PROXY/invoke/rotated/x"
invoked > "$TMP/body"; has "invoke: the bad signature was refused by the server" '"refused": 1'
check "invoke: a failure is not cached, refused again" 500 -H 'Authorization: secretToken' "$PROXY/invoke/failing/x"

curl -fsS "$ADMIN/metrics" > "$TMP/body"
has "metrics: cache hits counted" 'jwtgate_authorizer_cache_total{authorizer="simple",result="hit"} 1'
has "metrics: calls by result" 'jwtgate_authorizer_calls_total{authorizer="iam",result="deny"} 1'
has "metrics: a function error" 'jwtgate_authorizer_calls_total{authorizer="invoke-failing",result="function_error"} 2'
has "metrics: Lambda's refusal" 'jwtgate_authorizer_calls_total{authorizer="invoke-rotated",result="bad_status"} 1'
has "metrics: invoke allows" 'jwtgate_authorizer_calls_total{authorizer="invoke-simple",result="allow"} 1'
if grep -qF "$SECRET" "$TMP/jwtgate.log"; then
    FAILED=$((FAILED + 1)); echo "FAIL the secret key is in jwtgate's log"
else
    PASSED=$((PASSED + 1)); echo "ok   the secret key is not in jwtgate's log"
fi
grep -q 'Lambda refused the Invoke call.*InvalidSignatureException' "$TMP/jwtgate.log" && { PASSED=$((PASSED + 1)); echo "ok   log: Lambda's error type"; } || { FAILED=$((FAILED + 1)); echo "FAIL log lacks Lambda's error type"; }

echo "$PASSED passed, $FAILED failed"
if [ "$FAILED" -ne 0 ]; then
    echo "---- jwtgate log ----"; tail -n 40 "$TMP/jwtgate.log"
    echo "---- endpoint stderr ----"; tail -n 40 "$TMP/server.err"
    echo "---- Invoke API server stderr ----"; tail -n 40 "$TMP/invoke.err"
    exit 1
fi
