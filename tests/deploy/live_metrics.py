#!/usr/bin/env python3
"""Checks the dashboard and the alert rules against a live jwtgate.

Starts the binary on 127.0.0.1 with a minimal config (a local issuer whose keys it fetches, a
local upstream), sends a little traffic of every kind, reads /metrics, and checks that every
jwtgate_* metric the dashboard and the rules name is one the binary exports (by its `# TYPE`
line; histograms also as _bucket, _sum, _count). With --prometheus, a real Prometheus then
scrapes that jwtgate with the rules loaded, and every dashboard query is run against it: each
must succeed, and return data whenever the metrics it reads have series.

  live_metrics.py --binary target/debug/jwtgate --dashboard D.json --rules R.yaml
                  [--promtool promtool] [--prometheus prometheus]
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

from fixtures import App, Issuer, free_port, http_get, start_jwtgate, wait_for

METRIC = re.compile(r"\b(jwtgate_[a-zA-Z0-9_]+)\b")
FAILURES = []


def check(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        FAILURES.append(what)


def dashboard_queries(dashboard):
    """(panel title, expr) of every query, and the variable queries' texts."""
    queries, variables = [], []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    queries.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            variables.append(q)
    return queries, variables


def grafana_to_promql(expr, rate_interval):
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    expr = expr.replace("$__range", "5m")
    # Every dashboard variable (namespace, job, route, upstream, issuer) at its "All" value.
    return re.sub(r"\$\{?[a-z]+\}?", ".*", expr)


def exported_families(text):
    """name -> type, from the # TYPE lines; plus the sample names seen with at least one series."""
    families, with_series = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            families[name] = kind
        elif line and not line.startswith("#"):
            with_series.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return families, with_series


def known(name, families):
    if name in families:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and families.get(base) == "histogram":
            return True
    return False


