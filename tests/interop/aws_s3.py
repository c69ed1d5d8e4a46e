#!/usr/bin/env python3
"""moto's S3 with IAM enforcement for tests/aws_signing.rs: each user's own AWS credentials.

Starts moto's server in this process (127.0.0.1, free port) and sets up:
- a Cognito user pool with users alice, bob, carol, dave and their ID tokens, and more ID tokens
  of alice (`spares`), so that tests sharing this moto tell their calls apart by the token;
- groups `alice`, `bob` (`RoleArn` = `files-alice`, `files-bob`) and `admins` (carol, `RoleArn` =
  `admins`);
- bucket `files` with `public/hello.txt`, `alice/seed.txt`, `bob/seed.txt`;
- IAM roles: `files-alice` may get/put/delete `files/alice/*`, `files-bob` likewise `files/bob/*`
  (both may `s3:ListBucket` on `files`), `files-guest` may only get `files/public/*`, `admins` may
  do anything;
- an identity pool (guests allowed) trusting the user pool;
- a SigV4-checking upstream (sigv4_verify_upstream.py) that knows every secret moto hands out.
Then switches IAM enforcement on, checks the facts below with boto3 (`check_unpatched`,
`check_facts`: start-up fails if moto behaves otherwise), forgets what the recorder saw so far,
prints one JSON line with what the test needs and serves until stdin closes (the test's process
ends: its pipe closes); then removes the directory AWS_S3_SCRATCH_DIR names, if any (the test's
recording and files).

Facts measured with moto 5.2.5 (checked again at every start-up unless marked "by hand"):
- IAM enforcement: `POST /moto-api/reset-auth` with body `0` (no form content type: moto reads
  the raw body) sets INITIAL_NO_AUTH_ACTION_COUNT to 0; from then on every service request must
  be signed by credentials moto issued, and S3 checks the signature (botocore's S3SigV4Auth over
  the raw path) and the caller's IAM policies.
- moto's list of unsigned operations (`ActionAuthenticatorMixin.PUBLIC_OPERATIONS` in
  moto/core/authorization.py) is matched against `X-Amz-Target` only. `GetId` is in it;
  `GetCredentialsForIdentity` is added here. STS's query protocol has no `X-Amz-Target`, so
  adding `AssumeRoleWithWebIdentity` to that list changes nothing: the unsigned call then fails
  with 500 (moto reads the missing `Authorization` header, KeyError). Here the check is skipped
  for that action by name instead (AWS itself takes it unsigned).
- STS `AssumeRoleWithWebIdentity` validates nothing (token, trust policy, role existence) and
  issues `ASIA…` keys bound to the role; moto's S3 accepts them with the role's policies, and
  refuses another prefix with 403 `AccessDenied`.
- moto does not evaluate IAM policy variables (`${aws:userid}`,
  `${cognito-identity.amazonaws.com:sub}`): a `Resource` is matched as a regular expression with
  `*` turned into `.*`, so `${...}` never matches. By hand (from its source): conditions are not
  evaluated for S3 either (no `s3:prefix` on ListBucket). Hence one role per user.
- moto's ID tokens carry `cognito:groups` but never `cognito:roles` / `cognito:preferred_role`,
  though groups store a `RoleArn`. So the tokens printed here are moto's own ID tokens with those
  two claims added as Cognito adds them (the group roles; the preferred one of the lowest
  precedence), re-signed with moto's bundled key (kid `dummy`, as cognito_moto.py does): they
  verify against moto's JWKS like moto's own.
- moto's identity pool is a stub: `GetId` ignores `Logins`, `GetCredentialsForIdentity` always
  returns `TESTACCESSKEY12345` / `ABCSECRETKEY` / `ABC12345` (90 s), which moto's S3 refuses
  with 403 `InvalidAccessKeyId`. The verifying upstream knows that secret.
- An unsigned S3 request gets 403.
- A wrong secret gives 403 `SignatureDoesNotMatch`. By hand (moto/iam/access_control.py): moto
  never checks the expiry of keys it issued, so an expired key cannot be made here.
- S3 keys with spaces, UTF-8 and `+` round-trip when the path is percent-encoded (`%20`, `%2B`).
- By hand: moto's signature check (botocore's canonical request) takes the path and the query
  exactly as sent: a request whose query is sent as `prefix=alice/` but signed as
  `prefix=alice%2F` (AWS's canonical form, which AWS computes after decoding) is refused with
  `SignatureDoesNotMatch`, and so is the reverse. Whatever a signer sends must be what it signed.
- By hand: botocore's canonical request, and so moto's check, leaves out `traceparent`,
  `tracestate`, `baggage`, `user-agent`, `expect`, `x-amzn-trace-id` and hop-by-hop headers even
  when `SignedHeaders` names them: a request that signed one of them is refused.
- By hand: `x-amz-content-sha256: UNSIGNED-PAYLOAD` is accepted for S3 PUT and GET.

Run with the python of target/interop-venv (tests/interop/venv.sh).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import time
import urllib.parse

import boto3
import botocore
from botocore.config import Config
from moto.core.authorization import ActionAuthenticatorMixin
from moto.sts.models import sts_backends

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aws_moto import REGION, sign_in, start_moto, user_pool  # noqa: E402
from cognito_moto import jwt_parts, moto_private_key, sign_rs256  # noqa: E402
import sigv4_verify_upstream  # noqa: E402

ACCOUNT = "123456789012"
BUCKET = "files"
USERS = ("alice", "bob", "carol", "dave")


def moto_api(url: str, path: str, body: bytes = b"") -> None:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", path, body=body)
        res = conn.getresponse()
        res.read()
        if res.status != 200:
            raise RuntimeError(f"{path}: {res.status}")
    finally:
        conn.close()


def make_public() -> None:
    """The unsigned calls AWS takes unsigned, unsigned in moto too (see the facts above)."""
    public = ActionAuthenticatorMixin.PUBLIC_OPERATIONS
    for target in (
        "AWSCognitoIdentityService.GetId",
        "AWSCognitoIdentityService.GetCredentialsForIdentity",
    ):
        if target not in public:
            public.append(target)
    checked = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action

    def skip_unsigned_sts(self, resource: str = "*") -> None:
        unsigned = "Authorization" not in self.headers
        if unsigned and self._get_action() == "AssumeRoleWithWebIdentity":
            return None
        return checked(self, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = skip_unsigned_sts


def lookup(identity_pool_keys: dict) -> sigv4_verify_upstream.Lookup:
    """The secret of any key moto handed out: the identity pool's fixed one, or STS's."""

    def find(access_key: str):
        if access_key == identity_pool_keys["AccessKeyId"]:
            return identity_pool_keys["SecretKey"], identity_pool_keys["SessionToken"]
        for role in sts_backends[ACCOUNT]["aws"].assumed_roles:
            if role.access_key_id == access_key:
                return role.secret_access_key, role.session_token
        return None

    return find


def with_roles(id_token: str, roles: list[str]) -> str:
    """moto's ID token with Cognito's `cognito:roles` and `cognito:preferred_role`, re-signed."""
    header, claims = jwt_parts(id_token)
    claims["cognito:roles"] = roles
    claims["cognito:preferred_role"] = roles[0]
    return sign_rs256(header, claims, moto_private_key())


def other_issuer(id_token: str) -> str:
    """A token shaped like moto's but from another pool (same key): only `iss` tells them apart."""
    header, claims = jwt_parts(id_token)
    claims["iss"] = claims["iss"].rsplit("/", 1)[0] + f"/{REGION}_Other0000"
    return sign_rs256(header, claims, moto_private_key())


