//! Proves the bed's real node (tests/cluster/node.sh): a kubelet 1.36 with containerd, runc and
//! CNI beside kwok's simulated node. Pods on it run real processes from the bed's own images
//! (`IMAGE_SHELL`, `IMAGE_POSTGRES`, imported into containerd, `imagePullPolicy: Never`), `kubectl
//! logs` and `kubectl exec` go through that kubelet, and CSI volumes are bind-mounted by the
//! bed's driver, and the `rewind` binary under test runs there from its own image
//! (`tests/cluster/rewind-image.sh`), as mover pods will. On a REWIND_E2E_KUBECONFIG cluster these
//! tests are skipped (no REAL_NODE).

mod support;

use std::time::Duration;

use support::Bed;
use support::real_node::{RealNode, apply_in, psql_in, rewind_image, wait_ready};

const WAIT: Duration = Duration::from_secs(120);

/// The mount points of this host below `needle`'s path fragment.
fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .expect("/proc/self/mounts")
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .filter(|mount| mount.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_real_node_runs_a_kubelet_and_kwok_keeps_only_its_own_node() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let kubelet = bed
        .jsonpath(&["node", &node.name], "{.status.nodeInfo.kubeletVersion}")
        .expect("the real node exists");
    assert!(
        kubelet.starts_with("v1.36."),
        "real node's kubelet is {kubelet}"
    );
    let runtime = bed
        .jsonpath(
            &["node", &node.name],
            "{.status.nodeInfo.containerRuntimeVersion}",
        )
        .unwrap_or_default();
    assert!(
        runtime.starts_with("containerd://"),
        "real node's runtime is {runtime}"
    );
    assert_eq!(
        bed.jsonpath(
            &["node", &node.name],
            r#"{.status.conditions[?(@.type=="Ready")].status}"#
        )
        .as_deref(),
        Some("True")
    );
    // kwok's node is still there and still kwok's; kwok does not claim the real node.
    let kwok_nodes = bed
        .jsonpath(
            &["nodes", "-l", "type=kwok"],
            "{.items[*].status.nodeInfo.kubeletVersion}",
        )
        .expect("kwok's node is still there");
    assert!(
        kwok_nodes.starts_with("kwok-"),
        "kwok's node reports {kwok_nodes}"
    );
    let annotations = bed
        .jsonpath(&["node", &node.name], "{.metadata.annotations}")
        .unwrap_or_default();
    assert!(
        !annotations.contains("kwok.x-k8s.io/node"),
        "the real node must not carry kwok's annotation: {annotations}"
    );
}

#[test]
fn a_pod_on_the_real_node_logs_and_execs_through_the_kubelet() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let project = bed.namespace("real-exec");
    let ns = project.name.as_str();
    apply_in(
        &bed,
        ns,
        &node.shell_pod(
            "hello",
            "echo hello from $(hostname); touch /tmp/ready; exec sleep 3600",
            "",
            "    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}\n",
        ),
    );
    wait_ready(&bed, ns, "hello");
    assert_eq!(
        bed.jsonpath(&["-n", ns, "pod", "hello"], "{.spec.nodeName}")
            .as_deref(),
        Some(node.name.as_str())
    );
    let logs = bed.kubectl_ok(&["-n", ns, "logs", "hello"]);
    assert_eq!(logs.trim(), "hello from hello", "kubectl logs: {logs:?}");

    // exec: the command runs in the container (its own PID namespace: sleep is PID 1).
    let comm = bed.kubectl_ok(&["-n", ns, "exec", "hello", "--", "cat", "/proc/1/comm"]);
    assert_eq!(comm.trim(), "sleep");
    // The exit status comes back (kubectl exits with it).
    let failed = bed.kubectl(&[
        "-n",
        ns,
        "exec",
        "hello",
        "--",
        "sh",
        "-c",
        "echo out; exit 7",
    ]);
    let err = failed.expect_err("a command exiting 7 must fail kubectl exec");
    assert!(err.contains("exit code 7"), "kubectl exec's error: {err}");
    // The end of stdin reaches the command (kwok's exec never passes it on; a kubelet does).
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let counted = bed
        .kubectl_with_stdin(
            &["-n", ns, "exec", "-i", "hello", "--", "wc", "-c"],
            Some(&payload),
        )
        .expect("exec -i with stdin");
    assert_eq!(counted.trim(), payload.len().to_string());
}

