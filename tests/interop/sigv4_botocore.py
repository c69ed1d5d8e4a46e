#!/usr/bin/env python3
"""botocore's SigV4 signature of the requests tests/aws.rs signs, for comparison.

Reads a JSON list on stdin, one object per request:
  {"method", "url", "headers": [[name, value], ...] (names unique), "body_base64", "service", "region",
   "access_key", "secret_key", "token" (or null), "time": "20150830T123600Z",
   "unsigned_payload": bool}
and prints a JSON list of {"authorization", "x-amz-date", "x-amz-content-sha256"} in the same
order. S3's signing names use botocore's S3SigV4Auth (no path normalisation, single encoding,
x-amz-content-sha256), every other service SigV4Auth, as boto3 clients do.

Run with the python of target/interop-venv (tests/interop/venv.sh).
"""

from __future__ import annotations

import base64
import datetime
import json
import sys

import botocore.auth
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

S3_NAMES = {"s3", "s3-object-lambda"}


def sign(case: dict) -> dict:
    moment = datetime.datetime.strptime(case["time"], "%Y%m%dT%H%M%SZ")
    # botocore reads the time through this function; fix it to the case's.
    botocore.auth.get_current_datetime = lambda: moment
    request = AWSRequest(
        method=case["method"],
        url=case["url"],
        headers=dict(case["headers"]),
        data=base64.b64decode(case["body_base64"]),
    )
    if case["unsigned_payload"]:
        # What an S3 client configured with payload signing off does (UNSIGNED-PAYLOAD).
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
        request.context["payload_signing_enabled"] = False
    credentials = Credentials(case["access_key"], case["secret_key"], case["token"])
    auth_class = S3SigV4Auth if case["service"] in S3_NAMES else SigV4Auth
    auth_class(credentials, case["service"], case["region"]).add_auth(request)
    return {
        "authorization": request.headers["Authorization"],
        "x-amz-date": request.headers["X-Amz-Date"],
        "x-amz-content-sha256": request.headers.get("X-Amz-Content-SHA256"),
    }


def main() -> None:
    cases = json.load(sys.stdin)
    json.dump([sign(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
