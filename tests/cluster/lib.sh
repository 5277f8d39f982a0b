# Shared helpers of the test-bed scripts (sourced, not run).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${REWIND_TESTBED_DIR:-$repo/.testbed}
pids=$state/pids
logs=$state/logs
cluster_name=rewind
export KWOK_WORKDIR=$state/kwok
kubeconfig=$KWOK_WORKDIR/clusters/$cluster_name/kubeconfig.yaml

say() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: %s\n' "$*" >&2; exit 1; }

# free_port: a TCP port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# port_in_use PORT: true when something listens on 127.0.0.1:PORT.
port_in_use() {  # PORT [ADDRESS, default 127.0.0.1]
  (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null
}

# alive NAME: the process recorded in pids/NAME.pid runs.
alive() {
  [[ -f $pids/$1.pid ]] && kill -0 "$(cat "$pids/$1.pid")" 2>/dev/null
}

# start NAME COMMAND...: runs COMMAND in the background, logs to logs/NAME.log, records its pid.
start() {
  local name=$1; shift
  mkdir -p "$pids" "$logs"
  nohup "$@" >"$logs/$name.log" 2>&1 &
  echo $! >"$pids/$name.pid"
}

# stop_pid NAME: stops the process recorded in pids/NAME.pid (TERM, then KILL after 5 s).
stop_pid() {
  local file=$pids/$1.pid pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$file"
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$what did not come up within ${limit}s; see $logs/ (make cluster-down, then make cluster-up)"
    fi
    sleep 1
  done
}

# crds_established KUBECTL CRD...: true when every named CRD reports Established=True. Polled
# through wait_for instead of `kubectl wait`, which fails at once (not after its timeout) on a
# CRD the API server has not yet given any condition (issue 19).
crds_established() {
  local kubectl=$1 crd; shift
  for crd in "$@"; do
    [[ $("$kubectl" get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]] \
      || return 1
  done
}

# pvc_bound_and_snapshot_ready KUBECTL NAMESPACE: the CSI chain serves end to end — a claim in
# NAMESPACE is Bound and its snapshot readyToUse (the probe objects are made by up.sh).
pvc_bound_and_snapshot_ready() {
  local kubectl=$1 ns=$2
  [[ $("$kubectl" -n "$ns" get pvc probe -o 'jsonpath={.status.phase}' 2>/dev/null) == Bound ]] || return 1
  [[ $("$kubectl" -n "$ns" get volumesnapshot probe -o 'jsonpath={.status.readyToUse}' 2>/dev/null) == true ]]
}
