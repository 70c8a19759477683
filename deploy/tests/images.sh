# PostgreSQL and Redis images for the container cluster test, made from this
# machine's own Debian packages (no registry): the server binary, the shared
# libraries it links and the files it reads, FROM scratch. PostgreSQL's data
# directory is initialised here at build time (initdb runs on the host as its
# `postgres` user), so the container starts straight into a server with a
# `turbochat` role and database, trusting connections from its network.
#
# The root filesystems are cached as tarballs under $CACHE (outside the
# clone), keyed by the server's version and this file; `podman import`
# turns them into images on every run (and the test removes them after).
# Sourced by container-cluster.sh, after deploy/image/rootfs.sh.

# postgres_rootfs DIR: stages PostgreSQL's root filesystem in DIR.
postgres_rootfs() {
  local root=$1 bin lib share version data
  bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  [ -x "$bin/postgres" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; return 1; }
  version="$(basename "$(dirname "$bin")")"
  lib="/usr/lib/postgresql/$version/lib"
  share="/usr/share/postgresql/$version"
  rootfs_add_bin "$root" "$bin/postgres"
  # Loadable modules (PL/pgSQL, encoding conversions); not the LLVM JIT,
  # which would bring 100 MB of LLVM (jit is off below).
  local so
  for so in "$lib"/*.so; do
    case "$so" in */llvmjit*) continue ;; esac
    rootfs_add "$root" "$so"
    rootfs_add_libs "$root" "$so"
  done
  mkdir -p "$root$share" "$root/usr/share/zoneinfo"
  cp -a "$share/." "$root$share/"
  cp -a /usr/share/zoneinfo/. "$root/usr/share/zoneinfo/"
  rootfs_users "$root" postgres "$(id -u postgres)" "$(id -g postgres)"
  mkdir -p "$root/tmp" "$root/var/run/postgresql"
  chmod 1777 "$root/tmp"
  chown postgres:postgres "$root/var/run/postgresql"

  data="$root/var/lib/postgresql/data"
  mkdir -p "$data"
  chmod 755 "$root" "$root/var" "$root/var/lib" "$root/var/lib/postgresql"
  chown postgres:postgres "$data"
  runuser -u postgres -- "$bin/initdb" --pgdata "$data" --username postgres \
    --auth trust --encoding UTF8 --locale C >/dev/null
  cat >>"$data/postgresql.conf" <<'EOF'
listen_addresses = '*'
unix_socket_directories = '/var/run/postgresql'
timezone = 'UTC'
log_timezone = 'UTC'
jit = off
max_connections = 200
EOF
  # Only the test's own network reaches this server.
  echo "host all all 0.0.0.0/0 trust" >>"$data/pg_hba.conf"
  printf 'CREATE ROLE turbochat LOGIN;\nCREATE DATABASE turbochat OWNER turbochat;\n' |
    runuser -u postgres -- "$bin/postgres" --single -D "$data" postgres >/dev/null
}

# redis_rootfs DIR: stages Redis's root filesystem in DIR.
redis_rootfs() {
  local root=$1
  [ -x /usr/bin/redis-server ] || { echo "Redis is not installed (apt-get install redis-server)" >&2; return 1; }
  rootfs_add_bin "$root" /usr/bin/redis-server
  rootfs_users "$root" redis "$(id -u redis)" "$(id -g redis)"
  mkdir -p "$root/tmp" "$root/data"
  chmod 1777 "$root/tmp"
  chown redis:redis "$root/data"
}

# cached_rootfs NAME KEY BUILDER: the tarball of NAME's root filesystem for
# KEY, built with BUILDER if not cached yet; prints its path.
cached_rootfs() {
  local name=$1 key=$2 builder=$3
  local tar="$CACHE/$name-$key.tar"
  if [ ! -s "$tar" ]; then
    local stage
    stage="$(mktemp -d "$CACHE/$name.XXXXXX")"
    chmod 755 "$stage"
    "$builder" "$stage/rootfs" >&2
    tar -C "$stage/rootfs" --numeric-owner -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$stage"
    # Older keys of the same image are of no use any more.
    find "$CACHE" -maxdepth 1 -name "$name-*.tar" ! -name "$(basename "$tar")" -delete
  fi
  echo "$tar"
}

# build_test_images TAG: imports localhost/turbochat-test-postgres:TAG and
# localhost/turbochat-test-redis:TAG.
build_test_images() {
  local tag=$1 self pg_version redis_version tar
  self="$(sha256sum "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/../image/rootfs.sh" | sha256sum | cut -c1-12)"
  pg_version="$(dpkg-query -W -f '${Version}' "postgresql-$(ls /usr/lib/postgresql | sort -V | tail -n1)" 2>/dev/null || echo unknown)"
  redis_version="$(dpkg-query -W -f '${Version}' redis-server 2>/dev/null || echo unknown)"

  tar="$(cached_rootfs postgres "$(echo "$pg_version-$self" | tr -c 'A-Za-z0-9.\n-' _)" postgres_rootfs)"
  podman import --quiet \
    --change 'USER postgres' \
    --change 'CMD ["'"$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"'/postgres", "-D", "/var/lib/postgresql/data"]' \
    "$tar" "localhost/turbochat-test-postgres:$tag" >/dev/null

  tar="$(cached_rootfs redis "$(echo "$redis_version-$self" | tr -c 'A-Za-z0-9.\n-' _)" redis_rootfs)"
  podman import --quiet \
    --change 'USER redis' \
    --change 'WORKDIR /data' \
    --change 'CMD ["/usr/bin/redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]' \
    "$tar" "localhost/turbochat-test-redis:$tag" >/dev/null
}
