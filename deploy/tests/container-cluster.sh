#!/usr/bin/env bash
# The container cluster test: builds the turbochat image (deploy/image) and
# PostgreSQL and Redis images from this machine's packages, then runs
# turbochat-container-test (cluster-tests/src/bin): PostgreSQL, Redis, 3
# nodes and 2 routers as containers on a podman network it creates (fixed
# subnet and addresses; traffic only to its own containers), clients
# chatting through a router port published on 127.0.0.1, a rolling restart
# of every node as a StatefulSet rollout does it, and a `podman kill` of one
# node; 0 lost, the longest ack pause per step printed.
#
# Podman runs with a configuration of its own (this folder's
# containers.conf: runc, nofile 20000; storage and network definitions
# under $CACHE), so it neither uses nor changes the machine's. On exit, also
# on failure or Ctrl-C, every container, network and image of the run is
# removed, and the host's packet filter rules and ip_forward are put back as
# they were.
#
# Needs root, podman, buildah, runc (Debian's packages), PostgreSQL and Redis
# installed (their binaries go into the test images), cargo.
#   TURBOCHAT_TEST_SUBNET   the test network's /24 (default 10.213.57)
#   TURBOCHAT_TEST_KEEP=1   leave containers, network and images in place
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$repo/deploy/image/rootfs.sh"
. "$here/images.sh"

log() { echo "== deploy/tests/container-cluster: $*"; }
started=$(date +%s)

[ "$(id -u)" = 0 ] || { log "needs root (rootful podman: a bridge network with fixed addresses)"; exit 1; }
if ! command -v podman >/dev/null || ! command -v buildah >/dev/null || ! command -v runc >/dev/null; then
  log "installing podman, buildah, runc"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc >/dev/null
fi

CACHE=/var/tmp/turbochat-deploy-cache
SUBNET="${TURBOCHAT_TEST_SUBNET:-10.213.57}"
RUN_ID="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
KEEP="${TURBOCHAT_TEST_KEEP:-}"
mkdir -p "$CACHE/containers/networks"
WORK="$(mktemp -d /var/tmp/turbochat-container-test.XXXXXX)"

export CONTAINERS_CONF="$WORK/containers.conf"
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
sed "s|@NETWORKS@|$CACHE/containers/networks|" "$here/containers.conf" >"$CONTAINERS_CONF"
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/containers/storage"
runroot = "/run/turbochat-test-containers"
EOF

IMAGE="localhost/turbochat-test:$RUN_ID"
POSTGRES_IMAGE="localhost/turbochat-test-postgres:$RUN_ID"
REDIS_IMAGE="localhost/turbochat-test-redis:$RUN_ID"
LABEL="io.turbochat.test-run=$RUN_ID"

# Leftovers of an earlier run that was killed outright (no trap ran). This
# store is the test's own, so whatever carries the label is a test's; runs
# are not meant to overlap on one machine (they share the subnet).
stale="$(podman ps --all --quiet --filter label=io.turbochat.test-run | wc -l)"
if [ "$stale" != 0 ]; then
  log "removing $stale containers left by an earlier run"
  podman ps --all --quiet --filter label=io.turbochat.test-run | xargs -r podman rm --force --time 0 >/dev/null
fi
podman network ls --quiet --filter label=io.turbochat.test-run | xargs -r podman network rm --force >/dev/null
podman images --quiet --filter 'reference=localhost/turbochat-test*' | xargs -r podman rmi --force >/dev/null
find /var/tmp -maxdepth 1 \( -name 'turbochat-container-test.*' -o -name 'turbochat-image.*' \) \
  -mmin +60 ! -path "$WORK" -exec rm -rf {} +

# What the run may change on the host: netavark's packet filter chains and
# ip_forward.
forward_before="$(sysctl -n net.ipv4.ip_forward)"

# Whether a podman network (anyone's) has rules in netavark's chains; what
# is left when none has is netavark's generic skeleton, which does nothing
# and which netavark makes again when it needs it.
netavark_in_use() {
  local cmd
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    if "$cmd-save" 2>/dev/null | grep -E '^-A NETAVARK' |
      grep -Evq '^-A NETAVARK-HOSTPORT-(MASQ|SETMARK) '; then
      return 0
    fi
  done
  return 1
}

# Removes netavark's chains, unless a network uses them.
remove_netavark_chains() {
  if netavark_in_use; then
    log "another podman network uses the packet filter; leaving netavark's chains"
    return 0
  fi
  local cmd table line chain
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    for table in filter nat; do
      { "$cmd-save" -t "$table" 2>/dev/null | grep '^-A' | grep NETAVARK || true; } |
        while read -r line; do eval "$cmd -t $table -D ${line#-A }" || true; done
      for chain in $("$cmd-save" -t "$table" 2>/dev/null | sed -n 's/^:\(NETAVARK[^ ]*\) .*/\1/p'); do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
        "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# Someone else's network up now: leave the packet filter alone at the end.
# Otherwise start from no netavark chains (a killed run may have left its
# skeleton) and remove the ones this run makes.
if netavark_in_use; then
  filter_ours=
else
  remove_netavark_chains
  filter_ours=1
fi

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$KEEP" ]; then
    log "keeping run $RUN_ID (label $LABEL; CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF)"
    exit "$status"
  fi
  podman ps --all --quiet --filter "label=$LABEL" | xargs -r podman rm --force --time 0 >/dev/null 2>&1 || true
  podman network ls --quiet --filter "label=$LABEL" | xargs -r podman network rm --force >/dev/null 2>&1 || true
  podman rmi --force "$IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE" >/dev/null 2>&1 || true
  # Build leftovers (dangling layers of this run's image build).
  podman image prune --force >/dev/null 2>&1 || true
  [ -z "$filter_ours" ] || remove_netavark_chains
  if [ "$(sysctl -n net.ipv4.ip_forward)" != "$forward_before" ]; then
    sysctl -q -w "net.ipv4.ip_forward=$forward_before"
  fi
  local left
  left="$(podman ps --all --quiet --filter "label=$LABEL" 2>/dev/null | wc -l)"
  [ "$left" = 0 ] || log "WARNING: $left containers of run $RUN_ID are left"
  rm -rf "$WORK"
  log "cleaned up run $RUN_ID; took $(( $(date +%s) - started )) s in all"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "run $RUN_ID: building the turbochat image"
t=$(date +%s)
"$repo/deploy/image/build.sh" --tag "$IMAGE"
log "image built in $(( $(date +%s) - t )) s"

t=$(date +%s)
build_test_images "$RUN_ID"
log "PostgreSQL and Redis images ready in $(( $(date +%s) - t )) s"

log "building turbochat-container-test"
(cd "$repo" && cargo build --locked --quiet -p turbochat-cluster-tests --bin turbochat-container-test)
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac

t=$(date +%s)
"$target_dir/debug/turbochat-container-test" \
  --image "$IMAGE" --postgres-image "$POSTGRES_IMAGE" --redis-image "$REDIS_IMAGE" \
  --run-id "$RUN_ID" --subnet "$SUBNET" --config "$repo/configs/production.toml" \
  ${KEEP:+--keep}
log "scenario took $(( $(date +%s) - t )) s"