#[test]
fn a_job_on_the_real_node_reports_its_exit_code() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let project = bed.namespace("real-job");
    let ns = project.name.as_str();
    let job = |name: &str, code: u8| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n{placement}      containers:\n      - {{name: main, image: {image}, imagePullPolicy: Never, command: [sh, -c, 'echo job {name}; exit {code}']}}\n",
            placement = node.placement(6),
            image = node.shell,
        )
    };
    apply_in(&bed, ns, &job("ok", 0));
    apply_in(&bed, ns, &job("fails", 3));
    let condition = |name: &str, kind: &str| {
        bed.jsonpath(
            &["-n", ns, "job", name],
            &format!(r#"{{.status.conditions[?(@.type=="{kind}")].status}}"#),
        )
        .as_deref()
            == Some("True")
    };
    bed.wait_until(
        "job ok to Complete",
        WAIT,
        || condition("ok", "Complete").then_some(()),
        || bed.describe(ns),
    );
    bed.wait_until(
        "job fails to Fail",
        WAIT,
        || condition("fails", "Failed").then_some(()),
        || bed.describe(ns),
    );
    let exit_code = bed
        .jsonpath(
            &["-n", ns, "pods", "-l", "job-name=fails"],
            "{.items[0].status.containerStatuses[0].state.terminated.exitCode}",
        )
        .expect("the failed job's pod reports how its container ended");
    assert_eq!(exit_code, "3");
    let logs = bed.kubectl_ok(&["-n", ns, "logs", "job/fails"]);
    assert_eq!(logs.trim(), "job fails");
}

#[test]
fn a_csi_volume_is_mounted_into_a_real_pod_and_unmounted_when_its_namespace_goes() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let Some(state_dir) = bed.require("CSI_STATE_DIR", "reading volume contents from the host")
    else {
        return;
    };
    let project = bed.namespace("real-csi");
    let ns = project.name.clone();
    apply_in(
        &bed,
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Mi}}}\n",
    );
    bed.wait_for_phase(&ns, "pvc", "data", "Bound", WAIT);
    let volume = bed
        .jsonpath(&["-n", &ns, "pvc", "data"], "{.spec.volumeName}")
        .expect("PV");
    let handle = bed
        .jsonpath(&["pv", &volume], "{.spec.csi.volumeHandle}")
        .expect("handle");
    let dir = std::path::Path::new(&state_dir).join(&handle);
    std::fs::write(dir.join("from-host.txt"), "written on the host\n")
        .expect("write into the volume");

    apply_in(
        &bed,
        &ns,
        &node.shell_pod(
            "reader",
            "cat /data/from-host.txt; echo written in the pod > /data/from-pod.txt; touch /tmp/ready; exec sleep 3600",
            "  securityContext: {fsGroup: 2000}\n",
            "    readinessProbe: {exec: {command: [test, -f, /tmp/ready]}, periodSeconds: 1}\n    volumeMounts: [{name: data, mountPath: /data}]\n  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n",
        ),
    );
    wait_ready(&bed, &ns, "reader");
    assert_eq!(
        bed.kubectl_ok(&["-n", &ns, "logs", "reader"]).trim(),
        "written on the host"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("from-pod.txt")).expect("the pod's file on the host"),
        "written in the pod\n"
    );
    // fsGroupPolicy File: the kubelet gave the volume to the pod's fsGroup.
    let group = bed.kubectl_ok(&[
        "-n", &ns, "exec", "reader", "--", "stat", "-c", "%g", "/data",
    ]);
    assert_eq!(group.trim(), "2000");
    let uid = bed
        .jsonpath(&["-n", &ns, "pod", "reader"], "{.metadata.uid}")
        .expect("pod uid");
    assert!(
        !mounts_containing(&format!("{uid}/volumes/kubernetes.io~csi")).is_empty(),
        "the CSI volume is not mounted for pod {uid}"
    );

    // Deleting the namespace stops the pod's containers and unpublishes its volume.
    drop(project);
    bed.wait_until(
        "the namespace to be deleted",
        WAIT,
        || {
            bed.kubectl(&["get", "namespace", &ns])
                .is_err()
                .then_some(())
        },
        || bed.describe(&ns),
    );
    bed.wait_until(
        "the pod's volume mounts to go",
        WAIT,
        || mounts_containing(&uid).is_empty().then_some(()),
        || format!("still mounted: {:?}", mounts_containing(&uid)),
    );
    if let (Some(bin), Some(address)) = (bed.var("TESTBED_BIN"), bed.var("CONTAINERD_ADDRESS")) {
        let running = std::process::Command::new(format!("{bin}/crictl"))
            .args([
                "--runtime-endpoint",
                &format!("unix://{address}"),
                "ps",
                "-q",
            ])
            .args(["--label", &format!("io.kubernetes.pod.uid={uid}")])
            .output()
            .expect("crictl");
        assert!(
            running.status.success(),
            "crictl: {}",
            String::from_utf8_lossy(&running.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&running.stdout).trim(),
            "",
            "containers of the deleted pod still run"
        );
    }
}

