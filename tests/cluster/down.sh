#!/usr/bin/env bash
# `make cluster-down`: stops exactly what cluster-up started (by pid) and removes the bed's state.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

# The real node first (kubelet, pods through CRI, containerd, shims, mounts, bridge, cgroups):
# the generic loop below would stop its processes in no particular order.
"$(dirname "$0")/node.sh" down

if [[ -d $pids ]]; then
  for file in "$pids"/*.pid; do
    [[ -f $file ]] || continue
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      say "stopped $(basename "$file" .pid) (pid $pid)"
    fi
    rm -f "$file"
  done
fi
if [[ -f $state/postgres/data/postmaster.pid ]]; then
  runuser -u postgres -- "$(cat "$state/postgres/bindir")/pg_ctl" -D "$state/postgres/data" -m fast stop >/dev/null 2>&1 \
    && say "stopped postgres"
fi
if [[ -d $KWOK_WORKDIR/clusters/$cluster_name ]]; then
  kwokctl=$(cat "$state/bin-dir" 2>/dev/null)/kwokctl
  if [[ -x $kwokctl ]]; then
    "$kwokctl" delete cluster --name "$cluster_name" --kubeconfig "$state/kubeconfig-kwokctl" >/dev/null 2>&1 && say "deleted the kwok cluster"
  fi
fi
# Never delete through a mount that is still there (a pod's volume, a container's root file system).
if left=$(awk -v p="$state/" 'index($2, p) == 1 {print $2}' /proc/self/mounts) && [[ -n $left ]]; then
  die "still mounted under $state, not removing it: $left"
fi
rm -rf --one-file-system "$state"
say "down"
