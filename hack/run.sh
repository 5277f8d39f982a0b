#!/usr/bin/env bash
# `make run`: the whole story on the sample account `demo` — its projects backed up, the shop
# restored into a new namespace, what came back shown beside the original — then the operator
# keeps running in the foreground with its log until Ctrl-C. Against $KUBECONFIG when a cluster
# is configured, else the local test bed (brought up when needed).
#
# REWIND_BIN=path uses that operator binary instead of building the release one (the e2e test
# passes the debug binary it already has).
set -euo pipefail
cd "$(dirname "$0")/.."

step_started=$SECONDS
step() {
  step_started=$SECONDS
  printf '\nrun: [%s] %s\n' "$1" "$2"
}
took() { echo "run:       done in $((SECONDS - step_started)) s"; }
fail() {
  echo "run: $*" >&2
  exit 1
}

cache=${REWIND_CACHE:-$HOME/.cache/rewind}
step 1/6 "cluster"
bed_running() { [[ -f .testbed/env ]] && (set -a; source .testbed/env; "$KUBECTL" get --raw /readyz >/dev/null 2>&1); }
if [[ -z "${KUBECONFIG:-}" ]] && ! kubectl cluster-info >/dev/null 2>&1 && ! bed_running; then
  if ! compgen -G "$cache/testbed-bin-*" >/dev/null; then
    echo "run:       no cluster configured and no test bed built yet: building it from source, once."
    echo "run:       About 16 min on 2 cores (Kubernetes ~7, etcd + kwok + helm ~5, CSI ~2, kubelet and"
    echo "run:       containerd's tools ~2; images from Debian packages < 1); later starts take about 30 s."
  else
    echo "run:       no cluster configured: starting the local test bed (make cluster-up)"
  fi
  make --no-print-directory cluster-up | grep -v '^[A-Z_]*=' || fail "make cluster-up failed (its output is above)"
fi
if [[ -f .testbed/env && -z "${KUBECONFIG:-}" ]]; then
  set -a; source .testbed/env; set +a
fi
KUBECTL=${KUBECTL:-kubectl}
on_bed=false
[[ -n "${REAL_NODE:-}" && "${KUBECONFIG:-}" == "$PWD/.testbed/"* ]] && on_bed=true
echo "run:       $("$KUBECTL" config current-context 2>/dev/null || echo cluster) ($($on_bed && echo 'the local test bed, with a real node' || echo "$KUBECONFIG"))"

# What the story needs of the cluster, each checked with the exact thing that is missing.
missing=()
for check in "create customresourcedefinitions.apiextensions.k8s.io" "create namespaces" \
  "create pods --all-namespaces" "create pods/exec --all-namespaces" \
  "create volumesnapshots.snapshot.storage.k8s.io --all-namespaces"; do
  # shellcheck disable=SC2086
  "$KUBECTL" auth can-i $check >/dev/null 2>&1 || missing+=("permission: kubectl auth can-i $check → no")
