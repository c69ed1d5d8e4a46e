#!/usr/bin/env python3
"""Interop test: jwtgate in front of an echo upstream, with moto as the Cognito user pool.

Usage: python cognito_moto.py [PATH_TO_JWTGATE_BINARY]

Run it with the python of the venv that run-moto.sh creates (it needs moto[server] and boto3).
Exit code 0 when every case passed, 1 otherwise.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import boto3
import moto
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REGION = "us-east-1"
PASSWORD = "Interop-Passw0rd!"
READY_TIMEOUT = 20.0

UNAUTHORIZED_BODY = b'{"message":"Unauthorized"}'
FORBIDDEN_BODY = b'{"message":"Forbidden"}'


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def b64url_int(seg: str) -> int:
    return int.from_bytes(b64url_decode(seg), "big")


def jwt_parts(token: str) -> tuple[dict, dict]:
    h, p, _ = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p))


def sign_rs256(header: dict, claims: dict, key: rsa.RSAPrivateKey) -> str:
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def moto_private_key() -> rsa.RSAPrivateKey:
    """The RSA key moto signs every Cognito token with (kid `dummy`), from the installed package."""
    path = Path(moto.__file__).parent / "cognitoidp" / "resources" / "jwks-private.json.gz"
    with gzip.open(path, "rt") as f:
        jwk = json.load(f)
    if jwk.get("kid") != "dummy":
        raise RuntimeError(f"unexpected kid in {path}: {jwk.get('kid')!r}")
    n, e, d = b64url_int(jwk["n"]), b64url_int(jwk["e"]), b64url_int(jwk["d"])
    p, q = rsa.rsa_recover_prime_factors(n, e, d)
    return rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    ).private_key()


def http_get(host: str, port: int, path: str, headers: dict | None = None, timeout: float = 10.0):
    """Returns (status, headers as a list of (name, value), body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, resp.getheaders(), body
    finally:
        conn.close()


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def verify_with_jwks(token: str, jwks: dict) -> str:
    """Python-side check of a token against moto's JWKS: 'valid', 'bad-signature' or 'no-key'."""
    header, _ = jwt_parts(token)
    key = next((k for k in jwks.get("keys", []) if k.get("kid") == header.get("kid")), None)
    if key is None:
        return "no-key"
    pub = rsa.RSAPublicNumbers(b64url_int(key["e"]), b64url_int(key["n"])).public_key()
    h, p, s = token.split(".")
    try:
        pub.verify(b64url_decode(s), f"{h}.{p}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "bad-signature"
    return "valid"


# --------------------------------------------------------------------------------------------
# processes and the echo upstream


class Processes:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.servers: list[http.server.ThreadingHTTPServer] = []

    def start(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for srv in self.servers:
            try:
                srv.shutdown()
                srv.server_close()
            except Exception:  # noqa: BLE001 - best effort during teardown
                pass
        self.servers.clear()
        for name, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.procs.clear()


class EchoRecorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []

    def add(self, entry: dict) -> None:
        with self.lock:
            self.requests.append(entry)

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def since(self, n: int) -> list[dict]:
        with self.lock:
            return list(self.requests[n:])


def start_echo(procs: Processes, recorder: EchoRecorder) -> int:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            entry = {
                "method": self.command,
                "path": self.path,
                "headers": [(k.lower(), v) for k, v in self.headers.items()],
            }
            recorder.add(entry)
            body = json.dumps({"echo": True, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    procs.servers.append(srv)
    threading.Thread(target=srv.serve_forever, name="echo", daemon=True).start()
    return srv.server_address[1]


def wait_http_200(host: str, port: int, path: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            status, _, _ = http_get(host, port, path, timeout=2)
            if status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------------------------
# moto: the user pool and its tokens


def setup_cognito(moto_url: str) -> dict:
    idp = boto3.client(
        "cognito-idp",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    pool_id = idp.create_user_pool(PoolName="jwtgate-interop")["UserPool"]["Id"]
    flows = ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    client_a = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="client-a",
        GenerateSecret=False,
        ExplicitAuthFlows=flows,
        ReadAttributes=["email", "name"],
    )["UserPoolClient"]["ClientId"]
    client_b = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="client-b",
        GenerateSecret=False,
        ExplicitAuthFlows=flows,
        ReadAttributes=["email", "name"],
    )["UserPoolClient"]["ClientId"]
    for group in ("admins", "users"):
        idp.create_group(UserPoolId=pool_id, GroupName=group)

    users = {
        "alice": ("Alice Admin", "admins"),
        "bob": ("Bob User", "users"),
        "carol": ("Carol Nogroup", None),
    }
    for username, (name, group) in users.items():
        idp.admin_create_user(
            UserPoolId=pool_id,
            Username=username,
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": f"{username}@example.test"},
                {"Name": "email_verified", "Value": "true"},
                {"Name": "name", "Value": name},
            ],
        )
        idp.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=PASSWORD, Permanent=True)
        if group:
            idp.admin_add_user_to_group(UserPoolId=pool_id, Username=username, GroupName=group)

    def login(client_id: str, username: str) -> dict:
        res = idp.initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": PASSWORD},
        )["AuthenticationResult"]
        refreshed = idp.initiate_auth(
            ClientId=client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": res["RefreshToken"]},
        )["AuthenticationResult"]
        return {
            "access": res["AccessToken"],
            "id": res["IdToken"],
            "refreshed_access": refreshed["AccessToken"],
            "refreshed_id": refreshed["IdToken"],
        }

    tokens = {u: login(client_a, u) for u in users}
    # AdminInitiateAuth works too; alice's tokens through client B come from that flow.
    res_b = idp.admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_b,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "alice", "PASSWORD": PASSWORD},
    )["AuthenticationResult"]
    tokens["alice_b"] = {"access": res_b["AccessToken"], "id": res_b["IdToken"]}

    subs = {}
    for u in users:
        attrs = idp.admin_get_user(UserPoolId=pool_id, Username=u)["UserAttributes"]
        subs[u] = next(a["Value"] for a in attrs if a["Name"] == "sub")

    return {"pool_id": pool_id, "client_a": client_a, "client_b": client_b, "tokens": tokens, "subs": subs}


