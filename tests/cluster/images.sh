#!/usr/bin/env bash
# Builds the OCI images the real node runs, without a registry, from this host's Debian packages,
# into ~/.cache/rewind/images/<image>-<hash of its inputs>.tar (rebuilt only when an input
# changes), and prints an env file (IMAGE_PAUSE, IMAGE_SHELL, IMAGE_POSTGRES, IMAGE_TARBALLS,
# IMAGE_NAMES) for node.sh, which imports them with `ctr images import`. Pods use
# imagePullPolicy: Never.
#
#   pause     the pod sandbox: Kubernetes' own build/pause/linux/pause.c from the pinned
#             k8s.io/kubernetes module, compiled static with gcc
#   shell     Debian's busybox-static as /bin/sh and every applet
#   postgres  Debian's PostgreSQL server and client binaries with the libraries they load, busybox
#             for /bin/sh, user postgres (uid 999); `postgres-entrypoint` initialises $PGDATA
#             on first start (trust auth) and runs the server
#
# usage: images.sh OUT_ENV_FILE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out_env=$1
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
# shellcheck source=tests/cluster/images-lib.sh
source "$here/images-lib.sh" # $cache, $pack, key, pkg_versions, build_image, base_dirs, copy_with_libs

k8s_dir=$(cd "$here/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
pause_c=$k8s_dir/build/pause/linux/pause.c
k8s_version=$(cd "$here/k8s" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
fill_pause() {
  mkdir -p "$rootfs"
  gcc -Os -static -Wall -DVERSION="$k8s_version" -o "$rootfs/pause" "$pause_c"
  strip "$rootfs/pause"
}
build_image pause pause "$(echo "$k8s_version $(gcc -dumpfullversion)" | key - "$pause_c" "$0" "$pack" "$images_lib")" fill_pause \
  --entrypoint /pause --user 65535:65535

fill_shell() { base_dirs; }
build_image shell shell "$(pkg_versions busybox-static | key - "$0" "$pack" "$images_lib")" fill_shell --cmd /bin/sh

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_major=$(basename "$(dirname "$pg_bin")")
fill_postgres() {
  base_dirs
  # The server's binaries and its $libdir (extensions initdb loads, e.g. dict_snowball), without
  # the LLVM bitcode for JIT (jit stays off), with every library they load.
  local so
  copy_with_libs "$pg_bin"/*
  for so in "$(dirname "$pg_bin")"/lib/*.so; do
    [[ $so == */llvmjit* ]] || copy_with_libs "$so" # llvmjit.so would bring libLLVM (~100 MB)
  done
  copy_parents "/usr/share/postgresql/$pg_major"
  copy_parents /usr/share/zoneinfo # Debian builds PostgreSQL with the system's tzdata
  # The loader needs the libraries its dependencies open by soname (gconv for encodings).
  [[ ! -d /usr/lib/x86_64-linux-gnu/gconv ]] || copy_parents /usr/lib/x86_64-linux-gnu/gconv
  mkdir -p "$rootfs/var/lib/postgresql" "$rootfs/var/run/postgresql"
  chown 999:999 "$rootfs/var/lib/postgresql" "$rootfs/var/run/postgresql"
  cat >"$rootfs/usr/local/bin/postgres-entrypoint" <<'SH'
#!/bin/sh
# Initialises $PGDATA (trust auth, user postgres) on first start, then runs the server in front.
set -e
: "${PGDATA:=/var/lib/postgresql/data/pgdata}"
export PGDATA
# As the official image's entrypoint does on every start: a volume with an fsGroup comes back
# group-writable (the kubelet's ownership change), and the server refuses such a directory.
mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
  echo "host all all 0.0.0.0/0 trust" >>"$PGDATA/pg_hba.conf"
fi
exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql -c jit=off "$@"
SH
  chmod 755 "$rootfs/usr/local/bin/postgres-entrypoint"
}
build_image postgres postgres \
  "$(pkg_versions "postgresql-$pg_major" "postgresql-client-$pg_major" libpq5 tzdata busybox-static | key - "$0" "$pack" "$images_lib")" \
  fill_postgres --cmd /usr/local/bin/postgres-entrypoint --user 999:999 \
  --env "PATH=$pg_bin:/usr/local/bin:/usr/bin:/bin" --env PGDATA=/var/lib/postgresql/data/pgdata \
  --env PGUSER=postgres --env PGHOST=/var/run/postgresql

cat >"$out_env" <<ENV
IMAGE_PAUSE=$pause
IMAGE_SHELL=$shell
IMAGE_POSTGRES=$postgres
IMAGE_TARBALLS="${tarballs[*]}"
IMAGE_NAMES="${names[*]}"
ENV
