#!/usr/bin/env bash
# Validates everything under deploy/: the Dockerfile (hadolint, and the same release build it
# runs, outside Docker), the sidecar manifests (kustomize + Kubernetes schemas + policy), the
# Helm chart (real Helm engine: lint and render with default and example values, then the
# same checks), `jwtgate check` on every config the manifests carry, the alert rules
# (promtool check + unit tests), the dashboard and rules against a live jwtgate and a real
# Prometheus, and the sidecar end to end with SIGTERM under traffic.
#
# Installs what it needs (Debian 12): a venv under target/ (PyPI), the helm-sdkpy wheel's Helm
# library under target/, and Debian's `prometheus` package (promtool). Needs kubectl (for
# `kubectl kustomize`), python3-venv and cargo.
set -euo pipefail
cd "$(dirname "$0")/../.."
PWD_REPO=$(pwd)

tools=target/deploy-tools
venv=$tools/venv
helm_lib=$tools/helm-sdkpy/helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so
k8s_versions=(1.30.0 1.37.0)   # oldest with the preStop sleep action on by default, newest known
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export TMPDIR=$out   # the Python steps' temp dirs (configs, logs, Prometheus data) go here too
steps=0
step() { steps=$((steps + 1)); echo "== $*"; }

step "tools"
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/deploy/requirements.txt "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/deploy/requirements.txt
  cp tests/deploy/requirements.txt "$venv/requirements.txt"
fi
py=$venv/bin/python
if [ ! -f "$helm_lib" ]; then
  # Helm v4's Go library as a shared object. The wheel asks for Python >= 3.12 for its cffi
  # wrapper, which is not used: helm_render.py loads the library with ctypes.
  "$venv/bin/pip" install -q --disable-pip-version-check --target "$tools/helm-sdkpy" \
    --python-version 3.12 --only-binary=:all: --no-deps --ignore-requires-python helm-sdkpy==0.1.32
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v kubectl >/dev/null || { echo "kubectl is required (kubectl kustomize)" >&2; exit 1; }
echo "hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}'), kubernetes-validate $("$venv/bin/kubernetes-validate" --version | awk '{print $NF}'), $(promtool --version 2>&1 | head -1 | awk '{print $1, $3}'), helm library $(strings "$helm_lib" 2>/dev/null | grep -m1 -o '^helm-sdkpy-v[0-9.]*' || echo helm-sdkpy-0.1.32), $(kubectl version --client 2>/dev/null | grep -i kustomize)"

step "Dockerfile: hadolint"
"$venv/bin/hadolint" --failure-threshold info deploy/Dockerfile
grep -q 'cargo build --release --locked' deploy/Dockerfile
final=$(grep -E '^FROM ' deploy/Dockerfile | tail -1)
[[ $final == *"distroless/cc-debian12:nonroot"* ]] || { echo "final stage is not distroless cc nonroot: $final" >&2; exit 1; }
grep -qE '^USER 65532:65532$' deploy/Dockerfile
grep -qE '^EXPOSE 8080 9901$' deploy/Dockerfile
grep -q 'JWTGATE_CONFIG=/etc/jwtgate/jwtgate.toml' deploy/Dockerfile
for src in $(awk '/^COPY / && !/--from/ {for (i = 2; i < NF; i++) print $i}' deploy/Dockerfile); do
  [ -e "$src" ] || { echo "Dockerfile copies $src, which does not exist" >&2; exit 1; }
  grep -qxF "!${src%/}/" deploy/Dockerfile.dockerignore || grep -qxF "!${src%/}" deploy/Dockerfile.dockerignore \
    || { echo "Dockerfile.dockerignore excludes $src" >&2; exit 1; }
done
echo "hadolint clean; multi-stage, --locked release build, distroless cc nonroot, USER 65532, ports 8080 9901"

step "the image's binary, built as the Dockerfile builds it: cargo build --release --locked"
# From a copy of exactly what the Dockerfile copies into the build stage (proving the context
# is complete), into the repository's target/ so that dependencies are reused.
mkdir -p "$out/context"
for src in $(awk '/^COPY / && !/--from/ {for (i = 2; i < NF; i++) print $i}' deploy/Dockerfile); do
  cp -r --parents "$src" "$out/context/"   # keeps examples/policies at its path
