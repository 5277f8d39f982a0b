#!/usr/bin/env bash
# The bed's real node: containerd + runc + CNI (bridge, host-local, loopback) + kubelet 1.36, and
# a client certificate for it. up.sh then starts the CSI driver, which registers itself with this
# kubelet (tests/cluster/csi/hostpath/node.go). See "The real node" in docs/testbed.md.
#
#   node.sh up BIN_DIR IMAGES_ENV   start it against the running control plane, wait until Ready
#                                   (IMAGES_ENV: written by images.sh)
#   node.sh down                    stop it: kubelet, pods, containerd, shims, mounts, bridge, cgroups
#
# Everything lives under .testbed/node/ (containerd's root and state, the kubelet's root dir, pod
# logs, CNI state), in a cgroup parent and on a bridge whose names derive from that path, so two
# beds on one machine do not meet. Sourced helpers: lib.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

node_dir=$state/node
node_name=rewind-real-node
suffix=$(printf '%s' "$state" | sha256sum | cut -c1-8)
bridge=rwtb$suffix                                   # <= 15 characters
cgroup_root=/rewind-testbed-$suffix
subnet_octet=$((16#${suffix:0:2} % 200 + 20))        # 10.88.<20..219>.0/24
pod_subnet=10.88.$subnet_octet.0/24
node_ip=10.88.$subnet_octet.1                        # the bridge's address: the node's InternalIP
containerd_sock=$node_dir/containerd/containerd.sock
cni_bin_dir=/usr/lib/cni                             # Debian's containernetworking-plugins
kubelet_root=$node_dir/kubelet

cgroup_controllers() {
  local d
  for d in /sys/fs/cgroup/*/; do
    d=${d%/}
    [[ -f $d/cgroup.procs ]] && printf '%s\n' "$d"
  done
}

node_up() {
  local bin=$1 images_env=$2
  local kubectl="$bin/kubectl --kubeconfig $kubeconfig"
  local pki=$KWOK_WORKDIR/clusters/$cluster_name/pki
  mkdir -p "$node_dir"/{containerd,cni/net.d,cni/ipam,pki,pod-logs} "$kubelet_root/plugins_registry"
  # shellcheck disable=SC1090
  source "$images_env"
  local c
  for c in containerd containerd-shim-runc-v2 ctr runc ip openssl; do
    command -v "$c" >/dev/null || die "'$c' is missing (tests/cluster/host-packages.sh installs it)"
  done
  for c in bridge host-local loopback; do
    [[ -x $cni_bin_dir/$c ]] || die "CNI plugin $cni_bin_dir/$c is missing (apt-get install containernetworking-plugins)"
  done
  echo "$node_name" >"$node_dir/name"
  echo "$node_ip" >"$node_dir/ip"
  echo "$kubelet_root/plugins_registry" >"$node_dir/registration-dir"
  echo "$containerd_sock" >"$node_dir/containerd-address"

  # The node's address: a bridge on this host that CNI also uses for the pods (gateway .1).
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$node_ip/24" dev "$bridge"
  fi
  ip link set "$bridge" up

  # Cgroup parent of every pod (cgroup v1: one directory in each controller's hierarchy).
  local d
  while read -r d; do mkdir -p "$d$cgroup_root"; done < <(cgroup_controllers)

  # containerd: CRI with runc, overlayfs, our CNI config, and the locally built sandbox image.
  cat >"$node_dir/containerd/config.toml" <<TOML
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE_PAUSE"
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pod network namespaces are bind-mounted under our state dir (not /run/netns), so the unmount
  # loop of node.sh down also frees the ones of pods that CRI could not remove.
  netns_mounts_under_state_dir = true
  # This machine's root lacks CAP_SYS_RESOURCE: lowering a process's oom_score_adj (CRI gives the
  # sandbox -998, Guaranteed pods -997) fails in runc ("failed to update /proc/self/oom_score_adj:
  # Permission denied"). Clamp it to containerd's own, as for rootless containerd.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$node_dir/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin_dir"
    conf_dir = "$node_dir/cni/net.d"
TOML
  cat >"$node_dir/cni/net.d/10-rewind.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "rewind-testbed-$suffix",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$node_dir/cni/ipam",
              "ranges": [[{"subnet": "$pod_subnet", "gateway": "$node_ip"}]]}},
    {"type": "loopback"}
  ]
}
JSON
  start containerd containerd --config "$node_dir/containerd/config.toml"
  wait_for "containerd" 30 ctr --address "$containerd_sock" version

  # Images: imported, and labelled pinned so that no garbage collection removes them.
  local tarball
  for tarball in $IMAGE_TARBALLS; do
    ctr --address "$containerd_sock" -n k8s.io images import --no-unpack "$tarball" >/dev/null \
      || die "could not import $tarball into containerd: see $logs/containerd.log"
  done
  for image in $IMAGE_NAMES; do
    ctr --address "$containerd_sock" -n k8s.io images label "$image" io.cri-containerd.pinned=pinned >/dev/null
  done

  # The kubelet's client certificate: system:node:<name> in system:nodes (the Node authorizer and
  # NodeRestriction then treat it as a real node), signed by kwokctl's CA.
  openssl req -new -newkey rsa:2048 -nodes -keyout "$node_dir/pki/kubelet-client.key" \
    -subj "/O=system:nodes/CN=system:node:$node_name" -out "$node_dir/pki/kubelet-client.csr" 2>/dev/null
  openssl x509 -req -in "$node_dir/pki/kubelet-client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -CAserial "$node_dir/pki/ca.srl" -days 30 -out "$node_dir/pki/kubelet-client.crt" 2>/dev/null
  local server
  server=$($kubectl config view --minify -o 'jsonpath={.clusters[0].cluster.server}')
  cat >"$node_dir/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: bed
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: kubelet
  user: {client-certificate: "$node_dir/pki/kubelet-client.crt", client-key: "$node_dir/pki/kubelet-client.key"}
contexts:
- name: kubelet
  context: {cluster: bed, user: kubelet}
current-context: kubelet
YAML

  local kubelet_port
  kubelet_port=$(free_port)
  # failCgroupV1: false — since 1.35 the kubelet refuses to start on a cgroup v1 host unless told
  # otherwise; this machine (and CI's) mounts only cgroup v1 controllers (see docs/testbed.md).
  cat >"$node_dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
containerRuntimeEndpoint: unix://$containerd_sock
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzPort: 0
podLogsDir: $node_dir/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
registerWithTaints:
- {key: rewind.dev/real-node, value: "true", effect: NoSchedule}
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
enforceNodeAllocatable: []
resolvConf: /etc/resolv.conf
serializeImagePulls: false
YAML
  start kubelet "$bin/kubelet" --config "$node_dir/kubelet.yaml" --kubeconfig "$node_dir/kubeconfig" \
    --root-dir "$kubelet_root" --cert-dir "$node_dir/pki" --hostname-override "$node_name" \
    --node-ip "$node_ip" --node-labels "rewind.dev/testbed-node=real" --v 2
  node_ready() {
    alive kubelet || { echo "testbed: the kubelet exited: see $logs/kubelet.log" >&3; exit 1; }
    [[ $($kubectl get node "$node_name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
  }
  exec 3>&2
  wait_for "the real node $node_name (containerd, kubelet)" 120 node_ready
}

# our_pids: the processes of this bed's node that may outlive containerd: its shims (their command
# line names our containerd socket) and every process in our pods' cgroups.
our_pids() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address $containerd_sock" && echo "${p#/proc/}"
  done
  [[ -d /sys/fs/cgroup/pids$cgroup_root ]] && find "/sys/fs/cgroup/pids$cgroup_root" -name cgroup.procs -exec cat {} + 2>/dev/null
  return 0
}

node_down() {
  [[ -d $node_dir ]] || return 0
  local ids=() crictl
  crictl=$(cat "$state/bin-dir" 2>/dev/null)/crictl
  # Kubelet first, so that nothing restarts the pods we remove next.
  stop_pid kubelet
  if alive containerd; then
    mapfile -t ids < <(ctr --address "$containerd_sock" -n k8s.io containers ls -q 2>/dev/null)
    # Every pod sandbox through CRI: containers stopped, CNI DEL run (veth, IP), netns removed.
    [[ -x $crictl ]] && "$crictl" --runtime-endpoint "unix://$containerd_sock" --timeout 30s rmp --all --force >/dev/null 2>&1
  fi
  stop_pid containerd
  # Shims and container processes that outlived containerd (it does not stop them on exit; a
  # shim ignores SIGTERM).
  local pid n=0
  for pid in $(our_pids); do kill -9 "$pid" 2>/dev/null && n=$((n + 1)); done
  ((n == 0)) || { say "killed $n leftover shim and container processes"; sleep 1; }
  # Mounts below .testbed (container root file systems, pod volumes, CSI publications, pod network
  # namespaces), deepest first.
  local m mounts
  for _ in 1 2 3; do
    mapfile -t mounts < <(awk -v p="$state/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
    ((${#mounts[@]})) || break
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
  ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge" && say "removed bridge $bridge"
  # libcni's result cache is not configurable in containerd 1.6 (/var/lib/cni/results): drop our
  # pods' entries in case CRI could not run CNI DEL for them.
  local id
  for id in "${ids[@]}"; do rm -f /var/lib/cni/results/*-"$id"-*; done
  rm -f /var/lib/cni/results/rewind-testbed-"$suffix"-*
  # The kubelet's links in /var/log/containers (a fixed path) to our pods' logs.
  local link
  for link in /var/log/containers/*.log; do
    [[ $(readlink "$link") == "$node_dir/"* ]] && rm -f "$link"
  done
  # Cgroups: leaves first (rmdir fails on a cgroup that still has processes).
  local d
  while read -r d; do
    [[ -d $d$cgroup_root ]] || continue
    find "$d$cgroup_root" -depth -type d -exec rmdir {} \; 2>/dev/null
    [[ ! -d $d$cgroup_root ]] || say "could not remove $d$cgroup_root (processes left: $(our_pids | tr '\n' ' '))"
  done < <(cgroup_controllers)
}

case ${1:-} in
  up) node_up "$2" "$3" ;;
  down) node_down ;;
  *) echo "usage: $0 up BIN_DIR IMAGES_ENV | down" >&2; exit 2 ;;
esac
