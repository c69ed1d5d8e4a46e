#!/usr/bin/env python3
"""Render (and lint) a Helm chart with the real Helm engine, without a cluster.

There is no `helm` binary to install here, but PyPI's helm-sdkpy ships Helm v4's Go library as a
shared object (libhelm_sdkpy.so). Its API has no `helm template`, only `install` against a
cluster, so this script runs `install` against a stub Kubernetes API server on 127.0.0.1 that
answers discovery and accepts every object; the rendered manifest comes back in the release.
Everything Helm does before talking to a cluster (values merge, values schema, template
rendering with sprig, `required`/`fail`, YAML parsing and sorting of the manifests) is Helm's
own code.

  helm_render.py LIB CHART [--values FILE]... [--release NAME] [--namespace NS] > manifest.yaml
  helm_render.py LIB CHART --lint
"""

import argparse
import ctypes
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

# Resources the stub API server says it serves (group/version -> (plural, kind, namespaced)).
RESOURCES = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "monitoring.coreos.com/v1": [
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
        ("podmonitors", "PodMonitor", True),
    ],
}
KUBE_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}


class StubApi(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self):
        self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self._json(200, KUBE_VERSION)
        if path == "/api":
            return self._json(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = {}
            for gv in RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    groups.setdefault(group, []).append(version)
            return self._json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g,
                 "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in groups.items()]})
        for prefix in ("/api/", "/apis/"):
            gv = path[len(prefix):] if path.startswith(prefix) else None
            if gv in RESOURCES:
                return self._json(200, {
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": [{"name": n, "singularName": "", "namespaced": ns, "kind": k,
                                   "verbs": ["create", "delete", "get", "list", "patch",
                                             "update", "watch"]}
                                  for n, k, ns in RESOURCES[gv]]})
        # Release history and every object: none exist yet.
        if "labelSelector=" in self.path:
            return self._json(200, {"kind": "List", "apiVersion": "v1", "items": []})
        return self._not_found()

    def do_POST(self):
        # Creation: echo the object back in the encoding it came in (JSON or protobuf).
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", self.headers.get("Content-Type") or "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_PUT = do_POST

    def do_PATCH(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._not_found()

    def do_DELETE(self):
        self._not_found()


def load(lib_path):
    lib = ctypes.CDLL(lib_path)
    for name in ("helm_sdkpy_last_error", "helm_sdkpy_version_string"):
        getattr(lib, name).restype = ctypes.c_void_p
    return lib


def text(ptr):
    return ctypes.string_at(ptr).decode() if ptr else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("chart")
    ap.add_argument("--values", action="append", default=[])
    ap.add_argument("--release", default="jwtgate")
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--lint", action="store_true")
    args = ap.parse_args()

    lib = load(args.lib)
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = os.path.join(tmp, "kubeconfig")
        with open(kubeconfig, "w") as f:
            yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "stub",
                "clusters": [{"name": "stub", "cluster": {
                    "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
                "users": [{"name": "stub", "user": {"token": "stub"}}],
                "contexts": [{"name": "stub", "context": {
                    "cluster": "stub", "user": "stub", "namespace": args.namespace}}],
            }, f)
        os.environ["HELM_DRIVER"] = "memory"
        os.environ["HELM_CACHE_HOME"] = os.path.join(tmp, "cache")
        os.environ["HELM_CONFIG_HOME"] = os.path.join(tmp, "config")
        os.environ["HELM_DATA_HOME"] = os.path.join(tmp, "data")
        handle = ctypes.c_ulonglong()
        if lib.helm_sdkpy_config_create(args.namespace.encode(), kubeconfig.encode(), b"stub",
                                        b"{}", ctypes.byref(handle)) != 0:
            sys.exit(f"helm: {text(lib.helm_sdkpy_last_error())}")
        out = ctypes.c_void_p()
        if args.lint:
            rc = lib.helm_sdkpy_lint(handle, args.chart.encode(), ctypes.byref(out))
            if rc != 0:
                sys.exit(f"helm lint: {text(lib.helm_sdkpy_last_error())}")
            result = json.loads(text(out.value) or "{}")
            # Severity: 1 info, 2 warning, 3 error (Helm's support.Severity).
            worst = 0
            for m in result.get("Messages") or []:
                sev = m.get("Severity", 0)
                worst = max(worst, sev)
                level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(sev, str(sev))
                detail = m.get("Err") or ""
                print(f"[{level}] {m.get('Path')}: {detail if isinstance(detail, str) else ''}".rstrip())
            for e in result.get("Errors") or []:
                print(f"[ERROR] {e}")
                worst = 3
            print(f"helm lint: {result.get('TotalChartsLinted', 0)} chart(s) linted, "
                  f"{'failed' if worst >= 2 else 'ok'}", file=sys.stderr)
            sys.exit(1 if worst >= 2 else 0)
        values = {}
        for path in args.values:
            with open(path) as f:
                values = merge(values, yaml.safe_load(f) or {})
        options = {"create_namespace": False, "wait": False, "timeout_seconds": 60,
                   "server_side_apply": "false", "disable_openapi_validation": True,
                   "skip_schema_validation": False}
        rc = lib.helm_sdkpy_install(handle, args.release.encode(), args.chart.encode(),
                                    json.dumps(values).encode() if values else b"", b"",
                                    json.dumps(options).encode(), ctypes.byref(out))
        if rc != 0:
            sys.exit(f"helm template: {text(lib.helm_sdkpy_last_error())}")
        release = json.loads(text(out.value))
        sys.stdout.write(release["manifest"])
    server.shutdown()


def merge(base, extra):
    """Helm's -f merge: maps merge recursively, everything else is replaced."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


if __name__ == "__main__":
    main()
