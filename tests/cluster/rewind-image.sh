#!/usr/bin/env bash
# Packs a `rewind` binary into an OCI image for the bed's real node — what mover pods run — and
# imports it into the node's containerd, as node.sh imports the others. Tests pass the binary
# they were built with (target/debug/rewind: CI builds no release binary).
#
#   rewind-image.sh BINARY   prints IMAGE_REWIND=rewind.dev/testbed/rewind:<hash> on stdout
#
# The image holds BINARY as /usr/local/bin/rewind (its entrypoint; its default command is `run`,
# as the Dockerfile's CMD, so it starts the operator as the chart and the Dockerfile describe)
# with the shared libraries it
# loads (ldd) and the host's CA bundle (an https:// object store); no shell. Its default user is
# 65532 (nonroot): a pod that says runAsNonRoot runs without naming a user, one that needs root
# says runAsUser: 0. Its tag is the hash of the binary, those libraries' packages, this script,
# images-lib.sh and the packer; the tarball is cached as
# ${REWIND_CACHE:-~/.cache/rewind}/images/rewind-<tag>.tar (only the newest is kept).
#
# It is imported into the containerd at $CONTAINERD_ADDRESS, or the one .testbed/env names
# (the bed must be up), and labelled pinned like the bed's own images. Importing an image that
# is already there replaces nothing and takes a second. Pods use imagePullPolicy: Never.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=$(realpath "${1:?usage: rewind-image.sh BINARY}")
[[ -x $binary ]] || { echo "rewind-image: $binary is not an executable" >&2; exit 1; }
# shellcheck source=tests/cluster/images-lib.sh
source "$here/images-lib.sh" # $cache, $pack, key, pkg_versions, build_image, copy_with_libs

ca_bundle=/etc/ssl/certs/ca-certificates.crt
fill_rewind() {
  mkdir -p "$rootfs"/{etc,tmp,usr/local/bin}
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  cp "$binary" "$rootfs/usr/local/bin/rewind"
  chmod 755 "$rootfs/usr/local/bin/rewind"
  local lib
  for lib in $(libs_of "$binary"); do
    [[ -e $rootfs$lib ]] || (cd / && cp -L --parents "${lib#/}" "$rootfs/")
  done
  [[ ! -f $ca_bundle ]] || { mkdir -p "$rootfs/etc/ssl/certs" && cp -L "$ca_bundle" "$rootfs/etc/ssl/certs/"; }
}
# The libraries' packages (libc6, libgcc-s1, ...) and the CA bundle's package are inputs too.
lib_packages=$(for lib in $(libs_of "$binary"); do dpkg -S "$lib" 2>/dev/null | cut -d: -f1; done | sort -u)
# shellcheck disable=SC2086 # one package a word
inputs_key=$( { sha256sum <"$binary"; pkg_versions $lib_packages ca-certificates 2>/dev/null || true; } \
  | key - "$0" "$pack" "$images_lib")
build_image IMAGE_REWIND rewind "$inputs_key" fill_rewind \
  --entrypoint /usr/local/bin/rewind --cmd run --user 65532:65532 --env PATH=/usr/local/bin:/usr/bin:/bin --workdir /tmp

address=${CONTAINERD_ADDRESS:-}
if [[ -z $address ]]; then
  env_file=$here/../../.testbed/env
  [[ -f $env_file ]] || { echo "rewind-image: no CONTAINERD_ADDRESS and no $env_file: is the bed up (make cluster-up)?" >&2; exit 1; }
  address=$(sed -n 's/^CONTAINERD_ADDRESS=//p' "$env_file")
fi
[[ -n $address ]] || { echo "rewind-image: the bed has no real node (no CONTAINERD_ADDRESS)" >&2; exit 1; }
ctr --address "$address" -n k8s.io images import --no-unpack "${tarballs[0]}" >/dev/null \
  || { echo "rewind-image: could not import ${tarballs[0]} into the containerd at $address" >&2; exit 1; }
ctr --address "$address" -n k8s.io images label "$IMAGE_REWIND" io.cri-containerd.pinned=pinned >/dev/null
echo "IMAGE_REWIND=$IMAGE_REWIND"