#[test]
fn postgresql_on_a_csi_volume_answers_psql_over_exec() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let project = bed.namespace("real-pg");
    let ns = project.name.as_str();
    apply_in(
        &bed,
        ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: pgdata}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 100Mi}}}\n",
    );
    apply_in(
        &bed,
        ns,
        &node.postgres_pod("db", "    {}", "persistentVolumeClaim: {claimName: pgdata}"),
    );
    wait_ready(&bed, ns, "db");
    let out = psql_in(
        &bed,
        ns,
        "db",
        "create table t (x int); insert into t values (42), (43); select sum(x) from t;",
    );
    assert_eq!(out.lines().last(), Some("85"), "psql printed {out:?}");
    let version = psql_in(&bed, ns, "db", "show server_version");
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "server_version {version:?}"
    );
    // The data directory lives on the CSI volume.
    assert_eq!(
        psql_in(&bed, ns, "db", "show data_directory"),
        "/var/lib/postgresql/data/pgdata"
    );
}

#[test]
fn the_rewind_image_runs_on_the_real_node_under_pod_security_restricted() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let image = rewind_image(&bed);
    let project = bed.namespace("real-rewind");
    let ns = project.name.as_str();
    // The namespace refuses any pod that is not `restricted`: the image must run as a non-root
    // user with nothing added, as a backup mover of a single-owner volume will.
    bed.kubectl_ok(&[
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: version}}\nspec:\n{placement}  restartPolicy: Never\n  securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}\n  containers:\n  - name: rewind\n    image: {image}\n    imagePullPolicy: Never\n    args: [--version]\n    securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}\n",
        placement = node.placement(2),
    );
    apply_in(&bed, ns, &pod);
    let phase = bed.wait_until(
        "pod version to end",
        WAIT,
        || {
            bed.jsonpath(&["-n", ns, "pod", "version"], "{.status.phase}")
                .filter(|phase| phase == "Succeeded" || phase == "Failed")
        },
        || bed.describe(ns),
    );
    let exit_code = bed.jsonpath(
        &["-n", ns, "pod", "version"],
        "{.status.containerStatuses[0].state.terminated.exitCode}",
    );
    let logs = bed.kubectl_ok(&["-n", ns, "logs", "version"]);
    assert_eq!(
        (phase.as_str(), exit_code.as_deref()),
        ("Succeeded", Some("0")),
        "rewind --version in {image}: {logs}"
    );
    assert!(logs.starts_with("rewind "), "{logs}");
}
