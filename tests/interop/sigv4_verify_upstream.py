#!/usr/bin/env python3
"""An upstream that checks each request's SigV4 signature with botocore, AWS's own Python signer.

moto's S3 checks signatures only for credentials its STS issued; the keys moto's Cognito identity
pool hands out (fixed, `TESTACCESSKEY12345`) are unknown to its S3. This upstream stands where an
AWS service would: for every request it recomputes the signature from the secret of the access
key named in `Authorization` (`lookup(access_key) -> (secret, session_token) | None`) the way
moto's own IAM check does (botocore's `S3SigV4Auth` for s3, `SigV4Auth` otherwise, over the raw
path and query as received and only the signed headers), and also checks what AWS checks around
it: the session token header equals the credentials' token, every `x-amz-*` header is signed, and
a signed payload hash is the SHA-256 of the body received (`UNSIGNED-PAYLOAD` only for S3).

It answers 200 when all of that holds and 403 otherwise, both with a JSON body describing what it
got: `signature_ok`, `reason` (why not, or null), `access_key`, `session_token`, `service`,
`region`, `method`, `target` (path and query as received), `headers` (every header, names in
lower case), `signed_headers`, `body_sha256`, `body_length`, `content_sha256`.

Used in-process by aws_s3.py (`serve`), or alone: reads one JSON line on stdin
`{"ACCESS_KEY": ["SECRET", "TOKEN or null"], ...}`, prints `{"url": ...}` and serves until stdin
closes. Run with the python of target/interop-venv (tests/interop/venv.sh).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

Lookup = Callable[[str], "tuple[str, str | None] | None"]

S3_NAMES = {"s3", "s3-object-lambda", "s3express"}
UNSIGNED = "UNSIGNED-PAYLOAD"
MAX_BODY = 64 << 20


def _between(text: str, first: str, second: str) -> str:
    return text.partition(first)[2].partition(second)[0]


def verify(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    lookup: Lookup,
) -> dict:
    """What AWS would decide about this request, as the JSON the upstream answers."""
    seen = {}
    for name, value in headers:
        name = name.lower()
        seen[name] = f"{seen[name]},{value}" if name in seen else value
    auth = seen.get("authorization", "")
    scope = _between(auth, "Credential=", ",").split("/")
    signed = [h for h in _between(auth, "SignedHeaders=", ",").split(";") if h]
    report = {
        "signature_ok": False,
        "reason": None,
        "access_key": scope[0] if scope[0] else None,
        "session_token": seen.get("x-amz-security-token"),
        "service": scope[3] if len(scope) == 5 else None,
        "region": scope[2] if len(scope) == 5 else None,
        "method": method,
        "target": target,
        "headers": seen,
        "signed_headers": signed,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_length": len(body),
        "content_sha256": seen.get("x-amz-content-sha256"),
    }

    def refuse(reason: str) -> dict:
        report["reason"] = reason
        return report

    if not auth.startswith("AWS4-HMAC-SHA256 ") or len(scope) != 5 or scope[4] != "aws4_request":
        return refuse("no SigV4 Authorization header")
    known = lookup(scope[0])
    if known is None:
        return refuse("unknown access key")
    secret, token = known
    if token is not None and seen.get("x-amz-security-token") != token:
        return refuse("x-amz-security-token is not the credentials' session token")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            return refuse(f"{required} is not signed")
    unsigned_amz = [n for n in seen if n.startswith("x-amz-") and n not in signed]
    if unsigned_amz:
        return refuse(f"x-amz-* headers not signed: {sorted(unsigned_amz)}")
    if not seen.get("x-amz-date", "").startswith(scope[1]):
        return refuse("x-amz-date is not on the credential scope's date")
    declared = seen.get("x-amz-content-sha256")
    if declared == UNSIGNED:
        if report["service"] not in S3_NAMES:
            return refuse(f"UNSIGNED-PAYLOAD for {report['service']}")
    elif declared is not None and declared != report["body_sha256"]:
        return refuse("x-amz-content-sha256 is not the SHA-256 of the body")
    if report["service"] in S3_NAMES and declared is None:
        return refuse("S3 needs x-amz-content-sha256")

    # As moto's IAM check (moto/iam/access_control.py): the raw target, the signed headers only,
    # the timestamp the request names.
    request = AWSRequest(
        method=method,
        url=f"http://{seen.get('host', '')}{target}",
        data=body,
        headers={n: v for n, v in seen.items() if n in signed},
    )
    request.context["timestamp"] = seen["x-amz-date"]
    auth_class = S3SigV4Auth if report["service"] in S3_NAMES else SigV4Auth
    signer = auth_class(Credentials(scope[0], secret, token), report["service"], report["region"])
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    given = _between(auth, "Signature=", ",")
    if not hmac.compare_digest(expected, given):
        report["canonical_request"] = canonical
        return refuse("signature does not match")
    report["signature_ok"] = True
    return report


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    lookup: Lookup

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                if len(out) + size > MAX_BODY:
                    raise ValueError("body too large")
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def _answer(self) -> None:
        try:
            body = self._body()
        except ValueError:
            self.send_error(413)
            return
        report = verify(self.command, self.path, list(self.headers.items()), body, self.lookup)
        out = json.dumps(report).encode()
        self.send_response(200 if report["signature_ok"] else 403)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _answer


def serve(lookup: Lookup) -> tuple[ThreadingHTTPServer, str]:
    """Starts the upstream on a free port of 127.0.0.1 in a daemon thread: (server, URL)."""
    handler = type("Handler", (_Handler,), {"lookup": staticmethod(lookup)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def main() -> None:
    keys = json.loads(sys.stdin.readline())
    server, url = serve(lambda key: tuple(keys[key]) if key in keys else None)
    print(json.dumps({"url": url}), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
