# Shared helpers of the scripts that build the real node's OCI images without a registry
# (images.sh, rewind-image.sh): sourced, not run. A script sets nothing before sourcing it; it
# gets $cache (the image tarballs), $pack (the packer) and the functions below.
images_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${REWIND_CACHE:-$HOME/.cache/rewind}/images
mkdir -p "$cache"
pack=$images_here/images/oci-pack.py
images_lib=$images_here/images-lib.sh # part of every image's key: its functions fill the images

key() { cat "$@" | sha256sum | cut -c1-12; }
pkg_versions() { dpkg-query -W -f '${Package}=${Version}\n' "$@"; }

# build_image VAR NAME KEY FUNCTION [oci-pack.py options]: FUNCTION fills $rootfs; the image,
# rewind.dev/testbed/NAME:KEY, is packed into $cache/NAME-KEY.tar (unless already there) and its
# name stored in VAR; tarballs and names collect every image built or found. The tarball is
# written beside and renamed into place, so two scripts building the same image at once (test
# binaries run in parallel) never import half a file.
tarballs=() names=()
build_image() {
  local var=$1 name=$2 k=$3 fn=$4; shift 4
  local image=rewind.dev/testbed/$name:$k tar=$cache/$name-$k.tar
  if [[ ! -f $tar ]]; then
    echo "images: building $image" >&2
    rootfs=$(mktemp -d)
    "$fn"
    python3 "$pack" "$rootfs" "$image" "$tar.$$.part" "$@" >/dev/null
    rm -rf "$rootfs"
    mv -f "$tar.$$.part" "$tar"
    find "$cache" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$k.tar" -delete # older inputs
  fi
  tarballs+=("$tar") names+=("$image")
  printf -v "$var" '%s' "$image"
}

# base_dirs: the usual directories, root/postgres/nobody users, busybox as /bin/sh and every applet.
base_dirs() {
  mkdir -p "$rootfs"/{bin,sbin,etc,tmp,proc,sys,dev,run,var/run,root,usr/bin,usr/local/bin}
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\npostgres:x:999:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  cp /bin/busybox "$rootfs/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [[ -e $rootfs/bin/$applet ]] || ln -s busybox "$rootfs/bin/$applet"
  done
}

# copy_parents PATH...: copies absolute PATHs into $rootfs at the same paths (run from / : GNU cp
# 9.1's `cp -a --parents` fails on absolute sources from another directory).
copy_parents() { (cd / && cp -a --parents "${@#/}" "$rootfs/"); }

# copy_with_libs FILE...: FILE and every shared library it loads (ldd), at the same paths.
copy_with_libs() {
  local f lib
  for f in "$@"; do
    copy_parents "$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+'); do
      [[ -e $rootfs$lib ]] && continue
      (cd / && cp -L --parents "${lib#/}" "$rootfs/")
    done
  done
}

# libs_of FILE: the shared libraries FILE loads (ldd), one path a line.
libs_of() { ldd "$1" 2>/dev/null | grep -oE '/[^ ]+' || true; }
