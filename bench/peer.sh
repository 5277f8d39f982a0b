#!/usr/bin/env bash
# `make bench-peer`: Rewind beside Velero 1.18.3 (server defaults, AWS plugin, local processes)
# on the same bed, the same data and the same S3 server, in one run. Data: one project of
# 5,000 ConfigMaps + 5,000 Secrets. Prints backup and restore objects/s, peak RSS and CPU seconds
# of each tool with the ratios Rewind/Velero, and appends them to docs/performance.md.
#
# Both tools are timed alike: bench/velero/kube.py POSTs the object that starts the work (Velero
# Backup/Restore exactly as `velero backup|restore create -o json` builds it; Rewind
# AccountBackup/ProjectRestore) and polls it every 0.1 s until its phase is final. The tools run
# one after the other, never at once. Memory and CPU come from /proc (bench/velero/procstat.py):
# Velero's figures include its plugin processes. The bed is left as found: stopped if it was
# stopped; otherwise everything this script made in it is removed again.
#
# Knobs: BENCH_PEER_OBJECTS (default 10000), BENCH_PEER_RECORD=0 (do not touch docs/).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
objects=${BENCH_PEER_OBJECTS:-10000}
record=${BENCH_PEER_RECORD:-1}
say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
for tool in python3 go cargo; do command -v "$tool" >/dev/null || die "$tool is missing"; done

# 0. Was the bed running before? Then it stays running; otherwise it is stopped at the end.
bed_was_up=false
if [[ -f .testbed/env ]] && (set -a; source .testbed/env; "$KUBECTL" get --raw /readyz) >/dev/null 2>&1; then
  bed_was_up=true
fi

# 1. Binaries: Velero and its AWS plugin from the Go module proxy (cached by pins), Rewind release.
velero_dir=$(bench/velero/build.sh)
say "building rewind (release)"
cargo build --release --locked --quiet
rewind=$repo/${CARGO_TARGET_DIR:-target}/release/rewind

# 2. The bed.
tests/cluster/up.sh >/dev/null 2>.testbed-up.err || { cat .testbed-up.err >&2; rm -f .testbed-up.err; die "the test bed did not come up"; }
rm -f .testbed-up.err
set -a; source .testbed/env; set +a
export KUBECTL
kubectl() { "$KUBECTL" "$@"; }
kube=bench/velero/kube.py
procstat=bench/velero/procstat.py
venv_python=$(ls -d "${REWIND_CACHE:-$HOME/.cache/rewind}"/venv-moto-*/bin/python | head -1)
apiserver_pid=$(cat .testbed/kwok/clusters/rewind/pids/kube-apiserver.pid)

stamp=$(date -u +%Y%m%d%H%M%S)
# Logs, inputs and results of the last run; outside .testbed/, which `cluster-down` removes.
work=${REWIND_CACHE:-$HOME/.cache/rewind}/bench/peer-last
rm -rf "$work" && mkdir -p "$work/velero/home" "$work/velero/tmp" "$work/velero/scratch" "$work/rewind"
bucket=rewind-bench-peer
account=peer-$stamp
project=peer-$stamp
velero_ns=velero
rewind_ns=rewind-bench
velero_target=$project-velero
rewind_target=$project-rewind
pids=()
rewind_crds_were_absent=false

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
s3() {
  AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY "$venv_python" -c "
import boto3, sys
s3 = boto3.client('s3', endpoint_url='$S3_ENDPOINT', region_name='$AWS_REGION')
if sys.argv[1] == 'create':
    if '$bucket' not in [b['Name'] for b in s3.list_buckets().get('Buckets', [])]:
        s3.create_bucket(Bucket='$bucket')
    s3.head_bucket(Bucket='$bucket')
else:
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket='$bucket'):
        for o in page.get('Contents', []):
            s3.delete_object(Bucket='$bucket', Key=o['Key'])
    s3.delete_bucket(Bucket='$bucket')