def has_series(name, families, with_series):
    if families.get(name) == "histogram":
        return f"{name}_count" in with_series
    return name in with_series


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--promtool")
    ap.add_argument("--prometheus")
    args = ap.parse_args()

    with open(args.dashboard) as f:
        dashboard = json.load(f)
    with open(args.rules) as f:
        rules = yaml.safe_load(f)
    queries, variables = dashboard_queries(dashboard)
    rule_exprs = [(r.get("alert") or r.get("record"), str(r["expr"]))
                  for g in rules["groups"] for r in g["rules"]]

    tmp = tempfile.mkdtemp(prefix="jwtgate-metrics-")
    issuer, app = Issuer(), App()
    port, admin = free_port(), free_port()
    config = os.path.join(tmp, "jwtgate.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
drain_timeout = "5s"

[upstream]
url = "http://127.0.0.1:{app.port}"

[[issuers]]
name = "local"
issuer = "{issuer.issuer}"
audiences = ["{issuer.client_id}"]
token_use = "access"
min_refetch_interval = "30s"

[login]
issuer = "{issuer.issuer}"
client_id = "{issuer.client_id}"
secure_cookies = false

[[routes]]
name = "public"
path = "/public/**"
auth = "none"

[[routes]]
name = "app"
path = "/app/**"
auth = "login"

[[routes]]
name = "api"
path = "/api/**"
scopes_any = ["example-api/read"]

[[aws_credentials]]
name = "self"
source = "gateway"

[[routes]]
name = "files"
path = "/files/**"
auth = "none"
aws_sigv4 = {{ service = "s3", region = "us-east-1", credentials = "self" }}
""")
    # jwtgate's own AWS credentials (the files route signs with them).
    env = dict(os.environ, RUST_LOG="warn", AWS_ACCESS_KEY_ID="AKIDLIVEMETRICS",
               AWS_SECRET_ACCESS_KEY="live-metrics-secret", AWS_EC2_METADATA_DISABLED="true")
    proc = start_jwtgate(args.binary, ["run", "--config", config], env, os.path.join(tmp, "jwtgate.log"))
    prom = None
    try:
        if not wait_for(f"http://127.0.0.1:{admin}/readyz", 200, timeout=30):
            sys.stdout.write(open(os.path.join(tmp, "jwtgate.log")).read())
            sys.exit("jwtgate did not become ready")
        base = f"http://127.0.0.1:{port}"
        good = issuer.token()

        def traffic():
            http_get(f"{base}/public/a")
            for _ in range(3):
                http_get(f"{base}/api/a", {"Authorization": f"Bearer {good}"})   # 200, cache hits
            http_get(f"{base}/api/a")                                           # 401 missing_token
            http_get(f"{base}/api/a", {"Authorization": "Bearer not.a.jwt"})    # 401 malformed
            http_get(f"{base}/api/a", {"Authorization": f"Bearer {issuer.token(scope='other')}"})  # 403
            http_get(f"{base}/nowhere")                                         # 404 _unmatched
            http_get(f"{base}/app/", {"Accept": "text/html"})                   # 302: login redirect
            http_get(f"{base}/files/a")                                         # signed for S3

        print("== live /metrics of the binary")
        traffic()
        # An unknown kid: one refetch, then the next one is suppressed.
        header, payload, sig = good.split(".")
        other = json.dumps({"alg": "RS256", "typ": "JWT", "kid": "rotated-away"}).encode()
        import base64
        forged = base64.urlsafe_b64encode(other).rstrip(b"=").decode() + "." + payload + "." + sig
        for _ in range(2):
            http_get(f"{base}/api/a", {"Authorization": f"Bearer {forged}"})
        # Labelled families with no series yet print no # TYPE line either: make a reload happen.
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        status, text = http_get(f"http://127.0.0.1:{admin}/metrics")
        check(status == 200, "GET /metrics answers 200")
        families, with_series = exported_families(text)
        check(len(families) >= 10, f"/metrics has {len(families)} jwtgate families")
        print(f"     exported: {', '.join(sorted(families))}")
        if args.promtool:
            r = subprocess.run([args.promtool, "check", "metrics"], input=text, text=True,
                               capture_output=True)
            lint = (r.stdout + r.stderr).strip()
            check(r.returncode == 0, "promtool check metrics accepts /metrics" + (f": {lint}" if lint else ""))

        print("== metric names in the dashboard and the rules")
        referenced = {}
        for title, expr in queries:
            for m in METRIC.findall(expr):
                referenced.setdefault(m, set()).add(f"dashboard panel '{title}'")
        for q in variables:
            for m in METRIC.findall(q):
                referenced.setdefault(m, set()).add("dashboard variable")
        for name, expr in rule_exprs:
            for m in METRIC.findall(expr):
                referenced.setdefault(m, set()).add(f"rule {name}")
        for m in sorted(referenced):
            check(known(m, families), f"{m} is exported (used by {len(referenced[m])} queries)")
        unused = sorted(f for f in families if not any(
            r == f or r.startswith(f + "_") for r in referenced))
        print(f"     exported but not on the dashboard or in the rules: {', '.join(unused) or 'none'}")
        check(len(queries) >= 15, f"the dashboard has {len(queries)} queries")

        if args.prometheus:
            print("== the dashboard's queries and the rules in a real Prometheus")
            prom_port = free_port()
            prom_dir = os.path.join(tmp, "prometheus")
            os.makedirs(prom_dir)
            with open(os.path.join(prom_dir, "prometheus.yml"), "w") as f:
                yaml.safe_dump({
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [os.path.abspath(args.rules)],
                    "scrape_configs": [{"job_name": "jwtgate", "static_configs": [
                        {"targets": [f"127.0.0.1:{admin}"]}]}],
                }, f)
            prom = subprocess.Popen(
                [args.prometheus, f"--config.file={prom_dir}/prometheus.yml",
                 f"--storage.tsdb.path={prom_dir}/data", f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=open(os.path.join(tmp, "prometheus.log"), "wb"), stderr=subprocess.STDOUT)
            papi = f"http://127.0.0.1:{prom_port}/api/v1"
            check(wait_for(f"http://127.0.0.1:{prom_port}/-/ready", 200, timeout=60), "Prometheus is ready")
            # Traffic while Prometheus scrapes, so that rates have points.
            deadline = time.time() + 12
            while time.time() < deadline:
                traffic()
                time.sleep(0.5)
            status, body = http_get(f"{papi}/targets")
            ups = [t["health"] for t in json.loads(body)["data"]["activeTargets"]] if status == 200 else []
            check(ups == ["up"], f"Prometheus scrapes jwtgate ({ups})")
            status, body = http_get(f"{papi}/rules")
            groups = json.loads(body)["data"]["groups"] if status == 200 else []
            loaded = [(r["name"], r["health"]) for g in groups for r in g["rules"]]
            check(len(loaded) == len(rule_exprs) and all(h == "ok" for _, h in loaded),
                  f"Prometheus loaded the {len(loaded)} rules, all healthy")
            firing = [r["name"] for g in groups for r in g["rules"] if r.get("state") == "firing"]
            check(not firing, f"no alert fires for a healthy jwtgate ({firing or 'none'})")
            for title, expr in queries:
                promql = grafana_to_promql(expr, "15s")
                status, body = http_get(f"{papi}/query?" + urllib.parse.urlencode({"query": promql}))
                data = json.loads(body) if body.startswith("{") else {}
                ok = status == 200 and data.get("status") == "success"
                results = data.get("data", {}).get("result", []) if ok else []
                needs = all(has_series(m, families, with_series) for m in METRIC.findall(expr)
                            if not m.endswith(("_bucket", "_sum", "_count")))
                if ok and needs:
                    check(bool(results), f"'{title}': {len(results)} series")
                else:
                    check(ok, f"'{title}': {'no series yet (no such events)' if ok else body[:200]}")
    finally:
        for p in (prom, proc):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        issuer.close()
        app.close()
    if FAILURES:
        print(f"live metrics: {len(FAILURES)} check(s) failed")
        sys.exit(1)
    print("live metrics: all checks passed")


if __name__ == "__main__":
    main()