def check_unpatched(url: str, roles: dict, moto_tokens: dict) -> None:
    """The facts that make this script change moto's tokens and its list of public operations."""
    form = urllib.parse.urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": roles["alice"],
            "RoleSessionName": "fact-check",
            "WebIdentityToken": "x" * 40,
        }
    )
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(
            "POST", "/", body=form, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        response = conn.getresponse()
        response.read()
        status = response.status
    finally:
        conn.close()
    claims = jwt_parts(moto_tokens["alice"])[1]
    facts = {
        "unsigned AssumeRoleWithWebIdentity": status,
        "cognito:groups": claims.get("cognito:groups"),
        "cognito:preferred_role": claims.get("cognito:preferred_role"),
    }
    expected = {
        "unsigned AssumeRoleWithWebIdentity": 500,
        "cognito:groups": ["alice"],
        "cognito:preferred_role": None,
    }
    if facts != expected:
        raise RuntimeError(f"moto does not behave as measured: {facts} != {expected}")


def check_facts(url: str, roles: dict, identity_pool_keys: dict) -> None:
    """The facts of the docstring, measured with boto3 now that IAM enforcement is on."""
    unsigned = Config(signature_version=botocore.UNSIGNED)
    sts = boto3.client("sts", endpoint_url=url, region_name=REGION, config=unsigned)

    def s3_as(access_key: str, secret: str, token: str | None):
        return boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret,
            aws_session_token=token,
        )

    def code(call) -> str:
        try:
            call()
            return "ok"
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"]

    creds = sts.assume_role_with_web_identity(
        RoleArn=roles["alice"], RoleSessionName="fact-check", WebIdentityToken="x" * 40
    )["Credentials"]
    alice = s3_as(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assumed = sts.assume_role_with_web_identity(
        RoleArn=roles["variables"], RoleSessionName="fact-check", WebIdentityToken="x" * 40
    )
    c = assumed["Credentials"]
    variables = (
        (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]),
        assumed["AssumedRoleUser"]["AssumedRoleId"],
    )
    key = "alice/fact check+é.txt"
    facts = {
        "own prefix": code(lambda: alice.put_object(Bucket=BUCKET, Key=key, Body=b"x")),
        "round trip": alice.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"x",
        "list own prefix": code(lambda: alice.list_objects_v2(Bucket=BUCKET, Prefix="alice/")),
        "other prefix": code(lambda: alice.get_object(Bucket=BUCKET, Key="bob/seed.txt")),
        # AWS would allow this key to the role (and answer NoSuchKey): its session's aws:userid.
        "policy variables": code(
            lambda: s3_as(*variables[0]).get_object(Bucket=BUCKET, Key=f"{variables[1]}/x")
        ),
        "wrong secret": code(
            lambda: s3_as(creds["AccessKeyId"], "wrong", creds["SessionToken"]).get_object(
                Bucket=BUCKET, Key=key
            )
        ),
        "identity pool keys": code(
            lambda: s3_as(
                identity_pool_keys["AccessKeyId"],
                identity_pool_keys["SecretKey"],
                identity_pool_keys["SessionToken"],
            ).get_object(Bucket=BUCKET, Key="public/hello.txt")
        ),
        "unsigned S3": code(
            lambda: boto3.client(
                "s3", endpoint_url=url, region_name=REGION, config=unsigned
            ).get_object(Bucket=BUCKET, Key="public/hello.txt")
        ),
    }
    alice.delete_object(Bucket=BUCKET, Key=key)
    expected = {
        "own prefix": "ok",
        "round trip": True,
        "list own prefix": "ok",
        "other prefix": "AccessDenied",
        "policy variables": "AccessDenied",
        "wrong secret": "SignatureDoesNotMatch",
        "identity pool keys": "InvalidAccessKeyId",
        "unsigned S3": "403",
    }
    if facts != expected:
        raise RuntimeError(f"moto does not behave as measured: {facts} != {expected}")


