#!/usr/bin/env python3
"""moto for tests/aws.rs: AWS's APIs on 127.0.0.1, with real Cognito user-pool tokens.

Starts moto's server in this process on a free port of 127.0.0.1, creates a Cognito user pool
with two users (alice, bob) and their ID tokens, an identity pool trusting that user pool, and an
IAM role for STS web identity; then prints one JSON line with what the test needs and serves
until stdin closes (the test also stops it by PID). moto records every request it serves (its
recorder, written to MOTO_RECORDER_FILEPATH), which the test reads through
/moto-api/recorder/download-recording.

Run with the python of target/interop-venv (tests/interop/venv.sh).
"""

from __future__ import annotations

import json
import sys

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
PASSWORD = "Perm-Pass-1!"


def start_moto() -> tuple[ThreadedMotoServer, str, dict]:
    """moto's server on a free port of 127.0.0.1: (server, its URL, boto3 client arguments)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    kw = dict(
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return server, url, kw


def user_pool(kw: dict, names: tuple[str, ...], pool_name: str) -> tuple[dict, dict, dict]:
    """A user pool with an app client and `names` as confirmed users: (pool, client, each user's
    `AuthenticationResult`)."""
    idp = boto3.client("cognito-idp", **kw)
    pool = idp.create_user_pool(PoolName=pool_name)["UserPool"]
    client = idp.create_user_pool_client(
        UserPoolId=pool["Id"],
        ClientName="app",
        ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]
    results = {}
    for name in names:
        idp.admin_create_user(
            UserPoolId=pool["Id"],
            Username=name,
            TemporaryPassword="Temp-Pass-1!",
            MessageAction="SUPPRESS",
        )
        idp.admin_set_user_password(
            UserPoolId=pool["Id"], Username=name, Password=PASSWORD, Permanent=True
        )
        results[name] = sign_in(idp, pool, client, name)
    return pool, client, results


def sign_in(idp, pool: dict, client: dict, name: str) -> dict:
    """`AdminInitiateAuth` with the user's password: the `AuthenticationResult` (tokens)."""
    auth = idp.admin_initiate_auth(
        UserPoolId=pool["Id"],
        ClientId=client["ClientId"],
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": name, "PASSWORD": PASSWORD},
    )
    return auth["AuthenticationResult"]


def main() -> None:
    server, url, kw = start_moto()
    pool, client, results = user_pool(kw, ("alice", "bob"), "aws-credentials-test")
    tokens = {name: result["IdToken"] for name, result in results.items()}

    issuer = f"https://cognito-idp.{REGION}.amazonaws.com/{pool['Id']}"
    identity = boto3.client("cognito-identity", **kw)
    identity_pool = identity.create_identity_pool(
        IdentityPoolName="aws_credentials_test",
        AllowUnauthenticatedIdentities=True,
        CognitoIdentityProviders=[
            {"ProviderName": issuer[len("https://"):], "ClientId": client["ClientId"]}
        ],
    )

    iam = boto3.client("iam", **kw)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": "cognito-identity.amazonaws.com"},
                "Action": "sts:AssumeRoleWithWebIdentity",
            }
        ],
    }
    roles = [
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        for name in ("readers", "writers")
    ]

    print(
        json.dumps(
            {
                "url": url,
                "issuer": issuer,
                "client_id": client["ClientId"],
                "identity_pool_id": identity_pool["IdentityPoolId"],
                "tokens": tokens,
                "roles": roles,
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
