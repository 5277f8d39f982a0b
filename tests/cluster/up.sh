#!/usr/bin/env bash
# `make cluster-up`: a real Kubernetes 1.36 control plane (kwok, binary runtime) with a simulated
# kwok node and a real one (kubelet, containerd, runc, CNI: node.sh), CSI snapshots, pod exec onto
# this host, an S3 server and PostgreSQL; writes .testbed/env.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
started_at=$SECONDS

MOTO_VERSION=5.1.22
KWOK_VERSION=v0.8.0 # keep equal to build.sh
STORAGE_CLASS=rewind-hostpath
SNAPSHOT_CLASS=rewind-hostpath-snapshots
CSI_DRIVER=hostpath.csi.rewind.dev
S3_BUCKET=rewind-testbed

healthy() {
  [[ -f $state/env ]] || return 1
  for name in csi-driver csi-provisioner csi-snapshotter snapshot-controller s3 containerd kubelet; do
    alive "$name" || return 1
  done
  [[ -f $state/postgres/data/postmaster.pid ]] || return 1
  KUBECONFIG=$kubeconfig "$state/bin/kubectl" get --raw /readyz >/dev/null 2>&1
}

if healthy; then
  say "already running (state in $state); nothing to do. Its settings:"
  cat "$state/env" >&2
  exit 0
fi
if [[ -d $state ]]; then
  say "found a half-started or stopped bed in $state: cleaning it up first"
  "$(dirname "$0")/down.sh"
fi
mkdir -p "$state" "$pids" "$logs"

# 1. Binaries (cached by pin) and host packages.
bin=$("$(dirname "$0")/build.sh")
ln -sfn "$bin" "$state/bin"
echo "$bin" >"$state/bin-dir"
export PATH=$bin:$PATH
"$(dirname "$0")/host-packages.sh"

# 2. The control plane.
say "starting kube-apiserver, etcd, controller-manager, scheduler and kwok (kwokctl, binary runtime)"
# Patches of kwokctl's components. kwokctl's binary runtime starts kwok with --manage-all-nodes,
# which would also drive the real node (tests/cluster/node.sh) and its pods: kwok manages only the
# nodes kwokctl makes (annotation kwok.x-k8s.io/node=fake), and ignores pods on other nodes. The
# API server reaches the real kubelet (exec, logs) with kwokctl's admin certificate (system:masters).
cluster_pki=$KWOK_WORKDIR/clusters/$cluster_name/pki
cat >"$state/kwokctl.yaml" <<YAML
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
componentsPatches:
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: "false", override: true}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
- name: kube-scheduler
  extraArgs:
  - {key: leader-elect, value: "false"}
- name: kube-controller-manager
  extraArgs:
  - {key: leader-elect, value: "false"}
- name: kube-apiserver
  extraArgs:
  - {key: kubelet-client-certificate, value: $cluster_pki/admin.crt}
  - {key: kubelet-client-key, value: $cluster_pki/admin.key}
  - {key: kubelet-preferred-address-types, value: InternalIP}
YAML
# The scheduler and controller manager run without leader election: the bed has one of each and
# no supervisor, and with it they exit ("Leaderelection lost") when the API server is away for a
# few seconds (the chaos suite restarts it) — a cluster's kubelet would restart them, nothing here.
# InternalIP first: the real node's Hostname address (its node name) resolves nowhere. kwok's
# node then gets 127.0.0.1 as its InternalIP (kwokctl's default is a documentation address), where
# kwok serves exec and logs for it.
"$bin/kwokctl" --config "$state/kwokctl.yaml" create cluster --name "$cluster_name" --runtime binary \
  --kubeconfig "$state/kubeconfig-kwokctl" \
  --kube-apiserver-binary "$bin/kube-apiserver" \
  --kube-controller-manager-binary "$bin/kube-controller-manager" \
  --kube-scheduler-binary "$bin/kube-scheduler" \
  --etcd-binary "$bin/etcd" \
  --kwok-controller-binary "$bin/kwok" \
  --kube-authorization=true --kube-admission=true \
  --enable-crds Stage,Exec,ClusterExec,Logs,ClusterLogs,Attach,ClusterAttach,PortForward,ClusterPortForward \
  --wait 3m >"$logs/kwokctl.log" 2>&1 || die "kwokctl create cluster failed: see $logs/kwokctl.log"
