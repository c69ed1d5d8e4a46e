"""Local stand-ins for what a deployed jwtgate talks to, all on 127.0.0.1: an OpenID issuer
(discovery, JWKS, tokens signed with a fresh RSA key) and an upstream app. Used by
live_metrics.py and sidecar_e2e.py."""

import base64
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Quiet(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass


class Issuer:
    """An OpenID issuer: discovery at {issuer}/.well-known/openid-configuration, keys at /jwks."""

    def __init__(self, client_id="e2e-client"):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "e2e-key-1"
        self.client_id = client_id
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.base}/pool"
        self.jwks_requests = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/pool/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.issuer,
                        "authorization_endpoint": f"{issuer.base}/oauth2/authorize",
                        "token_endpoint": f"{issuer.base}/oauth2/token",
                        "userinfo_endpoint": f"{issuer.base}/oauth2/userInfo",
                        "end_session_endpoint": f"{issuer.base}/logout",
                        "jwks_uri": f"{issuer.base}/jwks",
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                elif self.path == "/jwks":
                    issuer.jwks_requests += 1
                    body = {"keys": [issuer.jwk()]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = Quiet(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwk(self):
        nums = self.key.public_key().public_numbers()
        n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": b64url(n), "e": b64url(nums.e.to_bytes(3, "big"))}

    def token(self, lifetime=3600, **claims):
        """A Cognito-shaped access token (no aud, client_id instead)."""
        now = int(time.time())
        payload = {"iss": self.issuer, "sub": "e2e-user", "client_id": self.client_id,
                   "token_use": "access", "scope": "example-api/read", "iat": now,
                   "exp": now + lifetime, "username": "e2e"}
        payload.update(claims)
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(payload).encode())).encode()
        sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + b64url(sig)

    def close(self):
        self.server.shutdown()


class App:
    """The upstream: answers every request after `delay` seconds, records x-request-id."""

    def __init__(self, port=None, delay=0.0):
        self.port = port or free_port()
        self.delay = delay
        self.delay_for = {}  # path prefix -> seconds
        self.seen = set()
        self.lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                rid = self.headers.get("x-request-id", "")
                with app.lock:
                    app.seen.add(rid)
                delay = next((d for p, d in app.delay_for.items() if self.path.startswith(p)),
                             app.delay)
                if delay:
                    time.sleep(delay)
                data = json.dumps({"path": self.path, "sub": self.headers.get("x-user-sub")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

        self.server = Quiet(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def p256_pem():
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cookie_key():
    return base64.b64encode(os.urandom(32)).decode()


def http_get(url, headers=None, timeout=5):
    """(status, body) of a GET; status 0 and the error text when no answer came."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def wait_for(url, status=200, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if http_get(url, timeout=2)[0] == status:
            return True
        time.sleep(0.1)
    return False


def start_jwtgate(binary, args, env, log_path):
    log = open(log_path, "wb")
    return subprocess.Popen([binary, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