def main() -> None:
    server, url, kw = start_moto()
    pool, client, _ = user_pool(kw, USERS, "s3-files")
    issuer = f"https://cognito-idp.{REGION}.amazonaws.com/{pool['Id']}"

    iam = boto3.client("iam", **kw)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": issuer[len("https://"):]},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }
        ],
    }

    def role(name: str, statements: list[dict]) -> str:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
            "Arn"
        ]
        iam.put_role_policy(
            RoleName=name,
            PolicyName=f"{name}-s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )
        return arn

    def owner(prefix: str) -> list[dict]:
        return [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": f"arn:aws:s3:::{BUCKET}/{prefix}/*",
            },
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"},
        ]

    roles = {
        "alice": role("files-alice", owner("alice")),
        "bob": role("files-bob", owner("bob")),
        "guest": role(
            "files-guest",
            [
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{BUCKET}/public/*",
                }
            ],
        ),
        "admins": role(
            "admins", [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
        ),
        # The per-user policy AWS would take, which moto cannot evaluate (a fact checked below).
        "variables": role(
            "files-variables",
            [
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{BUCKET}/${{aws:userid}}/*",
                }
            ],
        ),
    }

    idp = boto3.client("cognito-idp", **kw)
    for group, members, precedence in (
        ("alice", ("alice", "dave"), 1),
        ("bob", ("bob",), 1),
        ("admins", ("carol",), 0),
    ):
        idp.create_group(
            GroupName=group, UserPoolId=pool["Id"], RoleArn=roles[group], Precedence=precedence
        )
        for member in members:
            idp.admin_add_user_to_group(UserPoolId=pool["Id"], Username=member, GroupName=group)
    moto_tokens = {name: sign_in(idp, pool, client, name)["IdToken"] for name in USERS}
    group_of = {"alice": "alice", "bob": "bob", "carol": "admins", "dave": "alice"}
    tokens = {name: with_roles(moto_tokens[name], [roles[group_of[name]]]) for name in USERS}
    tokens["other_issuer"] = other_issuer(moto_tokens["alice"])
    # More of alice's tokens, each from its own sign-in: tests that share this moto tell their
    # calls in its recording apart by the token.
    spares = [
        with_roles(sign_in(idp, pool, client, "alice")["IdToken"], [roles["alice"]])
        for _ in range(8)
    ]

    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket=BUCKET)
    for key in ("public/hello.txt", "alice/seed.txt", "bob/seed.txt"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=f"seed of {key}\n".encode())

    identity = boto3.client("cognito-identity", **kw)
    identity_pool = identity.create_identity_pool(
        IdentityPoolName="s3_files",
        AllowUnauthenticatedIdentities=True,
        CognitoIdentityProviders=[
            {"ProviderName": issuer[len("https://"):], "ClientId": client["ClientId"]}
        ],
    )
    identity_id = identity.get_id(IdentityPoolId=identity_pool["IdentityPoolId"])["IdentityId"]
    identity_pool_keys = identity.get_credentials_for_identity(IdentityId=identity_id)[
        "Credentials"
    ]
    verifier, verifier_url = sigv4_verify_upstream.serve(lookup(identity_pool_keys))

    moto_api(url, "/moto-api/reset-auth", b"0")
    check_unpatched(url, roles, moto_tokens)
    make_public()
    check_facts(url, roles, identity_pool_keys)
    if os.environ.get("MOTO_ENABLE_RECORDING"):
        moto_api(url, "/moto-api/recorder/reset-recording")
        moto_api(url, "/moto-api/recorder/start-recording")

    print(
        json.dumps(
            {
                "url": url,
                "verifier_url": verifier_url,
                "bucket": BUCKET,
                "region": REGION,
                "issuer": issuer,
                "client_id": client["ClientId"],
                "identity_pool_id": identity_pool["IdentityPoolId"],
                "identity_pool_access_key": identity_pool_keys["AccessKeyId"],
                "identity_pool_session_token": identity_pool_keys["SessionToken"],
                "tokens": tokens,
                "moto_tokens": moto_tokens,
                "spares": spares,
                "roles": roles,
                "started": int(time.time()),
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    verifier.shutdown()
    server.stop()
    scratch = os.environ.get("AWS_S3_SCRATCH_DIR")
    if scratch:
        # The test's directory (the recording, IRSA's token file): its process has ended.
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