done
(cd "$out/context" && CARGO_TARGET_DIR="$PWD_REPO/target" cargo build --release --locked --bin jwtgate)
bin=target/release/jwtgate
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
for lib in $needed; do
  case $lib in libc.so.6 | libm.so.6 | libgcc_s.so.1 | ld-linux-x86-64.so.2 | ld-linux-aarch64.so.1) ;;
    *) echo "$bin needs $lib, which distroless/cc does not have" >&2; exit 1 ;;
  esac
done
echo "$bin $("$bin" --version | awk '{print $2}'): links only $needed(all in distroless/cc)"

step "sidecar: kubectl kustomize, Kubernetes schemas, policy, jwtgate check"
kubectl kustomize deploy/kubernetes/sidecar >"$out/sidecar.yaml"
for v in "${k8s_versions[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$out/sidecar.yaml"
done
echo "  schemas ok: Kubernetes ${k8s_versions[*]} (strict)"
"$py" tests/deploy/policy.py "$out/sidecar.yaml"
"$py" tests/deploy/sidecar_e2e.py --check-only --binary "$bin" --manifests "$out/sidecar.yaml" | tail -1

step "Helm chart: helm lint"
chart=deploy/helm/jwtgate
"$py" tests/deploy/helm_render.py "$helm_lib" "$chart" --lint
cmp "$chart/files/jwtgate-rules.yaml" deploy/prometheus/jwtgate-rules.yaml \
  || { echo "$chart/files/jwtgate-rules.yaml differs from deploy/prometheus/jwtgate-rules.yaml" >&2; exit 1; }

for values in default "$chart"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  step "Helm chart rendered with $name values: schemas, policy, jwtgate check"
  args=()
  [ "$values" = default ] || args=(--values "$values")
  "$py" tests/deploy/helm_render.py "$helm_lib" "$chart" "${args[@]}" >"$out/chart-$name.yaml"
  for v in "${k8s_versions[@]}"; do
    # ServiceMonitor and PrometheusRule are CRDs without bundled schemas: policy.py checks
    # their references and promtool their rules.
    "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$out/chart-$name.yaml"
  done
  echo "  schemas ok: Kubernetes ${k8s_versions[*]} (strict), $(grep -c '^kind:' "$out/chart-$name.yaml") objects"
  rules_args=()
  grep -q '^kind: PrometheusRule' "$out/chart-$name.yaml" && rules_args=(--rules-out "$out/rule-$name.yaml")
  "$py" tests/deploy/policy.py "$out/chart-$name.yaml" "${rules_args[@]}"
  if [ ${#rules_args[@]} -gt 0 ]; then
    promtool check rules "$out/rule-$name.yaml" | sed 's/^/  /'
  fi
  "$py" tests/deploy/sidecar_e2e.py --check-only --binary "$bin" --manifests "$out/chart-$name.yaml" | tail -1
done

step "Helm chart: a config change changes checksum/config (the pods roll)"
printf 'config:\n  server:\n    drain_timeout: "21s"\n' >"$out/changed.yaml"
"$py" tests/deploy/helm_render.py "$helm_lib" "$chart" --values "$out/changed.yaml" >"$out/chart-changed.yaml"
a=$(grep 'checksum/config' "$out/chart-default.yaml")
b=$(grep 'checksum/config' "$out/chart-changed.yaml")
[ -n "$a" ] && [ "$a" != "$b" ] || { echo "checksum/config did not change" >&2; exit 1; }
echo "  ${a## } -> ${b##*: }"

step "Prometheus rules: promtool check rules, promtool test rules"
promtool check rules deploy/prometheus/jwtgate-rules.yaml
(cd deploy/prometheus && promtool test rules jwtgate-rules.test.yaml)

step "Grafana dashboard and rules against a live jwtgate and a real Prometheus"
"$py" tests/deploy/live_metrics.py --binary "$bin" --dashboard deploy/grafana/jwtgate-dashboard.json \
  --rules deploy/prometheus/jwtgate-rules.yaml --promtool "$(command -v promtool)" \
  --prometheus "$(command -v prometheus)"

step "sidecar end to end: probes, traffic, SIGTERM with requests in flight"
"$py" tests/deploy/sidecar_e2e.py --binary "$bin" --manifests "$out/sidecar.yaml"

echo "== deploy validation: all $steps steps passed"