export KUBECONFIG=$kubeconfig
kubectl() { "$bin/kubectl" "$@"; }
wait_for "the API server" 120 kubectl get --raw /readyz
# With the Stage CRD on, kwok simulates nodes and pods only through Stage objects: apply its
# "fast" stages (nodes Ready, pods Running and Ready at once) before the node exists.
kwok_dir=$(GOTOOLCHAIN=local go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
wait_for "kwok's fast stages to apply" 60 kubectl apply -k "$kwok_dir/kustomize/stage/fast"
"$bin/kwokctl" scale node --name "$cluster_name" --replicas 1 --param '.nodeIPs=["127.0.0.1"]' >>"$logs/kwokctl.log" 2>&1 \
  || die "kwokctl could not create a node: see $logs/kwokctl.log"
wait_for "the kwok node" 60 kubectl wait --for=condition=Ready node -l type=kwok --timeout=5s

# 2b. The real node: images built from Debian's packages (cached), containerd, kubelet.
mkdir -p "$state/node"
"$(dirname "$0")/images.sh" "$state/node/images.env" || die "building the node's images failed"
"$(dirname "$0")/node.sh" up "$bin" "$state/node/images.env"
real_node=$(cat "$state/node/name")
real_node_ip=$(cat "$state/node/ip")

# 3. CSI: snapshot CRDs, the driver and the sidecars as local processes.
crd_dir=$(cd "$(dirname "$0")/csi" && GOTOOLCHAIN=local go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)/config/crd
kubectl apply -f "$crd_dir/snapshot.storage.k8s.io_volumesnapshotclasses.yaml" \
  -f "$crd_dir/snapshot.storage.k8s.io_volumesnapshotcontents.yaml" \
  -f "$crd_dir/snapshot.storage.k8s.io_volumesnapshots.yaml" >/dev/null
wait_for "the snapshot CRDs to be Established" 60 crds_established "$bin/kubectl" \
  volumesnapshots.snapshot.storage.k8s.io volumesnapshotcontents.snapshot.storage.k8s.io \
  volumesnapshotclasses.snapshot.storage.k8s.io
csi_state=$state/csi/volumes
csi_socket=$state/csi/csi.sock
mkdir -p "$csi_state"
# The driver also serves the Node service for the real kubelet and registers itself with it.
start csi-driver "$bin/hostpath" --endpoint "unix://$csi_socket" --statedir "$csi_state" \
  --nodeid "$real_node" --kubelet-registration-dir "$(cat "$state/node/registration-dir")"
wait_for "the CSI driver socket" 30 test -S "$csi_socket"
csi_registered() {
  [[ " $(kubectl get csinode "$real_node" -o 'jsonpath={.spec.drivers[*].name}' 2>/dev/null) " == *" $CSI_DRIVER "* ]]
}
wait_for "the CSI driver's registration with the real kubelet (CSINode $real_node)" 60 csi_registered
# The driver copies a volume's bytes while CreateSnapshot/CreateVolume wait (a tarball), where a
# storage system answers at once and copies behind: the sidecars wait 5 minutes, not 1, so a
# 2 GB volume snapshots (volume_copy_e2e's memory test) instead of failing DeadlineExceeded.
start csi-provisioner "$bin/csi-provisioner" --kubeconfig "$kubeconfig" --csi-address "$csi_socket" \
  --leader-election=false --timeout 300s --extra-create-metadata
start csi-snapshotter "$bin/csi-snapshotter" --kubeconfig "$kubeconfig" --csi-address "$csi_socket" \
  --leader-election=false --timeout 300s
start snapshot-controller "$bin/snapshot-controller" --kubeconfig "$kubeconfig" --leader-election=false
# Applied with retries: a kind whose CRD was just Established may still answer 503 for a moment.
cat >"$state/csi/objects.yaml" <<YAML
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: $CSI_DRIVER}
spec: {attachRequired: false, podInfoOnMount: false, fsGroupPolicy: File}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: $CSI_DRIVER
volumeBindingMode: Immediate
reclaimPolicy: Delete
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: $SNAPSHOT_CLASS
  annotations: {snapshot.storage.kubernetes.io/is-default-class: "true"}
driver: $CSI_DRIVER
deletionPolicy: Delete
YAML
wait_for "the CSI driver, StorageClass and VolumeSnapshotClass to apply" 60 kubectl apply -f "$state/csi/objects.yaml"

