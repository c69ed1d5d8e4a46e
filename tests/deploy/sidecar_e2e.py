#!/usr/bin/env python3
"""The sidecar example, end to end, without Docker or a cluster.

Reads the rendered manifests (`kubectl kustomize deploy/kubernetes/sidecar`) and runs the
jwtgate binary the way the kubelet would run that container: the same args and environment,
the ConfigMap and Secret files at their mount paths (under a temporary directory that stands in
for the container's root), the app on localhost. Only what cannot exist here is swapped, and
each swap is printed: the Cognito user pool becomes a local issuer, the ports become free ports
on 127.0.0.1, and the Secret's placeholders become freshly generated keys.

Then: probes polled at the manifest's periodSeconds, a loop of clients, and a termination as
the kubelet does it (preStop sleep while traffic continues, then SIGTERM with requests in
flight). Passes when every request jwtgate accepted was answered 200, jwtgate exited 0 within
the grace period, and the probes behaved. Requests refused after the listener closed are
counted separately: a client meeting a closed port is expected once the pod terminates.

  sidecar_e2e.py --binary target/release/jwtgate --manifests rendered.yaml
"""

import argparse
import http.client
import itertools
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from urllib.parse import urlsplit, urlunsplit

import tomli_w
import yaml

from fixtures import App, Issuer, cookie_key, free_port, http_get, p256_pem, start_jwtgate


def find(docs, kind, name=None, required=True):
    for d in docs:
        if d and d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
            return d
    if required:
        sys.exit(f"no {kind} {name or ''} in the manifests")
    return None


