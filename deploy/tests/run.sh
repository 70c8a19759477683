#!/usr/bin/env bash
# The deployment's tests; scripts/test runs this after `cargo test` (which
# also runs the dashboard's metrics test, cluster-tests/tests/dashboard.rs):
#   1. the Kubernetes manifests render and validate offline
#      (deploy/k8s/render.sh --check: kubernetes-validate --strict, warnings fail);
#   2. the container cluster test (deploy/tests/container-cluster.sh): the
#      image, PostgreSQL, Redis, 3 nodes and 2 routers as podman containers,
#      a rolling restart of every node and a killed node under traffic.
# Needs root, podman, buildah and runc (.ci/run installs them).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

log() { echo "== deploy/tests: $*"; }
passed=0

log "Kubernetes manifests"
"$root/deploy/k8s/render.sh" --check
passed=$((passed + 1))

log "container cluster"
"$root/deploy/tests/container-cluster.sh"
passed=$((passed + 1))

echo "deploy: $passed passed, 0 failed"