# 4. S3: moto's server with a bucket, on the real node's bridge address: the operator on this
# host and the mover pods on the node reach it at one URL (on loopback, pods could not).
venv=${REWIND_CACHE:-$HOME/.cache/rewind}/venv-moto-$MOTO_VERSION
if [[ ! -x $venv/bin/moto_server ]]; then
  say "installing moto[server] $MOTO_VERSION into $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed: apt-get install python3-venv"
  "$venv/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" || die "pip install moto[server] failed (PyPI reachable?)"
fi
s3_port=$(free_port)
start s3 "$venv/bin/moto_server" -H "$real_node_ip" -p "$s3_port"
wait_for "the S3 server" 60 port_in_use "$s3_port" "$real_node_ip"
# A listening port is not yet a serving S3 API: the bucket is created (and then listed) with retries.
make_bucket() {
  AWS_ACCESS_KEY_ID=testbed AWS_SECRET_ACCESS_KEY=testbed-secret "$venv/bin/python" -c "
import boto3
s3 = boto3.client('s3', endpoint_url='http://$real_node_ip:$s3_port', region_name='us-east-1')
if '$S3_BUCKET' not in [b['Name'] for b in s3.list_buckets().get('Buckets', [])]:
    s3.create_bucket(Bucket='$S3_BUCKET')
s3.head_bucket(Bucket='$S3_BUCKET')
"
}
wait_for "the S3 bucket $S3_BUCKET" 60 make_bucket

# 5. PostgreSQL (Debian's), as the postgres user, trust auth on loopback only.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found: apt-get install postgresql"
pg_port=$(free_port)
mkdir -p "$state/postgres"
echo "$pg_bin" >"$state/postgres/bindir"
chown postgres "$state/postgres"
runuser -u postgres -- "$pg_bin/initdb" -D "$state/postgres/data" -U postgres --auth=trust >"$logs/postgres-init.log" 2>&1 \
  || die "initdb failed: see $logs/postgres-init.log"
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$state/postgres/data" -l "$state/postgres/server.log" -w \
  -o "-p $pg_port -k $state/postgres -c listen_addresses=127.0.0.1" start >/dev/null \
  || die "PostgreSQL did not start: see $state/postgres/server.log"

# 6. The CSI chain serves (a socket and started sidecars are not yet a provisioned volume): a
# probe claim must bind and its snapshot become ready before the bed says it is up.
probe_ns=testbed-probe
cat >"$state/csi/probe.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $probe_ns}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: probe, namespace: $probe_ns}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}, storageClassName: $STORAGE_CLASS}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: probe, namespace: $probe_ns}
spec: {volumeSnapshotClassName: $SNAPSHOT_CLASS, source: {persistentVolumeClaimName: probe}}
YAML
wait_for "the probe volume and snapshot to apply" 60 kubectl apply -f "$state/csi/probe.yaml"
wait_for "a probe volume and its snapshot (CSI driver, provisioner, snapshotter, snapshot controller)" 90 \
  pvc_bound_and_snapshot_ready "$bin/kubectl" "$probe_ns"
kubectl delete namespace "$probe_ns" --wait=false >/dev/null

# 7. Pod exec runs on this host. kwok picks the first ClusterExec whose selector matches, in no
# fixed order, so the bed installs none: tests bind each namespace they exec into (tests/support).

cat >"$state/env" <<ENV
KUBECONFIG=$kubeconfig
TESTBED_BIN=$bin
KUBECTL=$bin/kubectl
HELM=$bin/helm
CSI_DRIVER=$CSI_DRIVER
CSI_STATE_DIR=$csi_state
STORAGE_CLASS=$STORAGE_CLASS
SNAPSHOT_CLASS=$SNAPSHOT_CLASS
S3_ENDPOINT=http://$real_node_ip:$s3_port
S3_BUCKET=$S3_BUCKET
S3_SERVER=$venv/bin/moto_server
AWS_ACCESS_KEY_ID=testbed
AWS_SECRET_ACCESS_KEY=testbed-secret
AWS_REGION=us-east-1
PGHOST=127.0.0.1
PGPORT=$pg_port
PGUSER=postgres
PG_BIN=$pg_bin
REAL_NODE=$real_node
REAL_NODE_LABEL=rewind.dev/testbed-node=real
REAL_NODE_TAINT=rewind.dev/real-node
CONTAINERD_ADDRESS=$(cat "$state/node/containerd-address")
$(grep -E '^IMAGE_(PAUSE|SHELL|POSTGRES)=' "$state/node/images.env")
ENV
say "up in $((SECONDS - started_at))s; settings in $state/env"
