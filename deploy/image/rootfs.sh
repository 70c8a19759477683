# Staging a root filesystem from this machine's files, for images FROM
# scratch: a binary and every shared library it links (as ldd resolves them
# here), copied to the same paths. Sourced by build.sh and the container
# test's image builders.

# rootfs_add ROOT FILE [DEST]: copies FILE (dereferencing symlinks) to
# ROOT/DEST (default: the same path).
rootfs_add() {
  local root=$1 file=$2 dest=${3:-$2}
  mkdir -p "$root$(dirname "$dest")"
  cp -L --preserve=mode "$file" "$root$dest"
}

# rootfs_add_libs ROOT BINARY...: copies the dynamic loader and every
# library the binaries link.
rootfs_add_libs() {
  local root=$1; shift
  local bin lib
  for bin in "$@"; do
    if ! ldd "$bin" >/dev/null 2>&1; then
      continue # static, or not an ELF binary
    fi
    # "libx.so => /lib/.../libx.so (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
      [ -e "$root$lib" ] || rootfs_add "$root" "$lib"
    done
  done
}

# rootfs_add_bin ROOT BINARY [DEST]: the binary and its libraries.
rootfs_add_bin() {
  local root=$1 bin=$2 dest=${3:-$2}
  rootfs_add "$root" "$bin" "$dest"
  rootfs_add_libs "$root" "$bin"
}

# rootfs_users ROOT NAME UID GID: /etc/passwd and /etc/group with root and
# one unprivileged user.
rootfs_users() {
  local root=$1 name=$2 uid=$3 gid=$4
  mkdir -p "$root/etc"
  printf 'root:x:0:0:root:/root:/nonexistent\n%s:x:%s:%s:%s:/nonexistent:/nonexistent\n' \
    "$name" "$uid" "$gid" "$name" >"$root/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$name" "$gid" >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
}