" "$1"
}
velero() { HOME=$work/velero/home TMPDIR=$work/velero/tmp "$velero_dir/velero" --kubeconfig "$KUBECONFIG" --namespace "$velero_ns" "$@"; }
stop() { # stop PID: SIGTERM, then SIGKILL after 20 s
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}
unfinalize() { # unfinalize KIND [-n NAMESPACE]: drop the finalizers of every KIND object left (its operator is gone)
  local kind=$1; shift
  for name in $(kubectl get "$kind" "$@" -o name 2>/dev/null); do
    kubectl patch "$name" "$@" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
  done
}
cleanup() {
  local status=$?
  set +e
  for pid in "${pids[@]}"; do stop "$pid"; done
  if [[ $bed_was_up == true ]]; then
    say "removing what the benchmark made in the bed (it was running before, so it stays up)"
    # Normally deleted while their operators still ran; after a failure, release them here.
    unfinalize accountbackups.rewind.dev
    unfinalize projectrestores.rewind.dev
    kubectl delete accountbackup,projectrestore -l rewind.dev/bench=peer --ignore-not-found --wait=false >/dev/null 2>&1
    unfinalize restores.velero.io -n "$velero_ns"
    unfinalize backups.velero.io -n "$velero_ns"
    kubectl delete namespace "$project" "$velero_target" "$rewind_target" "$rewind_ns" --ignore-not-found --wait=false >/dev/null 2>&1
    kubectl delete namespace -l "rewind.dev/account=$account" --ignore-not-found --wait=false >/dev/null 2>&1
    [[ -f $work/rewind/rbac.yaml ]] && kubectl delete -f "$work/rewind/rbac.yaml" --ignore-not-found --wait=false >/dev/null 2>&1
    [[ -f $work/velero/install.json ]] && kubectl delete -f "$work/velero/install.json" --ignore-not-found --wait=false >/dev/null 2>&1
    if [[ $rewind_crds_were_absent == true ]]; then # the bed had no Rewind kinds: remove them again
      kubectl delete -f "$work/rewind/policies.yaml" --ignore-not-found >/dev/null 2>&1
      kubectl delete -k crds/ --ignore-not-found --wait=false >/dev/null 2>&1
    fi
    s3 delete >/dev/null 2>&1
  else
    say "stopping the bed (it was not running before)"
    tests/cluster/down.sh >/dev/null 2>&1
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() { # wait_until DESCRIPTION SECONDS COMMAND...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what: not within ${limit}s"
    sleep 0.5
  done
}

# 3. The data: one project of the account, COUNT/2 ConfigMaps + COUNT/2 Secrets.
s3 create
kubectl create namespace "$project" >/dev/null
kubectl label namespace "$project" "rewind.dev/account=$account" >/dev/null
wait_until "ServiceAccount $project/default" 60 kubectl -n "$project" get serviceaccount default
say "creating $objects ConfigMaps and Secrets in $project"
started=$SECONDS
python3 "$kube" objects "$project" "$objects"
say "created in $((SECONDS - started))s"

# 4. Velero: what `velero install` would create (CRDs, namespace, ServiceAccount, ClusterRoleBinding,
# the BackupStorageLocation on the bed's S3, the Deployment), but the Deployment at 0 replicas: the
# server is the local process below. The Deployment must exist all the same: Velero's restore
# reads its own Deployment (image, labels) when it loads its pod-volume restore action, and
# without it every restore fails ('deployments.apps "velero" not found').
velero install --dry-run -o json --provider aws --plugins velero/velero-plugin-for-aws:v1.14.3 \
  --bucket "$bucket" --prefix velero --no-secret --use-volume-snapshots=false \
  --backup-location-config "region=$AWS_REGION,s3ForcePathStyle=true,s3Url=$S3_ENDPOINT" \
  | python3 -c '
import json, sys
install = json.load(sys.stdin)
for item in install["items"]:
    if item["kind"] == "Deployment":
        item["spec"]["replicas"] = 0
json.dump(install, sys.stdout)' >"$work/velero/install.json"
kubectl apply -f "$work/velero/install.json" >/dev/null 2>&1 || true # the BSL fails until its CRD is served
wait_until "Velero's install objects to apply (CRDs established)" 60 kubectl apply -f "$work/velero/install.json"
printf '[default]\naws_access_key_id=%s\naws_secret_access_key=%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$work/velero/credentials"
# As the Deployment runs it (args: server --features= --uploader-type=kopia), with the plugin
# directory its init container would fill and the credentials file it would mount; no limits
# (the Deployment's are 1 CPU, 512 MiB).
velero_metrics=$(free_port)
say "starting velero server ($velero_dir)"
(
  cd "$work/velero"
  AWS_SHARED_CREDENTIALS_FILE=$work/velero/credentials VELERO_SCRATCH_DIR=$work/velero/scratch \
    HOME=$work/velero/home TMPDIR=$work/velero/tmp \
    exec "$velero_dir/velero" server --kubeconfig "$KUBECONFIG" --namespace "$velero_ns" \
    --uploader-type=kopia --features= --plugin-dir "$velero_dir/plugins" \
    --metrics-address "127.0.0.1:$velero_metrics" --profiler-address "" >"$work/velero/server.log" 2>&1
) &
velero_pid=$!
pids+=("$velero_pid")
python3 "$procstat" watch "$velero_pid" "$work/velero/memory.json" &
pids+=("$!")
bsl_available() { [[ $(kubectl -n "$velero_ns" get backupstoragelocation default -o 'jsonpath={.status.phase}') == Available ]]; }
wait_until "Velero's BackupStorageLocation to be Available (see $work/velero/server.log)" 180 bsl_available
kill -0 "$velero_pid" 2>/dev/null || die "velero server exited: see $work/velero/server.log"
sleep 5 # let its controllers finish their start-up lists before the clock starts

# timed NAME FILE: create the object in FILE, wait for its final phase; prints its JSON result.
cpu() { python3 "$procstat" cpu "$1"; }
timed() {
  local name=$1 file=$2 tool_pid=$3
  echo "$(cpu "$tool_pid") $(cpu "$apiserver_pid")" >"$work/$name.cpu-before"
  python3 "$kube" timed "$file" >"$work/$name.json"
  echo "$(cpu "$tool_pid") $(cpu "$apiserver_pid")" >"$work/$name.cpu-after"
}

say "velero: backup of $project"
velero backup create "bench-$stamp" --include-namespaces "$project" --snapshot-volumes=false -o json >"$work/velero-backup.in.json"
timed velero-backup "$work/velero-backup.in.json" "$velero_pid"
say "velero: restore into $velero_target"
velero restore create "bench-$stamp" --from-backup "bench-$stamp" --namespace-mappings "$project:$velero_target" -o json >"$work/velero-restore.in.json"
timed velero-restore "$work/velero-restore.in.json" "$velero_pid"
cp "$work/velero/memory.json" "$work/velero-memory.json"
# Velero's Backup and Restore carry finalizers its server releases: delete them while it runs.
kubectl -n "$velero_ns" delete restores.velero.io,backups.velero.io --all --timeout=120s >/dev/null 2>&1 || true
stop "$velero_pid"

# Velero restored the namespace's labels too: its copy is now a second project of the account.
# Take it out of the account, or Rewind's backup (of the whole account) would hold both.
kubectl label namespace "$velero_target" rewind.dev/account- >/dev/null

# 5. Rewind: CRDs and the chart's policies and RBAC, as the end-to-end tests install them; the
# operator impersonates the chart's ServiceAccount; its repository is on the same S3 server.
kubectl get crd accountbackups.rewind.dev >/dev/null 2>&1 || rewind_crds_were_absent=true
wait_until "Rewind's CRDs to apply" 60 kubectl apply -k crds/
"$HELM" template rewind charts/rewind --namespace rewind-system --kube-version 1.36.0 \
  --show-only templates/account-ownership.yaml >"$work/rewind/policies.yaml"
kubectl apply -f "$work/rewind/policies.yaml" >/dev/null
kubectl create namespace "$rewind_ns" >/dev/null
"$HELM" template "$rewind_ns" charts/rewind --namespace "$rewind_ns" --kube-version 1.36.0 \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac-operator.yaml >"$work/rewind/rbac.yaml"
kubectl apply -f "$work/rewind/rbac.yaml" >/dev/null
sed "/^  user:\$/a\\    as: system:serviceaccount:$rewind_ns:$rewind_ns-operator" "$KUBECONFIG" >"$work/rewind/kubeconfig.yaml"
grep -q "as: system:serviceaccount:$rewind_ns:" "$work/rewind/kubeconfig.yaml" || die "could not write the impersonating kubeconfig"
for crd in accountbackups.rewind.dev projectrestores.rewind.dev; do
  wait_until "CRD $crd Established" 60 test "$(kubectl get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}')" = True
done
probe() { printf 'apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {name: bench-probe}\nspec: {account: probe}\n' | kubectl create --dry-run=server -f -; }
wait_until "AccountBackups to be creatable (admission knows the kind)" 90 probe
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/rewind/key"
rewind_probe=$(free_port)
say "starting rewind run ($rewind)"
KUBECONFIG=$work/rewind/kubeconfig.yaml AWS_ENDPOINT=$S3_ENDPOINT AWS_ALLOW_HTTP=true RUST_LOG=info \
  "$rewind" run --namespace "$rewind_ns" --identity bench-peer --probe-addr "127.0.0.1:$rewind_probe" \
  --repository "s3://$bucket/rewind" --repository-key-file "$work/rewind/key" --log-format json \
  >"$work/rewind/operator.log" 2>&1 &
rewind_pid=$!
pids+=("$rewind_pid")
python3 "$procstat" watch "$rewind_pid" "$work/rewind/memory.json" &
pids+=("$!")
ready() { python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:$rewind_probe/readyz', timeout=2).status != 200)"; }
wait_until "rewind to be ready (see $work/rewind/operator.log)" 60 ready
sleep 5 # as for Velero: start-up lists done before the clock starts

cat >"$work/rewind-backup.in.json" <<JSON
{"apiVersion": "rewind.dev/v1alpha1", "kind": "AccountBackup",
 "metadata": {"name": "bench-$stamp", "labels": {"rewind.dev/bench": "peer"}},
 "spec": {"account": "$account"}}
JSON
say "rewind: backup of account $account"
timed rewind-backup "$work/rewind-backup.in.json" "$rewind_pid"
cat >"$work/rewind-restore.in.json" <<JSON
{"apiVersion": "rewind.dev/v1alpha1", "kind": "ProjectRestore",
 "metadata": {"name": "bench-$stamp", "labels": {"rewind.dev/bench": "peer"}},
 "spec": {"account": "$account", "backup": "bench-$stamp", "targetNamespaces": {"$project": "$rewind_target"}}}
JSON
say "rewind: restore into $rewind_target"
timed rewind-restore "$work/rewind-restore.in.json" "$rewind_pid"
cp "$work/rewind/memory.json" "$work/rewind-memory.json"
# Rewind's AccountBackup and ProjectRestore carry finalizers its operator releases: delete them
# while it runs (the backup's data in the bench bucket goes with it).
kubectl delete projectrestore,accountbackup -l rewind.dev/bench=peer --timeout=120s >/dev/null 2>&1 || true
stop "$rewind_pid"

# 6. Objects actually in the restored namespaces (ConfigMaps + Secrets), beside the tools' counts.
count() { echo $(( $(kubectl -n "$1" get configmaps --no-headers 2>/dev/null | wc -l) + $(kubectl -n "$1" get secrets --no-headers 2>/dev/null | wc -l) )); }
echo "$(count "$project") $(count "$velero_target") $(count "$rewind_target")" >"$work/counts"

rewind_version="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo +dirty)"
python3 bench/velero/report.py "$work" "$objects" "$rewind_version" "$(nproc)" >"$work/report.md"
cat "$work/report.md"
say "logs and results of this run: $work"
if [[ $record == 1 ]]; then
  python3 bench/velero/report.py --append docs/performance.md "$work/report.md"
  say "appended to docs/performance.md"
fi
