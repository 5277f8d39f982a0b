#!/usr/bin/env bash
# Builds Velero's server+CLI and its AWS object-store plugin from the Go module proxy, from the
# wrapper module beside this script, into ~/.cache/rewind/bench/velero-<hash of the pins>/
# (rebuilt only when go.mod, go.sum or the flags change). Prints that directory last.
# Flags as upstream's images: CGO_ENABLED=0, velero's version stamped into pkg/buildinfo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
cache=${REWIND_CACHE:-$HOME/.cache/rewind}/bench

VELERO_VERSION=v1.18.3 # keep equal to go.mod
ldflags="-X github.com/vmware-tanzu/velero/pkg/buildinfo.Version=$VELERO_VERSION -X github.com/vmware-tanzu/velero/pkg/buildinfo.GitTreeState=clean"
key=$( (echo "$VELERO_VERSION $ldflags $(go env GOVERSION)"; cat "$here/go.mod" "$here/go.sum") | sha256sum | cut -c1-12)
out=$cache/velero-$key
if [[ -f $out/.complete ]]; then
  echo "bench: velero and velero-plugin-for-aws cached ($out)" >&2
else
  command -v go >/dev/null || { echo "bench: go is missing (Go >= 1.26)" >&2; exit 1; }
  echo "bench: building velero $VELERO_VERSION and velero-plugin-for-aws (cold: many minutes on 2 cores)..." >&2
  started=$SECONDS
  rm -rf "$out.partial" && mkdir -p "$out.partial/plugins"
  (cd "$here" && go mod download)
  echo "bench: modules downloaded in $((SECONDS - started))s" >&2
  (cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$out.partial/velero" github.com/vmware-tanzu/velero/cmd/velero)
  echo "bench: velero built at $((SECONDS - started))s" >&2
  # Velero runs every executable in --plugin-dir as a plugin: the plugin alone in plugins/.
  (cd "$here" && go build -trimpath -o "$out.partial/plugins/velero-plugin-for-aws" \
    github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws)
  rm -rf "$out" && mv "$out.partial" "$out" && touch "$out/.complete"
  echo "bench: velero and the plugin built in $((SECONDS - started))s" >&2
fi
printf '%s\n' "$out"