def make_signed_tokens(cog: dict) -> dict:
    """Cognito-shaped tokens moto cannot issue, signed with moto's own key unless noted."""
    key = moto_private_key()
    header = {"typ": "JWT", "kid": "dummy", "alg": "RS256"}
    now = int(time.time())
    _, bob_access = jwt_parts(cog["tokens"]["bob"]["access"])
    _, alice_access = jwt_parts(cog["tokens"]["alice"]["access"])
    issuer = f"https://cognito-idp.{REGION}.amazonaws.com/{cog['pool_id']}"

    def fresh(claims: dict, **changes) -> dict:
        out = dict(claims)
        out.update({"iat": now, "auth_time": now, "exp": now + 3600, "jti": str(uuid.uuid4())})
        out.update(changes)
        return out

    # a user access token carrying a custom resource-server scope
    scope_read = sign_rs256(header, fresh(bob_access, scope="api/read"), key)
    # a client_credentials-shaped access token (what Cognito's /oauth2/token issues for M2M)
    cc_claims = {
        "sub": cog["client_a"],
        "token_use": "access",
        "scope": "api/read api/admin",
        "auth_time": now,
        "iss": issuer,
        "exp": now + 3600,
        "iat": now,
        "version": 2,
        "jti": str(uuid.uuid4()),
        "client_id": cog["client_a"],
    }
    client_credentials = sign_rs256(header, cc_claims, key)
    expired = sign_rs256(
        header, fresh(alice_access, iat=now - 4200, auth_time=now - 4200, exp=now - 600), key
    )
    other_pool = cog["pool_id"][:-4] + ("0000" if not cog["pool_id"].endswith("0000") else "1111")
    wrong_iss = sign_rs256(
        header, fresh(alice_access, iss=f"https://cognito-idp.{REGION}.amazonaws.com/{other_pool}"), key
    )
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad_signature = sign_rs256(header, fresh(alice_access), other_key)
    unknown_kid = sign_rs256(dict(header, kid="unknown-kid"), fresh(alice_access), key)
    return {
        "scope_read": scope_read,
        "client_credentials": client_credentials,
        "expired": expired,
        "wrong_iss": wrong_iss,
        "bad_signature": bad_signature,
        "unknown_kid": unknown_kid,
    }


