#!/usr/bin/env python3
"""What a schema cannot check: the rules deploy/README.md promises, on rendered manifests.

Every container: non-root, no privilege escalation, read-only root filesystem, all
capabilities dropped, seccomp RuntimeDefault, CPU and memory requests and a memory limit. The
jwtgate container: liveness /healthz and readiness /readyz on the admin port, listen and
admin_listen in its config on its containerPorts (admin on 0.0.0.0 for the kubelet), the
termination grace period longer than preStop + drain_timeout. Cross references: Services,
NetworkPolicies and probes name ports that exist, selectors (Service, PDB, NetworkPolicy,
ServiceMonitor, HPA target) match, an IRSA role annotation is a role ARN on the pods' account. PrometheusRule specs are written out for promtool.

  policy.py MANIFESTS.yaml [--rules-out FILE]
"""

import argparse
import re
import sys
import tomllib

import yaml

FAIL = []


def check(ok, what):
    if not ok:
        FAIL.append(what)


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifests")
    ap.add_argument("--rules-out")
    args = ap.parse_args()
    with open(args.manifests) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}

    pods = []  # (deployment name, pod labels, pod spec)
    for dep in by_kind.get("Deployment", []):
        name = dep["metadata"]["name"]
        tpl = dep["spec"]["template"]
        labels, spec = tpl["metadata"].get("labels", {}), tpl["spec"]
        pods.append((name, labels, spec))
        check(matches(dep["spec"]["selector"]["matchLabels"], labels), f"{name}: selector matches its pods")
        psc = spec.get("securityContext", {})
        check(spec.get("automountServiceAccountToken") is False, f"{name}: automountServiceAccountToken false")
        for c in spec["containers"]:
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            eff = lambda k: sc.get(k, psc.get(k))  # noqa: E731
            check(eff("runAsNonRoot") is True, f"{where}: runAsNonRoot")
            check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
            check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem true")
            check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities drop ALL")
            check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault")
            res = c.get("resources", {})
            check({"cpu", "memory"} <= set(res.get("requests", {})), f"{where}: cpu and memory requests")
            check("memory" in res.get("limits", {}), f"{where}: memory limit")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe"):
                get = c.get(kind, {}).get("httpGet") or c.get(kind, {}).get("tcpSocket")
                if get:
                    check(get["port"] in ports or get["port"] in ports.values(), f"{where}: {kind} port exists")
            if c["name"] != "jwtgate":
                continue
            check(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["livenessProbe"]["httpGet"]["port"] == "admin",
                  f"{where}: liveness /healthz on admin")
            check(c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["readinessProbe"]["httpGet"]["port"] == "admin",
                  f"{where}: readiness /readyz on admin")
            check(c.get("args", [])[:1] == ["run"], f"{where}: runs `jwtgate run`")
            # The config this container reads.
            mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/jwtgate")
            vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            srcs = vol["projected"]["sources"] if "projected" in vol else [vol]
            cm = next(s["configMap"] for s in srcs if "configMap" in s)
            text = configmaps[cm["name"]]["data"]["jwtgate.toml"]
            config = tomllib.loads(text)
            server = config["server"]
            check(server["listen"].endswith(f":{ports['http']}"), f"{where}: listen on containerPort http")
            check(server["admin_listen"] == f"0.0.0.0:{ports['admin']}", f"{where}: admin_listen 0.0.0.0 on containerPort admin")
            drain = duration_s(server.get("drain_timeout", "30s"))
            pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            grace = spec.get("terminationGracePeriodSeconds", 30)
            check(grace > pre + drain, f"{where}: terminationGracePeriodSeconds {grace} > preStop {pre} + drain_timeout {drain}")

    def pod_ports(labels_selector):
        for _, labels, spec in pods:
            if matches(labels_selector, labels):
                return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        return None

    services = by_kind.get("Service", [])
    for svc in services:
        ports = pod_ports(svc["spec"]["selector"])
        check(ports is not None, f"Service {svc['metadata']['name']}: selects a pod")
        for p in svc["spec"]["ports"]:
            check(ports is not None and (p["targetPort"] in ports or p["targetPort"] in ports.values()),
                  f"Service {svc['metadata']['name']}: targetPort {p['targetPort']} exists")
    for np in by_kind.get("NetworkPolicy", []):
        ports = pod_ports(np["spec"]["podSelector"]["matchLabels"])
        check(ports is not None, f"NetworkPolicy {np['metadata']['name']}: selects a pod")
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                check(ports is not None and (p["port"] in ports or p["port"] in ports.values()),
                      f"NetworkPolicy {np['metadata']['name']}: port {p['port']} exists")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        check(pod_ports(pdb["spec"]["selector"]["matchLabels"]) is not None, f"PDB {pdb['metadata']['name']}: selects a pod")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        dep = next((d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == ref["name"]), None)
        check(dep is not None and ref["kind"] == "Deployment", f"HPA {hpa['metadata']['name']}: targets a Deployment")
        check(dep is None or "replicas" not in dep["spec"], f"HPA {hpa['metadata']['name']}: the Deployment sets no replicas")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        svc = [s for s in services if matches(sel, s["metadata"].get("labels", {}))]
        check(len(svc) == 1, f"ServiceMonitor {sm['metadata']['name']}: selects exactly one Service ({len(svc)})")
        for ep in sm["spec"]["endpoints"]:
            check(bool(svc) and ep["port"] in [p["name"] for p in svc[0]["spec"]["ports"]],
                  f"ServiceMonitor {sm['metadata']['name']}: endpoint port {ep['port']} exists")
            check(ep.get("path") == "/metrics", f"ServiceMonitor {sm['metadata']['name']}: path /metrics")
    # IRSA: a role annotation is an IAM role ARN, on a ServiceAccount the pods run as (the
    # webhook mutates only pods of that account).
    used_accounts = {spec.get("serviceAccountName", "default") for _, _, spec in pods}
    for sa in by_kind.get("ServiceAccount", []):
        role = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        if role is None:
            continue
        name = sa["metadata"]["name"]
        check(re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", role) is not None,
              f"ServiceAccount {name}: eks.amazonaws.com/role-arn {role!r} is an IAM role ARN")
        check(name in used_accounts, f"ServiceAccount {name}: a pod runs as it")
    rules = by_kind.get("PrometheusRule", [])
    if args.rules_out:
        check(len(rules) == 1, "exactly one PrometheusRule")
        if rules:
            with open(args.rules_out, "w") as f:
                yaml.safe_dump(rules[0]["spec"], f, sort_keys=False)
    objects = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    if FAIL:
        for f in FAIL:
            print(f"  FAIL {f}")
        sys.exit(f"policy: {len(FAIL)} problem(s) in {args.manifests}")
    print(f"  policy ok: {objects}")


if __name__ == "__main__":
    main()
