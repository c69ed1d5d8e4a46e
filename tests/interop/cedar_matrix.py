#!/usr/bin/env python3
"""Differential test: jwtgate's Cedar decisions against cedarpy (the Rust Cedar engine's Python
bindings) on Cognito tokens issued by moto.

Usage: python cedar_matrix.py [PATH_TO_JWTGATE_BINARY]   (run with the venv's python: see
run-cedar.sh).

For every cell of users x token kinds x requests (routes, methods, path parameters, queries),
jwtgate answers through its HTTP port (200 allowed, 403 denied), and this script builds the
entities independently, the way Amazon Verified Permissions builds them from a Cognito identity
source, and asks cedarpy. Every cell must agree. The policies use when/unless, groups (parents),
ID-token attributes (custom:tenant), context.token.scope, path and query parameters, and one
policy that errors for access tokens (Cedar skips it in both).

Exit code 0 when every cell agreed, 1 otherwise.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import cedarpy

from cognito_moto import (
    REGION,
    Processes,
    EchoRecorder,
    free_port,
    jwt_parts,
    moto_private_key,
    sign_rs256,
    start_echo,
    wait_http_200,
)

PASSWORD = "Interop-Passw0rd!"
NS = "PetStore"

POLICIES = """
// ID tokens: members read their own tenant's pets.
@id("tenant-read")
permit (principal, action == PetStore::Action::"get /tenants/{tenant}/pets/{petId}", resource)
when { principal has "custom:tenant" && principal["custom:tenant"] == context.pathParameters.tenant };

// Admins with the pets/write scope change pets (access tokens: context.token.scope).
@id("admins-write")
permit (
  principal in PetStore::UserGroup::"POOL|admins",
  action in [PetStore::Action::"put /tenants/{tenant}/pets/{petId}",
             PetStore::Action::"delete /tenants/{tenant}/pets/{petId}"],
  resource
)
when { context has token && context.token.scope.contains("pets/write") };

// Deletes of pet 13 are never allowed, unless ?override=yes by an admin.
@id("no-delete-13")
forbid (principal, action == PetStore::Action::"delete /tenants/{tenant}/pets/{petId}", resource)
when { context.pathParameters.petId == "13" }
unless {
  principal in PetStore::UserGroup::"POOL|admins" &&
  context has queryStringParameters && context.queryStringParameters has override &&
  context.queryStringParameters.override == "yes"
};

// Users with pets/read list pets (access tokens), by username for bob.
@id("users-list")
permit (principal in PetStore::UserGroup::"POOL|users", action == PetStore::Action::"get /pets", resource)
when { context has token && context.token.scope.contains("pets/read") };

@id("bob-lists")
permit (principal, action == PetStore::Action::"get /pets", resource)
when { context has token && context.token has username && context.token.username == "bob" };

// The secret view is for admins only, whatever permits say.
@id("secret-view")
forbid (principal, action == PetStore::Action::"get /pets", resource)
when { context has queryStringParameters && context.queryStringParameters has view &&
       context.queryStringParameters.view == "secret" }
unless { principal in PetStore::UserGroup::"POOL|admins" };

// Errors for access tokens (no attributes): Cedar skips it and decides on the rest.
@id("verified-email-posts")
permit (principal, action == PetStore::Action::"post /pets", resource)
when { principal.email_verified == "true" };

// Anyone in a group reads any pet of globex on weekdays... any pet whose id is numeric-ish.
@id("globex-open")
permit (principal, action == PetStore::Action::"get /tenants/{tenant}/pets/{petId}", resource)
when { context.pathParameters.tenant == "globex" && context.pathParameters.petId like "4*" }
unless { principal has "custom:tenant" && principal["custom:tenant"] == "initech" };
"""

ADMIN_POLICIES = """
@id("admin-area")
permit (principal in PetStore::UserGroup::"POOL|admins", action, resource)
when { context has token };

