#!/usr/bin/env bash
# Builds the turbochat container image with no registry to pull from:
#   1. a release build of turbochat-node, turbochat-router and
#      turbochat-colocated (cargo);
#   2. a root filesystem with the three binaries, the shared libraries they
#      link (ldd), CA certificates and a non-root user (uid 10001);
#   3. `podman build` (or `buildah bud`) of deploy/image/Containerfile,
#      FROM scratch.
#
# Usage: deploy/image/build.sh [--tag NAME:TAG] [--bin-dir DIR] [--save FILE]
#   --tag      image name (default localhost/turbochat:dev)
#   --bin-dir  take the binaries from DIR instead of building them
#   --save     also write the image to FILE (OCI archive), e.g. to load it
#              into a registry or a cluster's nodes
# Prints the image size at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$here/rootfs.sh"

tag=localhost/turbochat:dev
bin_dir=
save=
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --save) save=$2; shift 2 ;;
    *) echo "usage: $0 [--tag NAME:TAG] [--bin-dir DIR] [--save FILE]" >&2; exit 2 ;;
  esac
done

log() { echo "== deploy/image/build.sh: $*" >&2; }

if [ -z "$bin_dir" ]; then
  log "cargo build --release (turbochat-node, turbochat-router, turbochat-colocated)"
  (cd "$repo" && cargo build --release --locked --bin turbochat-node --bin turbochat-router \
    --bin turbochat-colocated)
  bin_dir="${CARGO_TARGET_DIR:-$repo/target}/release"
  case "$bin_dir" in /*) ;; *) bin_dir="$repo/$bin_dir" ;; esac
fi
for b in turbochat-node turbochat-router turbochat-colocated; do
  [ -x "$bin_dir/$b" ] || { log "$bin_dir/$b is missing"; exit 1; }
done

stage="$(mktemp -d /var/tmp/turbochat-image.XXXXXX)"
trap 'rm -rf "$stage"' EXIT
root="$stage/rootfs"
for b in turbochat-node turbochat-router turbochat-colocated; do
  rootfs_add_bin "$root" "$bin_dir/$b" "/usr/local/bin/$b"
done
rootfs_users "$root" turbochat 10001 10001
# HTTPS to FCM, its token endpoint and S3.
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { log "$ca is missing (apt-get install ca-certificates)"; exit 1; }
rootfs_add "$root" "$ca"
mkdir -p "$root/tmp" "$root/etc/turbochat" "$stage/data"
chmod 1777 "$root/tmp"

if command -v podman >/dev/null 2>&1; then
  builder=(podman build)
elif command -v buildah >/dev/null 2>&1; then
  builder=(buildah bud)
else
  log "neither podman nor buildah is installed (apt-get install podman buildah)"
  exit 1
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
revision="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
log "${builder[*]} -t $tag"
"${builder[@]}" --quiet -t "$tag" -f "$here/Containerfile" \
  --label "org.opencontainers.image.title=turbochat" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  "$stage" >/dev/null

if [ -n "$save" ]; then
  log "saving to $save"
  rm -f "$save"
  podman save --format oci-archive -o "$save" "$tag"
fi
size="$(podman image inspect --format '{{.Size}}' "$tag")"
log "built $tag: $((size / 1024 / 1024)) MiB ($size bytes)"
