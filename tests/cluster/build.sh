#!/usr/bin/env bash
# Builds every test-bed binary from the Go module proxy into a version-keyed cache
# (rebuilt only when a pin changes) and links them into one directory, printed last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
cache=${REWIND_CACHE:-$HOME/.cache/rewind}

K8S_VERSION=v1.36.3
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
CRICTL_VERSION=v1.37.0 # the CRI client: node.sh removes the real node's pods with it

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "build: '$1' is missing: $2" >&2; exit 1; }
}
need go "install Go >= 1.26 (the test bed builds its binaries from the Go module proxy)"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [[ "$go_minor" -lt 26 ]]; then
  echo "build: Go $(go env GOVERSION) is too old: the pinned modules need Go 1.26" >&2
  exit 1
fi

key() { cat "$@" | sha256sum | cut -c1-12; }

# build_group NAME KEY COMMAND... : runs COMMAND with $out set, unless the cache has NAME-KEY.
build_group() {
  local name=$1 k=$2; shift 2
  local out=$cache/bin/$name-$k
  if [[ -f $out/.complete ]]; then
    echo "build: $name cached ($out)" >&2
  else
    echo "build: building $name (cold builds take minutes on 2 cores)..." >&2
    local started=$SECONDS
    rm -rf "$out.partial" && mkdir -p "$out.partial"
    out=$out.partial "$@"
    rm -rf "$out" && mv "$out.partial" "$out" && touch "$out/.complete"
    echo "build: $name built in $((SECONDS - started))s" >&2
  fi
  printf '%s\n' "$out"
}

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
  done
  printf '%s' "$flags"
}

build_k8s() {
  (cd "$here/k8s" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet)
}
build_etcd() {
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}
build_tools() {
  GOBIN=$out go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  GOBIN=$out go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}
build_node_tools() {
  GOBIN=$out go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}
build_csi() {
  (cd "$here/csi" && go build -trimpath -ldflags "-s -w" -o "$out/" ./hostpath \
    github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller)
}

k8s_dir=$(build_group k8s "$(echo "$K8S_VERSION $(k8s_ldflags)" | key - "$here/k8s/go.mod" "$here/k8s/go.sum")" build_k8s)
etcd_dir=$(build_group etcd "$(key "$here/etcd/go.mod" "$here/etcd/go.sum")" build_etcd)
tools_dir=$(build_group tools "$(echo "$KWOK_VERSION $HELM_VERSION" | key -)" build_tools)
csi_dir=$(build_group csi "$(key "$here/csi/go.mod" "$here/csi/go.sum" "$here"/csi/hostpath/*.go)" build_csi)
node_dir=$(build_group node-tools "$(echo "$CRICTL_VERSION" | key -)" build_node_tools)

# One directory with every binary, for PATH and for kwokctl's --*-binary flags; one per set of
# pins, so that checkouts with other pins (another worktree's bed) never relink each other's.
bin=$cache/testbed-bin-$(printf '%s\n' "$k8s_dir" "$etcd_dir" "$tools_dir" "$csi_dir" "$node_dir" | key -)
mkdir -p "$bin"
for dir in "$k8s_dir" "$etcd_dir" "$tools_dir" "$csi_dir" "$node_dir"; do
  for file in "$dir"/*; do ln -sfn "$file" "$bin/$(basename "$file")"; done
done
printf '%s\n' "$bin"