done
# Components are judged only with the rights to see them (else every one would look missing).
rights_missing=${#missing[@]}
((rights_missing)) || "$KUBECTL" get crd volumesnapshots.snapshot.storage.k8s.io >/dev/null 2>&1 \
  || missing+=("component: the CSI snapshot CRDs and controller (github.com/kubernetes-csi/external-snapshotter) are not installed")
((rights_missing)) || [[ -n $("$KUBECTL" get volumesnapshotclass -o name 2>/dev/null) ]] \
  || missing+=("component: no VolumeSnapshotClass: the sample's PVCs cannot be snapshotted (create one for your CSI driver)")
((rights_missing)) || [[ -n $("$KUBECTL" get storageclass -o jsonpath='{.items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")].metadata.name}' 2>/dev/null) ]] \
  || missing+=("component: no default StorageClass: the sample's PVCs would stay Pending (mark your CSI driver's class default)")
if ((${#missing[@]})); then
  printf 'run: this cluster lacks what the story needs:\n' >&2
  printf 'run:   %s\n' "${missing[@]}" >&2
  exit 1
fi
took

step 2/6 "operator binary"
if [[ -n "${REWIND_BIN:-}" ]]; then
  bin=$REWIND_BIN
  echo "run:       using $bin"
else
  bin=${CARGO_TARGET_DIR:-target}/release/rewind
  [[ -x "$bin" ]] || echo "run:       first build of the release binary: about 10–15 min on 2 cores (later: seconds)"
  cargo build --release --locked --quiet
fi
took

step 3/6 "operator"
state=.testbed/run
mkdir -p "$state"
if [[ ! -f "$state/repository.key" ]]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/repository.key")
fi
export REWIND_REPOSITORY_KEY_FILE="$PWD/$state/repository.key"
mover_args=()
if $on_bed; then
  # On the bed, as in a cluster: an object store (the bed's S3, which the real node's pods reach
  # too), mover pods on the real node that copy every volume into it — backups survive the
  # loss of the storage system (docs/volumes.md) — and worker pods that dump and load the
  # databases there. Movers and workers run the operator's own binary.
  export REWIND_REPOSITORY="s3://$S3_BUCKET/make-run" AWS_ENDPOINT=$S3_ENDPOINT AWS_ALLOW_HTTP=true
  mover_image=$(tests/cluster/rewind-image.sh "$bin" | sed -n 's/^IMAGE_REWIND=//p')
  [[ -n $mover_image ]] || fail "packing the operator's binary as the movers' image failed: tests/cluster/rewind-image.sh $bin"
  # Database workers exec into the database pods through the API server: on the bed (no
  # kube-proxy) at the real node's InternalIP and the API server's port (docs/testbed.md).
  node_ip=$("$KUBECTL" get node "$REAL_NODE" -o 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}')
  api_port=$("$KUBECTL" config view --minify -o 'jsonpath={.clusters[0].cluster.server}'); api_port=${api_port##*:}
  mover_args=(--mover-image "$mover_image" --mover-image-pull-policy Never --mover-env-secret rewind-mover-env
    --mover-node-selector "$REAL_NODE_LABEL" --mover-tolerations "$REAL_NODE_TAINT"
    --worker-service-account rewind-operator-worker --worker-api-address "$node_ip:$api_port")
  "$bin" repo init >/dev/null 2>&1 || true
else
  # Elsewhere a file:// repository in this checkout: volumes stay CSI snapshots (each backup says so).
  mkdir -p "$state/repository"
  export REWIND_REPOSITORY="file://$PWD/$state/repository"
  [[ -d "$state/repository/config" || -f "$state/repository/config" ]] || "$bin" repo init >/dev/null 2>&1 || true
fi

"$KUBECTL" apply -k crds/ >/dev/null
# Polled, not `kubectl wait`: that fails at once on a CRD whose status has no condition yet.
for crd in accountbackups.rewind.dev backupschedules.rewind.dev projectrestores.rewind.dev; do
  for attempt in $(seq 1 60); do
    [[ $("$KUBECTL" get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null) == True ]] && break
    ((attempt < 60)) || fail "CRD $crd was not Established within 60s: kubectl get crd $crd -o yaml"
    sleep 1
  done
done
"$KUBECTL" create namespace rewind-system --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
if $on_bed; then
  # The movers' Secrets, as the chart makes them: the repository key and the object store's settings.
  "$KUBECTL" -n rewind-system create secret generic rewind-repository-key --from-file=key="$REWIND_REPOSITORY_KEY_FILE" \
    --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
  "$KUBECTL" -n rewind-system create secret generic rewind-mover-env --from-literal=AWS_ENDPOINT="$S3_ENDPOINT" \
    --from-literal=AWS_ALLOW_HTTP=true --from-literal=AWS_REGION="$AWS_REGION" \
    --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
fi

# The operator runs with exactly the chart's permissions and under its tenant-isolation
# policies: its RBAC and policies are installed and, on the local bed, the operator
# impersonates the chart's ServiceAccount.
operator_kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
if [[ -n "${HELM:-}" && -f .testbed/env ]]; then
  "$HELM" template rewind charts/rewind --namespace rewind-system --kube-version 1.36.0 \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac-operator.yaml \
    --show-only templates/account-ownership.yaml 2>/dev/null | "$KUBECTL" apply -f - >/dev/null
  sed '/^  user:$/a\    as: system:serviceaccount:rewind-system:rewind-operator' "$KUBECONFIG" > "$state/kubeconfig-operator.yaml"
  operator_kubeconfig=$state/kubeconfig-operator.yaml
fi

# Established is not yet creatable: the mutating admission policy learns a new kind's schema a
# few seconds later (503 "Resource kind … not found" until then). Wait for a server-side dry run.
for attempt in $(seq 1 90); do
  "$KUBECTL" create --dry-run=server -f - >/dev/null 2>&1 <<'YAML' && break
apiVersion: rewind.dev/v1alpha1
kind: AccountBackup
metadata: {name: run-probe}
spec: {account: demo}
YAML
  ((attempt < 90)) || fail "AccountBackups are not creatable 90s after their CRD was Established: kubectl create --dry-run=server"
  sleep 1
done

KUBECONFIG=$operator_kubeconfig "$bin" run --namespace rewind-system --identity make-run --probe-addr 127.0.0.1:18080 --log-format text "${mover_args[@]}" > "$state/operator.log" 2>&1 &
operator=$!
stop_operator() {
  trap - INT TERM EXIT
  kill -TERM "$operator" 2>/dev/null || true
  wait "$operator" 2>/dev/null || true
  echo
  echo "run: operator stopped.$($on_bed && echo ' The test bed keeps running: make cluster-down stops it.')"
}
trap 'stop_operator; exit 130' INT
trap 'stop_operator; exit 143' TERM
trap stop_operator EXIT
echo "run:       operator started (pid $operator, log $state/operator.log)"
took

step 4/6 "the sample account demo (config/samples/account.yaml)"
sample=$(cat config/samples/account.yaml)
if $on_bed; then
  # On the bed the database and the uploads run on the real node, from the bed's own images.
  placement="  nodeSelector: {${REAL_NODE_LABEL%%=*}: ${REAL_NODE_LABEL#*=}}\n  tolerations: [{key: $REAL_NODE_TAINT, operator: Exists, effect: NoSchedule}]"
  sample=$(sed -e "s|^  # rewind.dev/sample: placement$|$placement|" \
    -e "s|image: postgres:15$|image: $IMAGE_POSTGRES\n    imagePullPolicy: Never|" \
    -e "s|image: busybox:1.36$|image: $IMAGE_SHELL\n    imagePullPolicy: Never|" <<<"$sample")
fi
"$KUBECTL" apply -f - >/dev/null <<<"$sample"
for pod in db-0 uploads; do
  "$KUBECTL" -n demo-shop wait --for=condition=Ready "pod/$pod" --timeout=180s >/dev/null \
    || fail "pod demo-shop/$pod is not Ready after 180 s: kubectl -n demo-shop describe pod $pod"
done
psql() { "$KUBECTL" -n "$1" exec -i db-0 -- psql -X -At -v ON_ERROR_STOP=1; }
psql demo-shop >/dev/null <<'SQL'
CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, customer text, total numeric(10,2));
INSERT INTO orders SELECT g, 'customer ' || g, (g * 7 % 500) + 0.99 FROM generate_series(1, 1000) g
  ON CONFLICT DO NOTHING;
SQL
echo "run:       demo-shop: PostgreSQL (1,000 orders) and 13 uploaded files on PVCs, a token Secret,"
echo "run:       a Deployment, a CronJob, an Ingress; demo-blog: a ConfigMap"
took

step 5/6 "backup: kubectl rewind backup demo --wait"
timeout 300 "$bin" kubectl backup demo --notes "make run: the sample account" --wait >"$state/backup.out" || true
backup=$(head -1 "$state/backup.out")
[[ -n "$backup" ]] || fail "no AccountBackup was created: see $state/operator.log"
phase=$("$KUBECTL" get ab "$backup" -o jsonpath='{.status.phase}' 2>/dev/null || true)
"$KUBECTL" get ab "$backup"
[[ "$phase" == Completed ]] || fail "the backup ended ${phase:-not at all in 300 s}: kubectl rewind describe $backup; log $state/operator.log"
echo
"$bin" kubectl describe "$backup"
took

target=demo-shop-restored-$(date -u +%H%M%S)
step 6/6 "restore: kubectl rewind restore $backup --project demo-shop --to demo-shop=$target --wait"
echo "I understand" | timeout 300 "$bin" kubectl restore "$backup" --project demo-shop --to "demo-shop=$target" --wait >"$state/restore.out" || true
echo
restore=$(head -1 "$state/restore.out")
[[ -n "$restore" ]] || fail "no ProjectRestore was created: see $state/operator.log"
restore_phase=$("$KUBECTL" get projectrestore "$restore" -o jsonpath='{.status.phase}')
"$KUBECTL" get projectrestore "$restore"
[[ "$restore_phase" == Completed ]] || fail "the restore $restore ended ${restore_phase:-not at all in 300 s}: kubectl rewind log $restore"
"$KUBECTL" -n "$target" wait --for=condition=Ready pod/db-0 pod/uploads --timeout=120s >/dev/null \
  || fail "the restored pods in $target are not Ready: kubectl -n $target describe pods"
took

# What came back, beside the original.
rows() { psql "$1" <<<"SELECT count(*) || ' rows, md5 ' || left(md5(string_agg(id || customer || total, ',' ORDER BY id)), 8) FROM orders"; }
files() {
  "$KUBECTL" -n "$1" exec uploads -- sh -c 'cd /data && echo "$(find . -type f | wc -l) files, md5 $(find . -type f | sort | xargs md5sum | md5sum | cut -c1-8), LATEST -> $(readlink LATEST)"'
}
token() {
  local value
  value=$("$KUBECTL" -n "$1" get secret payment-api-key -o jsonpath='{.data.key}' | base64 -d)
  printf '%s... (%d chars)' "${value:0:4}" "${#value}"
}
suspended() { "$KUBECTL" -n "$1" get cronjob nightly-report -o jsonpath='{.spec.suspend}'; }
ingress() { "$KUBECTL" -n "$1" get ingress shop -o name >/dev/null 2>&1 && echo present || echo absent; }
verdict() { [[ "$1" == "$2" ]] && echo "${3:-equal}" || echo "${4:-DIFFERENT}"; }
row() { printf '  %-24s %-46s %-46s %s\n' "$@"; }

echo
echo "run: what came back — demo-shop beside $target:"
row "" "demo-shop" "$target" ""
a=$(rows demo-shop); b=$(rows "$target")
row "database orders" "$a" "$b" "$(verdict "$a" "$b" "equal (dump loaded into the restored pod)")"
a=$(files demo-shop); b=$(files "$target")
row "uploads volume" "$a" "$b" "$(verdict "$a" "$b" "equal (PVC from the snapshot$($on_bed && echo '; also copied into the repository'))")"
a=$(token demo-shop); b=$(token "$target")
same_token=$("$KUBECTL" -n demo-shop get secret payment-api-key -o jsonpath='{.data.key}')
new_token=$("$KUBECTL" -n "$target" get secret payment-api-key -o jsonpath='{.data.key}')
row "token payment-api-key" "$a" "$b" "$(verdict "$same_token" "$new_token" "NOT regenerated" "regenerated (values masked)")"
row "CronJob nightly-report" "suspend=$(suspended demo-shop)" "suspend=$(suspended "$target")" "suspended: the copy does not run it twice"
reason=$("$KUBECTL" get projectrestore "$restore" -o jsonpath='{range .status.skipped[?(@.kind=="Ingress")]}{.reason}{end}')
row "Ingress shop" "$(ingress demo-shop)" "$(ingress "$target")" "left out: ${reason:-see kubectl rewind log $restore}"

cat <<EOF

run: the operator keeps running with its log below; Ctrl-C stops it. Try, in another terminal
run: (with KUBECONFIG=${KUBECONFIG:-~/.kube/config} and \`make install-plugin\` for \`kubectl rewind\`):
run:   kubectl rewind list demo                  # backups of the account, with size and what they added
run:   kubectl rewind describe $backup    # what the backup holds
run:   kubectl rewind restores demo              # restores, their phase and targets
run:   kubectl rewind restore $backup --project demo-blog --wait   # the other project
run:   kubectl -n $target get all,pvc,secrets    # the restored shop
run: --- operator log ($state/operator.log) ---
EOF
tail -n 5 -f --pid="$operator" "$state/operator.log" &
wait "$operator"