# --------------------------------------------------------------------------------------------
# the cases


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def report(self, case: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            log(f"FAIL {case}: " + "; ".join(problems))
        else:
            self.passed += 1
            log(f"ok  {case}")


def write_config(path: Path, listen: int, admin: int, echo: int, moto_port: int, cog: dict) -> None:
    pool = cog["pool_id"]
    path.write_text(
        f"""[server]
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"

[upstream]
url = "http://127.0.0.1:{echo}"

[[issuers]]
name = "moto"
issuer = "https://cognito-idp.{REGION}.amazonaws.com/{pool}"
jwks_uri = "http://127.0.0.1:{moto_port}/{pool}/.well-known/jwks.json"
audiences = ["{cog['client_a']}"]

[[routes]]
path = "/health"
auth = "none"

[[routes]]
name = "admin"
path = "/admin/**"
groups_any = ["admins"]
token_use = "access"

[[routes]]
name = "profile"
path = "/profile"
token_use = "id"

[[routes]]
name = "read"
path = "/read/**"
scopes_any = ["api/read"]

[[routes]]
name = "m2m"
path = "/m2m/**"
scopes_all = ["api/read", "api/admin"]

[[routes]]
name = "rest"
path = "/**"
auth = "jwt"

[headers]
claims = {{ "x-user-sub" = "sub", "x-user-groups" = "cognito:groups", "x-username" = "username", "x-client-id" = "client_id" }}
"""
    )


def run_cases(proxy_port: int, recorder: EchoRecorder, cog: dict, signed: dict, res: Results) -> None:
    t = cog["tokens"]
    subs = cog["subs"]

    def call(
        case: str,
        path: str,
        token: str | None,
        status: int,
        *,
        raw_auth: str | None = None,
        extra_headers: dict | None = None,
        www_contains: tuple[str, ...] = (),
        www_not_contains: tuple[str, ...] = (),
        www_equals: str | None = None,
        upstream_headers: dict | None = None,
        upstream_absent: tuple[str, ...] = (),
    ) -> None:
        headers = dict(extra_headers or {})
        if raw_auth is not None:
            headers["Authorization"] = raw_auth
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        before = recorder.count()
        problems: list[str] = []
        try:
            got_status, got_headers, body = http_get("127.0.0.1", proxy_port, path, headers)
        except OSError as exc:
            res.report(case, [f"expected status {status}, got connection error {exc!r}"])
            return
        # give a (wrongly) forwarded request a moment to land before judging "never reached"
        if status >= 400:
            time.sleep(0.05)
        seen = recorder.since(before)
        www = header_values(got_headers, "WWW-Authenticate")
        www_joined = " | ".join(www)

        if got_status != status:
            problems.append(f"expected status {status}, got {got_status} (body {body[:200]!r}, WWW-Authenticate {www!r})")
        if status == 401 and body != UNAUTHORIZED_BODY:
            problems.append(f"expected body {UNAUTHORIZED_BODY.decode()}, got {body[:200]!r}")
        if status == 403 and body != FORBIDDEN_BODY:
            problems.append(f"expected body {FORBIDDEN_BODY.decode()}, got {body[:200]!r}")
        for needle in www_contains:
            if needle not in www_joined:
                problems.append(f"expected WWW-Authenticate containing {needle}, got {www!r}")
        for needle in www_not_contains:
            if needle in www_joined:
                problems.append(f"expected WWW-Authenticate without {needle}, got {www!r}")
        if www_equals is not None and www != [www_equals]:
            problems.append(f"expected WWW-Authenticate exactly {www_equals!r}, got {www!r}")

        if status >= 400:
            if seen:
                problems.append(f"expected the upstream not to be reached, got {[s['path'] for s in seen]}")
        else:
            if len(seen) != 1 or seen[0]["path"] != path:
                problems.append(f"expected the upstream to see one request for {path}, got {[s['path'] for s in seen]}")
            else:
                up = seen[0]["headers"]
                for name, value in (upstream_headers or {}).items():
                    vals = header_values(up, name)
                    if vals != [value]:
                        problems.append(f"expected upstream header {name}: {value!r}, got {vals!r}")
                for name in upstream_absent:
                    vals = header_values(up, name)
                    if vals:
                        problems.append(f"expected no upstream header {name}, got {vals!r}")
        res.report(case, problems)

    invalid = ('error="invalid_token"',)

    # groups + token_use on /admin/**
    call("alice access -> /admin/x 200 with identity headers", "/admin/x", t["alice"]["access"], 200,
         upstream_headers={"x-user-sub": subs["alice"], "x-user-groups": "admins", "x-username": "alice"})
    call("bob access (group users) -> /admin/x 403", "/admin/x", t["bob"]["access"], 403,
         www_contains=('error="insufficient_scope"',))
    call("carol access (no cognito:groups) -> /admin/x 403", "/admin/x", t["carol"]["access"], 403,
         www_contains=('error="insufficient_scope"',))
    call("alice ID token -> /admin/x 401 (wrong token_use)", "/admin/x", t["alice"]["id"], 401,
         www_contains=invalid)
    call("alice ID token -> /profile 200", "/profile", t["alice"]["id"], 200)
    call("alice access -> /profile 401 (wrong token_use)", "/profile", t["alice"]["access"], 401,
         www_contains=invalid)

    # audiences: client A only
    call("control: alice access (client A) -> /rest 200", "/rest", t["alice"]["access"], 200,
         upstream_headers={"x-user-sub": subs["alice"], "x-client-id": cog["client_a"]})
    call("alice ID token via client B (aud=B) -> /rest 401", "/rest", t["alice_b"]["id"], 401,
         www_contains=invalid)
    call("alice access via client B (client_id=B) -> /rest 401", "/rest", t["alice_b"]["access"], 401,
         www_contains=invalid)

    # refresh
    call("alice refreshed access -> /admin/x 200", "/admin/x", t["alice"]["refreshed_access"], 200,
         upstream_headers={"x-user-sub": subs["alice"], "x-username": "alice"})
    call("alice refreshed ID token -> /profile 200", "/profile", t["alice"]["refreshed_id"], 200)

    # scopes
    call("moto access (scope aws.cognito.signin.user.admin) -> /read/x 403", "/read/x", t["alice"]["access"], 403,
         www_contains=('scope="api/read"',))
    call("signed user token scope api/read -> /read/x 200", "/read/x", signed["scope_read"], 200,
         upstream_headers={"x-user-sub": subs["bob"], "x-username": "bob"})
    call("client-credentials token -> /m2m/x 200", "/m2m/x", signed["client_credentials"], 200,
         upstream_headers={"x-client-id": cog["client_a"], "x-user-sub": cog["client_a"]},
         upstream_absent=("x-username",))
    call("api/read-only token -> /m2m/x 403", "/m2m/x", signed["scope_read"], 403)

    # invalid tokens
    call("expired access token -> 401", "/rest", signed["expired"], 401, www_contains=invalid)
    call("wrong iss (other pool) -> 401", "/rest", signed["wrong_iss"], 401)
    call("bad signature (kid dummy, other key) -> 401", "/rest", signed["bad_signature"], 401)
    call("unknown kid -> 401", "/rest", signed["unknown_kid"], 401)
    call("no Authorization header -> 401 without error=", "/rest", None, 401,
         www_equals='Bearer realm="jwtgate"', www_not_contains=("error=",))
    call("garbage Bearer abc.def.ghi -> 401", "/rest", None, 401, raw_auth="Bearer abc.def.ghi")
    call("/health without token -> 200", "/health", None, 200, upstream_absent=("x-user-sub",))

    # spoofed identity headers
    call("spoofed x-user-sub with alice's token -> upstream sees alice's sub", "/rest", t["alice"]["access"], 200,
         extra_headers={"x-user-sub": "evil"}, upstream_headers={"x-user-sub": subs["alice"]})
    call("spoofed x-user-sub without token on /health -> upstream sees no x-user-sub", "/health", None, 200,
         extra_headers={"x-user-sub": "evil"}, upstream_absent=("x-user-sub",))


def precheck_tokens(moto_port: int, cog: dict, signed: dict, res: Results) -> None:
    """Checks, in Python, that the tokens are what the matrix assumes (shape and signature)."""
    status, _, body = http_get("127.0.0.1", moto_port, f"/{cog['pool_id']}/.well-known/jwks.json")
    jwks = json.loads(body) if status == 200 else {}
    t = cog["tokens"]
    expect_valid = {
        "alice access": t["alice"]["access"],
        "alice id": t["alice"]["id"],
        "alice refreshed access": t["alice"]["refreshed_access"],
        "bob access": t["bob"]["access"],
        "carol access": t["carol"]["access"],
        "alice access via client B": t["alice_b"]["access"],
        "signed api/read token": signed["scope_read"],
        "signed client-credentials token": signed["client_credentials"],
        "signed expired token": signed["expired"],
        "signed wrong-iss token": signed["wrong_iss"],
    }
    problems = []
    for label, tok in expect_valid.items():
        got = verify_with_jwks(tok, jwks)
        if got != "valid":
            problems.append(f"{label}: expected valid signature, got {got}")
    for label, tok, want in (
        ("bad-signature token", signed["bad_signature"], "bad-signature"),
        ("unknown-kid token", signed["unknown_kid"], "no-key"),
    ):
        got = verify_with_jwks(tok, jwks)
        if got != want:
            problems.append(f"{label}: expected {want}, got {got}")
    res.report("setup: tokens verify (or not) against moto's JWKS as intended", problems)

    problems = []
    _, a = jwt_parts(t["alice"]["access"])
    _, i = jwt_parts(t["alice"]["id"])
    _, c = jwt_parts(t["carol"]["access"])
    _, ab = jwt_parts(t["alice_b"]["id"])
    issuer = f"https://cognito-idp.{REGION}.amazonaws.com/{cog['pool_id']}"
    checks = [
        ("access iss", a.get("iss"), issuer),
        ("access token_use", a.get("token_use"), "access"),
        ("access client_id", a.get("client_id"), cog["client_a"]),
        ("access has no aud", "aud" in a, False),
        ("access scope", a.get("scope"), "aws.cognito.signin.user.admin"),
        ("access cognito:groups", a.get("cognito:groups"), ["admins"]),
        ("access sub", a.get("sub"), cog["subs"]["alice"]),
        ("id token_use", i.get("token_use"), "id"),
        ("id aud", i.get("aud"), cog["client_a"]),
        ("carol has no cognito:groups", "cognito:groups" in c, False),
        ("client B id aud", ab.get("aud"), cog["client_b"]),
    ]
    for label, got, want in checks:
        if got != want:
            problems.append(f"{label}: expected {want!r}, got {got!r}")
    res.report("setup: moto token shapes are as the matrix assumes", problems)


# --------------------------------------------------------------------------------------------


def main() -> int:
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "target" / "debug" / "jwtgate"
    procs = Processes()
    res = Results()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    with tempfile.TemporaryDirectory(prefix="jwtgate-interop-") as tmp:
        tmpdir = Path(tmp)
        try:
            # 1. moto
            moto_port = free_port()
            moto_log = open(tmpdir / "moto.log", "wb")
            env = dict(os.environ, MOTO_COGNITO_IDP_USER_POOL_ID_STRATEGY="HASH")
            moto_server = Path(sys.executable).parent / "moto_server"
            moto_proc = procs.start(
                "moto", [str(moto_server), "-H", "127.0.0.1", "-p", str(moto_port)],
                stdout=moto_log, stderr=subprocess.STDOUT, env=env,
            )
            if not wait_http_200("127.0.0.1", moto_port, "/us-east-1_probe/.well-known/jwks.json", 30, moto_proc):
                log(f"FAIL setup: moto_server did not answer on 127.0.0.1:{moto_port}")
                moto_log.flush()
                log((tmpdir / "moto.log").read_text(errors="replace")[-3000:])
                res.failed += 1
                return 1
            moto_url = f"http://127.0.0.1:{moto_port}"
            log(f"moto {moto.__version__} on {moto_url}")

            # 2. pool, clients, groups, users, tokens
            cog = setup_cognito(moto_url)
            signed = make_signed_tokens(cog)
            log(f"pool {cog['pool_id']}, client A {cog['client_a']}, client B {cog['client_b']}")
            precheck_tokens(moto_port, cog, signed, res)

            # 3. echo upstream
            recorder = EchoRecorder()
            echo_port = start_echo(procs, recorder)

            # 4. jwtgate
            if not binary.is_file() or not os.access(binary, os.X_OK):
                log(f"FAIL setup: jwtgate binary not found or not executable: {binary}")
                res.failed += 1
                return 1
            listen, admin = free_port(), free_port()
            while admin == listen:
                admin = free_port()
            config = tmpdir / "jwtgate.toml"
            write_config(config, listen, admin, echo_port, moto_port, cog)
            gate_err_path = tmpdir / "jwtgate.stderr"
            gate_err = open(gate_err_path, "wb")
            gate_env = dict(os.environ)
            gate_env.setdefault("RUST_LOG", "info")
            gate = procs.start(
                "jwtgate", [str(binary), "run", "--config", str(config)],
                stdout=gate_err, stderr=subprocess.STDOUT, env=gate_env,
            )
            if not wait_http_200("127.0.0.1", admin, "/readyz", READY_TIMEOUT, gate):
                gate_err.flush()
                rc = gate.poll()
                state = f"exited with {rc}" if rc is not None else "still running"
                log(f"FAIL setup: jwtgate did not answer 200 on /readyz within {READY_TIMEOUT:.0f}s ({state}); output tail:")
                lines = gate_err_path.read_text(errors="replace").splitlines()
                for line in lines[-40:]:
                    log(f"    {line}")
                log("config was:")
                for line in config.read_text().splitlines():
                    log(f"    {line}")
                res.failed += 1
                return 1
            log(f"jwtgate ready: proxy 127.0.0.1:{listen}, admin 127.0.0.1:{admin}, upstream 127.0.0.1:{echo_port}")

            # 5. the matrix
            run_cases(listen, recorder, cog, signed, res)
            if res.failed:
                gate_err.flush()
                log("jwtgate output tail:")
                for line in gate_err_path.read_text(errors="replace").splitlines()[-30:]:
                    log(f"    {line}")
            return 1 if res.failed else 0
        except Exception:  # noqa: BLE001 - report any setup error as a failed case
            import traceback

            log("FAIL setup: unexpected error")
            log(traceback.format_exc().rstrip())
            res.failed += 1
            return 1
        finally:
            procs.stop_all()
            log(f"{res.passed} passed, {res.failed} failed")


if __name__ == "__main__":
    sys.exit(main())