// The greedy route's actions are named as API Gateway writes the resource: {proxy+}.
@id("admin-no-delete")
forbid (principal, action == PetStore::Action::"delete /admin/{proxy+}", resource)
unless { context has token && context.token.scope.contains("admin/delete") };
"""

USERS = {
    # username: (groups, custom:tenant)
    "alice": (["admins"], "acme"),
    "bob": (["users"], "acme"),
    "carol": ([], "globex"),
    "dave": (["admins", "users"], "initech"),
}

# Scopes of the re-signed access tokens (moto's own carry aws.cognito.signin.user.admin only).
SCOPES = {
    "alice": "pets/read pets/write",
    "bob": "pets/read",
    "carol": "",
    "dave": "pets/write",
}

ROUTES = [
    # (method, template, concrete path with query)
    *[
        (m, "/tenants/{tenant}/pets/{petId}", f"/tenants/{t}/pets/{p}{q}")
        for m in ("GET", "PUT", "DELETE")
        for t in ("acme", "globex")
        for p in ("13", "42")
        for q in ("", "?override=yes")
    ],
    *[
        (m, "/pets", f"/pets{q}")
        for m in ("GET", "POST")
        for q in ("", "?view=secret", "?view=public&view=secret", "?view=full")
    ],
    ("GET", "/admin/**", "/admin/stats"),
    ("DELETE", "/admin/**", "/admin/cache?all=1"),
]


def log(msg: str) -> None:
    print(msg, flush=True)


def setup_cognito(moto_url: str) -> dict:
    idp = boto3.client(
        "cognito-idp",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    pool_id = idp.create_user_pool(
        PoolName="jwtgate-cedar",
        Schema=[{"Name": "tenant", "AttributeDataType": "String", "Mutable": True}],
    )["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="cedar",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    for group in ("admins", "users"):
        idp.create_group(UserPoolId=pool_id, GroupName=group)
    tokens = {}
    for username, (groups, tenant) in USERS.items():
        idp.admin_create_user(
            UserPoolId=pool_id,
            Username=username,
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": f"{username}@example.test"},
                {"Name": "custom:tenant", "Value": tenant},
            ],
        )
        idp.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=PASSWORD, Permanent=True)
        for group in groups:
            idp.admin_add_user_to_group(UserPoolId=pool_id, Username=username, GroupName=group)
        res = idp.initiate_auth(
            ClientId=client,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": PASSWORD},
        )["AuthenticationResult"]
        tokens[username] = {"id": res["IdToken"], "access": res["AccessToken"]}
    # Access tokens with resource-server scopes: moto's own claims, scope replaced, signed
    # with moto's key (as a pool with a resource server would issue them).
    key = moto_private_key()
    for username, scope in SCOPES.items():
        header, claims = jwt_parts(tokens[username]["access"])
        claims = dict(claims, scope=scope) if scope else {k: v for k, v in claims.items() if k != "scope"}
        tokens[username]["scoped"] = sign_rs256(header, claims, key)
    return {"pool_id": pool_id, "client": client, "tokens": tokens}


def write_config(path: Path, listen: int, admin: int, echo: int, moto_port: int, cog: dict, policy_dir: Path) -> None:
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
audiences = ["{cog['client']}"]

[[routes]]
name = "tenant-pets"
path = "/tenants/{{tenant}}/pets/{{petId}}"
policy = true

[[routes]]
name = "pets"
path = "/pets"
policy = true

[[routes]]
name = "admin"
path = "/admin/**"
policy = "admin"

[policies]
files = ["{policy_dir}/pets.cedar"]
namespace = "{NS}"

[[policy_sets]]
name = "admin"
files = ["{policy_dir}/admin/*.cedar"]
namespace = "{NS}"
"""
    )


# --------------------------------------------------------------------------------------------
# The reference: entities as AVP builds them from a Cognito identity source, written here
# independently of jwtgate.


def cedar_value(v):
    """A claim as Cedar JSON: floats and nulls have no Cedar type and are left out."""
    if isinstance(v, bool) or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, list):
        return [x for x in (cedar_value(i) for i in v) if x is not None]
    if isinstance(v, dict):
        return {k: x for k, x in ((k, cedar_value(i)) for k, i in v.items()) if x is not None}
    return None


def api_gateway_path(template: str) -> str:
    """A route pattern as API Gateway writes a resource path: `/admin/**` is `/admin/{proxy+}`."""
    return template[: -len("/**")] + "/{proxy+}" if template.endswith("/**") else template