def generated_secret(key):
    if key.endswith(".pem"):
        return p256_pem()
    if "cookie" in key:
        return cookie_key()
    return secrets.token_urlsafe(24)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--manifests", required=True)
    ap.add_argument("--container", default="jwtgate")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--traffic-seconds", type=float, default=6.0)
    ap.add_argument("--check-only", action="store_true",
                    help="materialise the files and env, run `jwtgate check` on the config and stop "
                         "(Secrets not in the manifests, e.g. a chart's existingSecret, are generated)")
    args = ap.parse_args()

    with open(args.manifests) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deployment = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == args.container)
    others = [c for c in pod["containers"] if c["name"] != args.container]
    root = tempfile.mkdtemp(prefix="jwtgate-sidecar-")
    print(f"== {deployment['metadata']['name']}: container {args.container}, root {root}")

    # Secrets: every key the pod reads, with a generated value in place of the placeholder.
    secret_values = {}

    def secret_value(name, key):
        if (name, key) not in secret_values:
            # The Secret must be in the manifests, unless it is an existing one (a chart's).
            known = find(docs, "Secret", name, required=not args.check_only)
            secret_values[(name, key)] = generated_secret(key)
            what = "placeholder" if known else "existing Secret"
            print(f"   swap: Secret {name} key {key}: {what} -> generated value")
        return secret_values[(name, key)]

    # Volumes -> files under root.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = []
    for m in container.get("volumeMounts", []):
        target = root + m["mountPath"]
        mounts.append((m["mountPath"], target))
        vol = volumes[m["name"]]
        sources = vol["projected"]["sources"] if "projected" in vol else [vol]
        for src in sources:
            if "configMap" in src:
                cm = find(docs, "ConfigMap", src["configMap"]["name"])
                items = src["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]
                for it in items:
                    write(os.path.join(target, it["path"]), cm["data"][it["key"]])
            elif "secret" in src:
                name = src["secret"].get("name") or src["secret"]["secretName"]
                sec = find(docs, "Secret", name, required=not args.check_only) or {}
                keys = list((sec.get("stringData") or {}) | (sec.get("data") or {}))
                items = src["secret"].get("items") or [{"key": k, "path": k} for k in keys]
                for it in items:
                    write(os.path.join(target, it["path"]), secret_value(name, it["key"]))
            else:
                sys.exit(f"volume {m['name']}: unsupported source {list(src)}")

    def remap(value):
        for mount, target in mounts:
            if isinstance(value, str) and (value == mount or value.startswith(mount + "/")):
                return target + value[len(mount):]
        return value

    def remap_all(node):
        if isinstance(node, dict):
            return {k: remap_all(v) for k, v in node.items()}
        if isinstance(node, list):
            return [remap_all(v) for v in node]
        return remap(node)

    # Environment as the container gets it.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secret_value(ref["name"], ref["key"])
    argv = [remap(a) for a in container.get("args", [])]
    config_path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")),
                       remap(env.get("JWTGATE_CONFIG", "")))

    if args.check_only:
        # The file as rendered, only its mount paths pointed into root.
        with open(config_path) as f:
            text = f.read()
        for mount, target in mounts:
            text = text.replace(f'"{mount}/', f'"{target}/')
        with open(config_path, "w") as f:
            f.write(text)
        r = subprocess.run([args.binary, "check", "--config", config_path], env=env,
                           capture_output=True, text=True)
        sys.stdout.write(r.stdout[-1500:] + r.stderr[-3000:])
        if r.returncode != 0:
            sys.exit(f"jwtgate check refused the config of {deployment['metadata']['name']}")
        return

    # The config: swap what cannot exist here.
    with open(config_path, "rb") as f:
        config = tomllib.load(f)
    issuer = Issuer()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    local = {}
    for name, listen_key in (("http", "listen"), ("admin", "admin_listen")):
        old = config["server"][listen_key]
        local[name] = free_port()
        if int(old.rsplit(":", 1)[1]) != ports[name]:
            sys.exit(f"[server].{listen_key} {old} is not the containerPort {name} {ports[name]}")
        config["server"][listen_key] = f"127.0.0.1:{local[name]}"
        print(f"   swap: [server].{listen_key} {old} -> {config['server'][listen_key]}")
    # Every upstream ([upstream] and each [[upstreams]]) must be a container of this pod.
    upstreams = ([("upstream", config["upstream"])] if "upstream" in config else []) + [
        (f"upstreams {u.get('name')}", u) for u in config.get("upstreams", [])]
    app_listen = [a for c in others for a in c.get("args", []) if re.search(r"127\.0\.0\.1:\d+", a)]
    app = App(delay=0.2)
    for label, table in upstreams:
        up = urlsplit(table["url"])
        if up.hostname not in ("127.0.0.1", "localhost"):
            sys.exit(f"[{label}].url {up.geturl()} is not on localhost: not a sidecar")
        if not any(f"127.0.0.1:{up.port}" in a for a in app_listen):
            sys.exit(f"no app container listens on 127.0.0.1:{up.port} ({app_listen})")
        table["url"] = urlunsplit(up._replace(netloc=f"127.0.0.1:{app.port}"))
        print(f"   swap: [{label}] app on 127.0.0.1:{up.port} -> 127.0.0.1:{app.port} (a local HTTP server)")
    for iss in config.get("issuers", []):
        for k in ("user_pool_id", "region", "issuer", "jwks_uri", "discovery_url"):
            iss.pop(k, None)
        iss["issuer"] = issuer.issuer
        iss["audiences"] = [issuer.client_id]
        print(f"   swap: issuer {iss.get('name')} -> {issuer.issuer}")
    logins = ([("login", config["login"])] if "login" in config else []) + [
        (f"logins {l.get('name')}", l) for l in config.get("logins", [])]
    for label, login in logins:
        for k in ("user_pool_id", "region", "domain", "issuer", "authorization_endpoint",
                  "token_endpoint", "user_info_endpoint", "end_session_endpoint", "jwks_uri"):
            login.pop(k, None)
        login["issuer"] = issuer.issuer
        login["client_id"] = issuer.client_id
        print(f"   swap: [{label}] provider -> {issuer.issuer}")

    config = remap_all(config)
    with open(config_path, "wb") as f:
        tomli_w.dump(config, f)

    # Start, as the kubelet would.
    log_path = os.path.join(root, "jwtgate.log")
    print(f"== start: jwtgate {' '.join(container.get('args', []))}")
    proc = start_jwtgate(args.binary, argv, env, log_path)
    started = time.time()
    failures = []
    probes = {}
    stop_probes = threading.Event()

    def probe_loop(kind, spec):
        get = spec["httpGet"]
        port = local[get["port"]] if isinstance(get["port"], str) else {
            ports["http"]: local["http"], ports["admin"]: local["admin"]}[get["port"]]
        url = f"http://127.0.0.1:{port}{get['path']}"
        period, timeout = spec.get("periodSeconds", 10), spec.get("timeoutSeconds", 1)
        time.sleep(spec.get("initialDelaySeconds", 0))
        while not stop_probes.is_set():
            status, _ = http_get(url, timeout=timeout)
            probes.setdefault(kind, []).append((time.time() - started, status))
            stop_probes.wait(period)

    threads = []
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if kind in container:
            t = threading.Thread(target=probe_loop, args=(kind, container[kind]), daemon=True)
            t.start()
            threads.append(t)

    ready_spec = container["readinessProbe"]
    deadline = started + ready_spec.get("periodSeconds", 10) * 6
    while time.time() < deadline and not any(s == 200 for _, s in probes.get("readinessProbe", [])):
        time.sleep(0.1)
    ready = [t for t, s in probes.get("readinessProbe", []) if s == 200]
    if not ready:
        stop_probes.set()
        proc.kill()
        sys.stdout.write(open(log_path).read()[-4000:])
        sys.exit("readinessProbe never succeeded")
    print(f"   ready after {ready[0]:.1f}s (readinessProbe, periodSeconds "
          f"{ready_spec.get('periodSeconds', 10)})")

    # Traffic.
    token = issuer.token()
    base_port = local["http"]
    results = []  # (request id, outcome, detail)
    lock = threading.Lock()
    stop_clients = threading.Event()
    ids = itertools.count()

    def one(path, auth):
        rid = f"e2e-{next(ids)}"
        headers = {"x-request-id": rid, "Connection": "close"}
        if auth:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", base_port, timeout=30)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                return rid, "refused", "connection refused"
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            r.read()
            return rid, "ok" if r.status == 200 else "bad_status", str(r.status)
        except (OSError, http.client.HTTPException) as e:
            return rid, "error", f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def client(n):
        for i in itertools.count():
            if stop_clients.is_set():
                return
            path, auth = ("/public/ping", False) if i % 4 == 3 else (f"/api/items/{n}", True)
            out = one(path, auth)
            with lock:
                results.append(out)
            if out[1] == "refused":
                time.sleep(0.05)

    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(args.clients)]
    for t in clients:
        t.start()
    time.sleep(args.traffic_seconds)

    # Termination: preStop (traffic keeps coming), then SIGTERM with requests in flight, among
    # them slow ones (the app takes 3 s) that must still complete.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    print(f"== terminate: preStop sleep {pre_stop}s, then SIGTERM (grace {grace}s)")
    time.sleep(pre_stop)
    app.delay_for = {"/api/slow": 3.0}
    slow = []

    def slow_request(n):
        conn = http.client.HTTPConnection("127.0.0.1", base_port, timeout=30)
        try:
            conn.request("GET", f"/api/slow?{n}", headers={"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            r.read()
            slow.append(r.status)
        except (OSError, http.client.HTTPException) as e:
            slow.append(f"{type(e).__name__}: {e}")

    slow_threads = [threading.Thread(target=slow_request, args=(n,)) for n in range(4)]
    for t in slow_threads:
        t.start()
    time.sleep(0.5)
    in_flight_at_term = len(slow_threads)
    term_at = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=grace - pre_stop)
    except Exception:
        proc.kill()
        code = "killed after the grace period"
    exited_after = time.time() - term_at
    time.sleep(0.5)
    stop_clients.set()
    stop_probes.set()
    for t in clients + slow_threads:
        t.join(timeout=35)

    # Reconcile: a request that errored is a failure if jwtgate accepted it, i.e. it reached the
    # app or jwtgate logged it; otherwise it never got past the kernel's backlog.
    log = open(log_path, encoding="utf-8", errors="replace").read()
    counts = {"ok": 0, "refused": 0, "backlog_reset": 0}
    for rid, outcome, detail in results:
        if outcome in ("ok", "refused"):
            counts[outcome] += 1
        elif outcome == "error" and rid not in app.seen and f"{rid}\\\"" not in log and f'"{rid}"' not in log:
            counts["backlog_reset"] += 1
        else:
            failures.append(f"request {rid} was accepted and then failed: {detail}")
    print(f"   requests: {len(results)} sent, {counts['ok']} answered 200, "
          f"{counts['refused']} refused after the listener closed, "
          f"{counts['backlog_reset']} reset before jwtgate accepted them")
    print(f"   slow requests in flight at SIGTERM: {in_flight_at_term}, answers: {slow}")
    print(f"   jwtgate exited with {code} {exited_after:.1f}s after SIGTERM")
    if any(s != 200 for s in slow):
        failures.append(f"requests in flight at SIGTERM did not all complete: {slow}")
    if code != 0:
        failures.append(f"exit code {code}, expected 0")
    if counts["ok"] < 20:
        failures.append(f"only {counts['ok']} requests answered 200")
    # The kubelet restarts a container after failureThreshold consecutive liveness failures.
    live = [(t, s) for t, s in probes.get("livenessProbe", []) if t < term_at - started]
    threshold = container["livenessProbe"].get("failureThreshold", 3)
    run = worst = 0
    for _, s in live:
        run = run + 1 if s != 200 else 0
        worst = max(worst, run)
    print(f"   livenessProbe: {len(live)} polls before SIGTERM, "
          f"{sum(1 for _, s in live if s != 200)} failed, at most {worst} in a row "
          f"(failureThreshold {threshold})")
    if not any(s == 200 for _, s in live) or worst >= threshold:
        failures.append(f"the kubelet would have restarted jwtgate: {live}")
    rd = [(t, s) for t, s in probes.get("readinessProbe", []) if ready[0] <= t < term_at - started]
    if any(s != 200 for _, s in rd):
        failures.append(f"readinessProbe failed while serving: {rd}")
    issuer.close()
    app.close()
    if failures:
        for f in failures[:20]:
            print(f"FAIL {f}")
        sys.stdout.write(log[-3000:])
        sys.exit(1)
    print("sidecar e2e: ok")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
