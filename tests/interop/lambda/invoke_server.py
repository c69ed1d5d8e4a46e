#!/usr/bin/env python3
"""A small local server speaking the Lambda Invoke API path, for jwtgate's `function` authorizers.

  POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=...]

FunctionName is a name, ACCOUNT:function:NAME or a full ARN, as Lambda takes it. Like Lambda, it
first checks the SigV4 signature (service `lambda`): botocore recomputes it from the request as
received and the secret of the access key in the Credential scope; a missing or wrong signature,
an unknown key, or a scope of another service or region is 403 (InvalidSignatureException,
UnrecognizedClientException). It then hands the event (the body) to the lambda-local endpoint of
server.mjs, which runs the unmodified handler of that name:
  200 -> 200 with the handler's result (what Lambda answers a RequestResponse invocation)
  502 -> 200 with X-Amz-Function-Error: Unhandled and the error object (a function that threw)
An unknown function is 404 (ResourceNotFoundException).

The function `rotated` checks signatures against another secret for the same key id: the key
jwtgate signs with is not the one AWS knows (a rotated key), so every call to it is refused.

Usage: python invoke_server.py LAMBDA_LOCAL_URL REGION ACCESS_KEY_ID SECRET_ACCESS_KEY
Prints one JSON line {"url": "http://127.0.0.1:PORT"} once it listens; GET /__invoke lists the
calls ({"ok": N, "refused": N, "qualifiers": [...]}). Stops on SIGTERM.

Run with the python of target/interop-venv (tests/interop/venv.sh).
"""

from __future__ import annotations

import datetime
import hmac
import json
import re
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

LAMBDA_LOCAL, REGION, ACCESS_KEY, SECRET_KEY = sys.argv[1:5]
FUNCTIONS = {"simple", "iam", "failing", "rotated"}
PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
CREDENTIAL = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)
MAX_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit
counts = {"ok": 0, "refused": 0, "qualifiers": []}
lock = threading.Lock()
# botocore reads the signing time through a module function: one check at a time.
sign_lock = threading.Lock()


def expected_authorization(method, url, headers, signed, body, region, secret, amz_date):
    """botocore's Authorization for the request as received, signing the same headers."""
    moment = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    request = AWSRequest(
        method=method,
        url=url,
        headers={k: v for k, v in headers.items() if k.lower() in signed and k.lower() != "x-amz-date"},
        data=body,
    )
    token = headers.get("x-amz-security-token")
    with sign_lock:
        botocore.auth.get_current_datetime = lambda: moment
        SigV4Auth(Credentials(ACCESS_KEY, secret, token), "lambda", region).add_auth(request)
    return request.headers["Authorization"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the test prints what matters
        pass

    def answer(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, status, error_type, message):
        with lock:
            counts["refused"] += 1
        self.answer(status, {"message": message}, {"x-amzn-ErrorType": error_type})

    def do_GET(self):
        if self.path == "/__invoke":
            with lock:
                self.answer(200, counts)
        else:
            self.answer(404, {"message": "not found"})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return self.refuse(413, "RequestTooLargeException", "request too large")
        body = self.rfile.read(length)
        split = urllib.parse.urlsplit(self.path)
        match = PATH.match(split.path)
        if not match:
            return self.answer(404, {"message": "unknown operation"})
        headers = {k.lower(): v for k, v in self.headers.items()}
        auth = CREDENTIAL.match(headers.get("authorization", ""))
        if not auth:
            return self.refuse(403, "MissingAuthenticationTokenException", "missing signature")
        key_id, _, region, service, signed, _ = auth.groups()
        if key_id != ACCESS_KEY:
            return self.refuse(403, "UnrecognizedClientException", "unknown access key")
        if service != "lambda" or region != REGION:
            return self.refuse(403, "InvalidSignatureException", "wrong credential scope")
        function = urllib.parse.unquote(match.group(1)).rsplit(":function:", 1)[-1]
        secret = SECRET_KEY if function != "rotated" else SECRET_KEY + "-rotated"
        url = f"http://{headers.get('host', '')}{self.path}"
        want = expected_authorization(
            "POST", url, headers, set(signed.split(";")), body, region, secret,
            headers.get("x-amz-date", ""),
        )
        if not hmac.compare_digest(want, headers["authorization"]):
            return self.refuse(403, "InvalidSignatureException", "signature does not match")
        if function not in FUNCTIONS or function == "rotated":
            return self.refuse(404, "ResourceNotFoundException", "function not found")
        with lock:
            counts["ok"] += 1
            counts["qualifiers"].append(urllib.parse.parse_qs(split.query).get("Qualifier", [""])[0])
        request = urllib.request.Request(
            f"{LAMBDA_LOCAL}/{function}", data=body, method="POST",
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                self.answer(200, json.loads(response.read()))
        except urllib.error.HTTPError as e:
            # What Lambda answers when the function threw: 200 and the error object.
            self.answer(200, json.loads(e.read() or b"{}"), {"X-Amz-Function-Error": "Unhandled"})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