def reference_request(token: str, method: str, template: str, path: str, names: list[str], pool: str):
    _, claims = jwt_parts(token)
    principal = {"type": f"{NS}::User", "id": f"{pool}|{claims['sub']}"}
    groups = [{"type": f"{NS}::UserGroup", "id": f"{pool}|{g}"} for g in claims.get("cognito:groups", [])]
    rest = {k: v for k, v in claims.items() if k != "cognito:groups"}
    context: dict = {}
    attrs: dict = {}
    if claims.get("token_use") == "id":
        attrs = {k: x for k, x in ((k, cedar_value(v)) for k, v in rest.items()) if x is not None}
    else:
        token_record = {k: x for k, x in ((k, cedar_value(v)) for k, v in rest.items()) if x is not None}
        if isinstance(claims.get("scope"), str):
            token_record["scope"] = [s for s in claims["scope"].split(" ") if s]
        context["token"] = token_record
    raw_path, _, query = path.partition("?")
    # Path parameters: the template's {name} segments.
    params = {}
    for t, seg in zip(template.strip("/").split("/"), raw_path.strip("/").split("/")):
        if t.startswith("{") and t.endswith("}"):
            params[t[1:-1]] = seg
    if params:
        context["pathParameters"] = params
    if query:
        from urllib.parse import parse_qsl

        qs: dict = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            qs[k] = v  # the last value of a repeated key, as API Gateway
        if qs:
            context["queryStringParameters"] = qs
    entities = [{"uid": principal, "attrs": attrs, "parents": groups}]
    entities += [{"uid": g, "attrs": {}, "parents": []} for g in groups]
    request = {
        "principal": principal,
        # AVP's API-linked stores name actions after API Gateway's resource paths: a greedy
        # `/**` route is `/{proxy+}` there.
        "action": {"type": f"{NS}::Action", "id": f"{method.lower()} {api_gateway_path(template)}"},
        "resource": {"type": f"{NS}::Application", "id": NS},
        "context": context,
    }
    return request, entities


def send(port: int, method: str, path: str, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}", "Content-Length": "0"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def main() -> int:
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "target/debug/jwtgate"
    procs = Processes()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    with tempfile.TemporaryDirectory(prefix="jwtgate-cedar-") as tmp:
        tmpdir = Path(tmp)
        try:
            moto_port = free_port()
            moto_log = open(tmpdir / "moto.log", "wb")
            env = dict(os.environ, MOTO_COGNITO_IDP_USER_POOL_ID_STRATEGY="HASH")
            moto_server = Path(sys.executable).parent / "moto_server"
            moto_proc = procs.start(
                "moto", [str(moto_server), "-H", "127.0.0.1", "-p", str(moto_port)],
                stdout=moto_log, stderr=subprocess.STDOUT, env=env,
            )
            if not wait_http_200("127.0.0.1", moto_port, "/us-east-1_probe/.well-known/jwks.json", 30, moto_proc):
                log("FAIL setup: moto_server did not start")
                return 1
            cog = setup_cognito(f"http://127.0.0.1:{moto_port}")
            pool = cog["pool_id"]
            log(f"cedarpy {getattr(cedarpy, '__version__', '?')}, moto pool {pool}")

            policy_dir = tmpdir / "policies"
            (policy_dir / "admin").mkdir(parents=True)
            policies = POLICIES.replace("POOL", pool)
            admin_policies = ADMIN_POLICIES.replace("POOL", pool)
            (policy_dir / "pets.cedar").write_text(policies)
            (policy_dir / "admin" / "admin.cedar").write_text(admin_policies)

            recorder = EchoRecorder()
            echo_port = start_echo(procs, recorder)
            listen, admin = free_port(), free_port()
            config = tmpdir / "jwtgate.toml"
            write_config(config, listen, admin, echo_port, moto_port, cog, policy_dir)
            gate_out = tmpdir / "jwtgate.log"
            gate = procs.start(
                "jwtgate", [str(binary), "run", "--config", str(config)],
                stdout=open(gate_out, "wb"), stderr=subprocess.STDOUT,
                env=dict(os.environ, RUST_LOG="warn"),
            )
            if not wait_http_200("127.0.0.1", admin, "/readyz", 20, gate):
                log("FAIL setup: jwtgate did not become ready:\n" + gate_out.read_text(errors="replace")[-3000:])
                return 1

            agreed = failed = allowed = 0
            for (username, kind), (method, template, path) in itertools.product(
                itertools.product(USERS, ("id", "access", "scoped")), ROUTES
            ):
                token = cog["tokens"][username][kind]
                request, entities = reference_request(token, method, template, path, [], pool)
                set_text = admin_policies if template == "/admin/**" else policies
                expected = cedarpy.is_authorized(request, set_text, entities).allowed
                status = send(listen, method, path, token)
                got = {200: True, 403: False}.get(status)
                if got is None or got != expected:
                    failed += 1
                    log(f"FAIL {username}/{kind} {method} {path}: jwtgate {status}, cedarpy {'allow' if expected else 'deny'}")
                else:
                    agreed += 1
                    allowed += expected
            log(f"cedar matrix: {agreed} cells agree ({allowed} allowed, {agreed - allowed} denied), {failed} differ")
            if agreed == 0 or allowed == 0 or allowed == agreed:
                log("FAIL the matrix must hold both decisions")
                failed += 1
            print(f"{agreed} passed, {failed} failed", flush=True)
            return 1 if failed else 0
        except Exception:  # noqa: BLE001 - any setup error fails the run
            import traceback

            log("FAIL setup: unexpected error")
            log(traceback.format_exc().rstrip())
            return 1
        finally:
            procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
