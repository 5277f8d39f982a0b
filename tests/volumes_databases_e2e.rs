//! AccountBackup's volume snapshots and database dumps on the test bed: they outlive the
//! project namespace, a restored project gets its own PostgreSQL back on its own restored PVC
//! with the dump loaded into it, and every failing dump or volume fails alone, with its reason.
//! Databases run as real pods on the bed's real node (PostgreSQL 15, exec through its
//! kubelet): no database is prepared by the test, none is shared.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::operator::Operator;
use support::real_node::{RealNode, apply_in, psql_in, wait_ready};
use support::{Bed, status_of, unique};

const DONE: Duration = Duration::from_secs(150);

fn operator(bed: &Bed) -> &'static Operator {
    Operator::shared(
        bed,
        &[
            "--dump-timeout",
            "90s",
            "--hook-timeout",
            "6s",
            "--snapshot-timeout",
            "60s",
        ],
    )
}

/// Row count and a digest of every row of `customers`, read inside the database pod.
fn table_checksum(bed: &Bed, namespace: &str, pod: &str) -> String {
    psql_in(
        bed,
        namespace,
        pod,
        "SELECT count(*) || ':' || md5(string_agg(id || '/' || name, ',' ORDER BY id)) FROM customers",
    )
}

/// Waits until the `kind` object `name` reaches a final phase; returns its status.
fn wait_finished_kind(bed: &Bed, operator: &Operator, kind: &str, name: &str) -> Value {
    bed.wait_until(
        &format!("{kind} {name} to finish"),
        DONE,
        || {
            let status = status_of(bed, kind, name);
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || {
            format!(
                "status: {}\n--- operator log ---\n{}",
                status_of(bed, kind, name),
                operator.log_tail()
            )
        },
    )
}

fn wait_finished(bed: &Bed, operator: &Operator, name: &str) -> Value {
    wait_finished_kind(bed, operator, "accountbackup", name)
}

#[test]
fn a_deleted_project_comes_back_with_its_own_postgresql_on_its_restored_volume_and_the_dump_loaded()
{
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "reading volumes and snapshots on the host")
    else {
        return;
    };
    let operator = operator(&bed);
    let account = unique("vol");
    let project = bed.project("vol", &account);
    let ns = project.name.clone();

    // A PostgreSQL pod on the real node, its data directory on a CSI PVC; a second PVC excluded.
    apply_in(
        &bed,
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: uploads, labels: {rewind.dev/exclude: \"true\"}}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    apply_in(
        &bed,
        &ns,
        &node.postgres_pod(
            "db-0",
            "    rewind.dev/database: postgres\n    rewind.dev/pre-backup: \"psql -c CHECKPOINT\"",
            "persistentVolumeClaim: {claimName: data}",
        ),
    );
    wait_ready(&bed, &ns, "db-0");
    psql_in(
        &bed,
        &ns,
        "db-0",
        "CREATE TABLE customers (id int primary key, name text); INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5000) g",
    );
    let expected_rows = table_checksum(&bed, &ns, "db-0");
    let original_table = psql_in(&bed, &ns, "db-0", "SELECT 'customers'::regclass::oid");

    let name = unique("volbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, &name);
    assert_eq!(
        status["phase"],
        "Completed",
        "{status}\n{}",
        operator.log_tail()
    );
    let volumes = status["volumeSnapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        volumes.len(),
        1,
        "one snapshot, the excluded PVC aside: {status}"
    );
    assert_eq!(volumes[0]["pvc"], "data");
    assert_eq!(volumes[0]["ready"], true);
    let snapshot_handle = volumes[0]["snapshotHandle"]
        .as_str()
        .expect("handle")
        .to_string();
    let excluded = status["excluded"].to_string();
    assert!(
        excluded.contains("uploads"),
        "the excluded PVC is listed: {status}"
    );
    let dumps = status["databaseDumps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(dumps.len(), 1, "{status}");
    assert!(
        dumps[0]["bytes"].as_u64().unwrap_or(0) > 1000
            && dumps[0]["sha256"].as_str().unwrap_or_default().len() == 64,
        "{status}"
    );

    // The accident backups exist for: the whole project namespace is deleted.
    drop(project);
    bed.wait_until(
        "the project namespace to be gone",
        DONE,
        || {
            bed.kubectl(&["get", "namespace", &ns])
                .is_err()
                .then_some(())
        },
        String::new,
    );
    let tarball = std::path::Path::new(&csi_state)
        .join("snapshots")
        .join(format!("{snapshot_handle}.tgz"));
    assert!(
        tarball.exists(),
        "the physical snapshot survives the namespace: {}",
        tarball.display()
    );
    let contents = bed.kubectl_ok(&[
        "get",
        "volumesnapshotcontents",
        "-o",
        "jsonpath={.items[*].status.snapshotHandle}",
    ]);
    assert!(
        !contents.contains(&snapshot_handle),
        "no VolumeSnapshotContent object is left for it: {contents}"
    );

    // Restored into a new namespace: the PostgreSQL pod comes back on the real node on its own
    // PVC made from the snapshot, and Rewind loads the dump into it once it is Ready.
    let target = unique("vol-back");
    let _cleanup = bed.adopt_namespace(&target);
    let restore = unique("volrestore");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {name}\n  targetNamespaces: {{{ns}: {target}}}\n"
    ));
    let restored = wait_finished_kind(&bed, operator, "projectrestore", &restore);
    assert_eq!(
        restored["phase"],
        "Completed",
        "{restored}\n{}",
        operator.log_tail()
    );
    assert_eq!(restored["restored"]["volumes"], 1, "{restored}");
    assert_eq!(restored["restored"]["databases"], 1, "{restored}");
    assert_eq!(
        bed.jsonpath(&["-n", &target, "pod", "db-0"], "{.spec.nodeName}")
            .as_deref(),
        Some(node.name.as_str()),
        "the restored database runs on the real node"
    );
    let restored_claim = bed
        .jsonpath(
            &["-n", &target, "pod", "db-0"],
            "{.spec.volumes[0].persistentVolumeClaim.claimName}",
        )
        .expect("the restored pod's claim");
    let source = bed
        .jsonpath(
            &["-n", &target, "pvc", &restored_claim],
            "{.spec.dataSource.kind}",
        )
        .unwrap_or_default();
    assert_eq!(
        source, "VolumeSnapshot",
        "the restored pod's PVC comes from the snapshot"
    );
    assert_eq!(
        table_checksum(&bed, &target, "db-0"),
        expected_rows,
        "the restored rows equal the original's"
    );
    // pg_restore --clean dropped and recreated the table: the rows are the dump's, not only
    // the snapshot's copy of the data directory.
    assert_ne!(
        psql_in(&bed, &target, "db-0", "SELECT 'customers'::regclass::oid"),
        original_table,
        "the dump was loaded into the restored database"
    );

    // Deleting the backup deletes the physical snapshot, through a temporary content, and its data.
    let snapshot_id = status["repositorySnapshot"]
        .as_str()
        .expect("snapshot")
        .to_string();
    bed.kubectl_ok(&["delete", "projectrestore", &restore, "--timeout=90s"]);
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=90s"]);
    let repo = tokio::runtime::Runtime::new().expect("runtime");
    assert!(
        repo.block_on(async { operator.repository().await.manifest(&snapshot_id).await })
            .is_err(),
        "the repository snapshot is released"
    );
    bed.wait_until(
        "the physical snapshot to be deleted",
        DONE,
        || (!tarball.exists()).then_some(()),
        || operator.log_tail(),
    );
    // Only this backup's handle: the suite's other tests delete their own snapshots meanwhile.
    let leftovers = bed.kubectl_ok(&[
        "get",
        "volumesnapshotcontents",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.source.snapshotHandle}{\"\\n\"}{end}",
    ]);
    let left: Vec<&str> = leftovers
        .lines()
        .filter(|line| line.ends_with(&format!(" {snapshot_handle}")))
        .collect();
    assert!(
        left.is_empty(),
        "no content of the deleted backup's snapshot is left, the temporary one included: {left:?}"
    );
}

#[test]
fn a_restore_whose_volume_snapshot_was_lost_with_the_storage_fails_that_volume_at_once_and_leaves_no_helper()
 {
    let bed = Bed::get();
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "removing a snapshot from the storage")
    else {
        return;
    };
    let operator = operator(&bed);
    let account = unique("lost");
    let project = bed.project("lost", &account);
    let ns = project.name.clone();
    apply_in(
        &bed,
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: files}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
    );
    bed.wait_for_phase(&ns, "pvc", "files", "Bound", DONE);
    let name = unique("lostbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, &name);
    assert_eq!(status["phase"], "Completed", "{status}");
    let handle = status["volumeSnapshots"][0]["snapshotHandle"]
        .as_str()
        .expect("the volume's snapshot handle")
        .to_string();

    // The storage system loses the snapshot after the backup: its data and its record.
    let snapshots = std::path::Path::new(&csi_state).join("snapshots");
    for file in [format!("{handle}.tgz"), format!("{handle}.json")] {
        std::fs::remove_file(snapshots.join(&file)).expect("remove the physical snapshot");
    }

    let target = unique("lost-back");
    let _cleanup = bed.adopt_namespace(&target);
    let restore = unique("lostrestore");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {name}\n  targetNamespaces: {{{ns}: {target}}}\n"
    ));
    let restored = wait_finished_kind(&bed, operator, "projectrestore", &restore);
    assert_eq!(restored["phase"], "PartiallyFailed", "{restored}");
    let failed = restored["failed"].as_array().cloned().unwrap_or_default();
    assert_eq!(failed.len(), 1, "only the volume failed: {restored}");
    assert_eq!(failed[0]["kind"], "PersistentVolumeClaim", "{restored}");
    assert_eq!(failed[0]["name"], "files", "{restored}");
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&handle) && reason.contains("restore the volume from another backup"),
        "the reason names the snapshot and what to do: {reason}"
    );
    assert!(
        !reason.contains("not ready within"),
        "the driver's answer fails the volume at once, not the snapshot timeout: {reason}"
    );
    // The rest of the project is back; no PVC waits Pending for a snapshot that cannot come.
    assert_eq!(
        bed.jsonpath(&["-n", &target, "configmap", "settings"], "{.data.mode}")
            .as_deref(),
        Some("fast")
    );
    assert!(
        bed.kubectl(&["-n", &target, "get", "pvc", "files"])
            .is_err(),
        "no PVC is left Pending in the restored namespace"
    );
    let uid = bed
        .jsonpath(&["projectrestore", &restore], "{.metadata.uid}")
        .expect("the restore's uid");
    let helper = rewind::restore::volumes::helper_name(&uid, &target, "files");
    assert!(
        bed.kubectl(&["get", "volumesnapshotcontent", &helper])
            .is_err(),
        "no helper content {helper} is left for the failed volume"
    );
    bed.kubectl_ok(&["delete", "projectrestore", &restore, "--timeout=90s"]);
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=90s"]);
}

#[test]
fn failing_dumps_and_an_unsnapshottable_volume_each_fail_alone_with_their_reason() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let operator = operator(&bed);
    let account = unique("faildb");
    let project = bed.project("faildb", &account);
    let ns = project.name.clone();
    let custom = |backup: &str| {
        format!(
            "    rewind.dev/database: custom\n    rewind.dev/backup-command: '{backup}'\n    rewind.dev/restore-command: cat"
        )
    };
    // Real containers on the real node: the commands run there, through its kubelet's exec.
    for (pod, command) in [
        ("exits-1", "echo some bytes; echo failing >&2; exit 1"),
        ("cut-off", "head -c 200000 /dev/zero; kill -9 $$"),
        ("hangs", "echo started; sleep 600"),
        ("works", "echo all good"),
    ] {
        apply_in(&bed, &ns, &node.annotated_shell_pod(pod, &custom(command)));
    }
    for pod in ["exits-1", "cut-off", "hangs", "works"] {
        wait_ready(&bed, &ns, pod);
    }
    let pv = unique("nosnap-pv");
    bed.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {pv}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  persistentVolumeReclaimPolicy: Retain\n  csi: {{driver: nosnap.e2e.rewind.dev, volumeHandle: {pv}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: legacy, namespace: {ns}}}\nspec: {{accessModes: [ReadWriteOnce], storageClassName: \"\", volumeName: {pv}, resources: {{requests: {{storage: 1Gi}}}}}}\n"
    ));
    bed.wait_for_phase(&ns, "pvc", "legacy", "Bound", DONE);

    let name = unique("failbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, &name);
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    let failed = status["failed"].as_array().cloned().unwrap_or_default();
    let reason = |kind: &str, item: &str| {
        failed
            .iter()
            .find(|f| f["kind"] == kind && f["name"] == item)
            .and_then(|f| f["reason"].as_str().map(String::from))
            .unwrap_or_else(|| panic!("{kind} {item} is not listed as failed: {status}"))
    };
    assert!(
        reason("Database", "exits-1").contains("exited with code 1")
            && reason("Database", "exits-1").contains("failing"),
        "{}",
        reason("Database", "exits-1")
    );
    assert!(
        ["137", "killed", "broke"]
            .iter()
            .any(|word| reason("Database", "cut-off").contains(word)),
        "{}",
        reason("Database", "cut-off")
    );
    assert!(
        reason("Database", "hangs").contains("did not finish within"),
        "{}",
        reason("Database", "hangs")
    );
    assert!(
        reason("PersistentVolumeClaim", "legacy").contains("nosnap.e2e.rewind.dev"),
        "{}",
        reason("PersistentVolumeClaim", "legacy")
    );
    let dumps: Vec<&str> = status["databaseDumps"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["pod"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(dumps, vec!["works"], "only the good dump counts: {status}");
    let activity = status["activity"].to_string();
    assert!(
        activity.contains("exits-1") && activity.contains("hangs"),
        "each failure is in the activity log: {activity}"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=90s"]);
    let _ = bed.kubectl(&["delete", "pv", &pv, "--wait=false"]);
}

#[test]
fn a_200_mb_database_dump_streams_through_with_flat_operator_memory() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let operator = operator(&bed);
    let account = unique("bigdump");
    let project = bed.project("bigdump", &account);
    let ns = project.name.clone();
    // A real PostgreSQL on the real node holding 200 MiB that does not compress.
    apply_in(
        &bed,
        &ns,
        &node.postgres_pod("big", "    rewind.dev/database: postgres", "emptyDir: {}"),
    );
    wait_ready(&bed, &ns, "big");
    psql_in(
        &bed,
        &ns,
        "big",
        "CREATE TABLE blobs (id int primary key, data bytea); ALTER TABLE blobs ALTER data SET STORAGE EXTERNAL; INSERT INTO blobs SELECT g, pg_read_binary_file('/dev/urandom', 0, 1048576) FROM generate_series(1, 200) g",
    );
    let before = operator.memory_mib("VmRSS:");
    let name = unique("bigdump");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, &name);
    assert_eq!(status["phase"], "Completed", "{status}");
    let bytes = status["databaseDumps"][0]["bytes"].as_u64().unwrap_or(0);
    assert!(
        bytes >= 200 * 1024 * 1024,
        "pg_dump of 200 MiB of random bytes is at least that big: {bytes} bytes\n{status}"
    );
    let peak = operator.peak_rss_mib();
    let rise_mib = (peak - before).max(0.0);
    eprintln!(
        "dump of {:.0} MB: operator RSS before {before:.0} MiB, peak after {peak:.0} MiB, rise {rise_mib:.0} MiB",
        bytes as f64 / 1e6
    );
    assert!(
        rise_mib <= 64.0,
        "the operator's RSS rose by {rise_mib:.0} MiB while streaming {bytes} bytes (limit 64)"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=120s"]);
}

/// A pod with hooks and a PVC beside it, in a new project of `account`.
fn hooked_project<'b>(
    bed: &'b Bed,
    account: &str,
    annotations: &str,
) -> support::TestNamespace<'b> {
    let project = bed.project("hooks", account);
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    bed.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    ));
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  annotations:\n{annotations}\nspec:\n  containers: [{{name: app, image: busybox}}]\n"
    );
    bed.kubectl_with_stdin(&["-n", &ns, "apply", "-f", "-"], Some(pod.as_bytes()))
        .expect("pod");
    bed.wait_for_phase(&ns, "pod", "app", "Running", DONE);
    bed.wait_for_phase(&ns, "pvc", "data", "Bound", DONE);
    project
}

#[test]
fn a_failing_pre_backup_hook_skips_its_projects_snapshots_unless_told_to_continue_and_post_hooks_always_run()
 {
    let bed = Bed::get();
    if bed.external {
        eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec");
        return;
    }
    let operator = operator(&bed);
    let markers = tempfile::tempdir().expect("temp dir");
    let marker = |name: &str| markers.path().join(name);
    let account = unique("hooks");
    // Policy fail (the default): the pre hook exits 3, so this project's volume is not snapshotted.
    let strict = hooked_project(
        &bed,
        &account,
        &format!(
            "    rewind.dev/pre-backup: 'echo cannot freeze >&2; exit 3'\n    rewind.dev/post-backup: 'touch {}'",
            marker("strict-post").display()
        ),
    );
    // Policy fail with a hook that hangs past its own 2 s timeout.
    let slow = hooked_project(
        &bed,
        &account,
        &format!(
            "    rewind.dev/pre-backup: 'sleep 60'\n    rewind.dev/hook-timeout: 2s\n    rewind.dev/post-backup: 'touch {}'",
            marker("slow-post").display()
        ),
    );
    // Policy continue: the failure is a warning and the volume is snapshotted.
    let lenient = hooked_project(
        &bed,
        &account,
        &format!(
            "    rewind.dev/pre-backup: 'exit 4'\n    rewind.dev/hook-on-error: continue\n    rewind.dev/post-backup: 'touch {}'",
            marker("lenient-post").display()
        ),
    );

    let name = unique("hookbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, &name);
    assert_eq!(status["phase"], "PartiallyFailed", "{status}");
    let failed = status["failed"].as_array().cloned().unwrap_or_default();
    let reason = |project: &str, kind: &str| {
        failed
            .iter()
            .find(|f| f["project"] == project && f["kind"] == kind)
            .and_then(|f| f["reason"].as_str().map(String::from))
            .unwrap_or_else(|| panic!("no failed {kind} item in {project}: {status}"))
    };
    let strict_hook = reason(&strict.name, "Hook");
    assert!(
        strict_hook.contains("exited with code 3")
            && strict_hook.contains("cannot freeze")
            && strict_hook.contains("hook-on-error=continue"),
        "the reason names the exit code, the stderr and the way out: {strict_hook}"
    );
    assert!(
        reason(&strict.name, "Project").contains("pre-backup hook failed"),
        "{status}"
    );
    let slow_hook = reason(&slow.name, "Hook");
    assert!(
        slow_hook.contains("did not finish within"),
        "the hanging hook fails on its own timeout: {slow_hook}"
    );
    assert!(
        failed.iter().all(|f| f["project"] != lenient.name),
        "a hook with on-error continue fails nothing: {status}"
    );
    let snapshotted: Vec<&str> = status["volumeSnapshots"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["project"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        snapshotted,
        vec![lenient.name.as_str()],
        "only the project whose hook may fail is snapshotted: {status}"
    );
    let activity = status["activity"].to_string();
    assert!(
        activity.contains("continuing") && activity.contains(&lenient.name),
        "the tolerated failure is a warning in the activity log: {activity}"
    );
    for post in ["strict-post", "slow-post", "lenient-post"] {
        assert!(
            marker(post).exists(),
            "the post-backup hook ran even when the snapshots were skipped: {post}"
        );
    }
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=90s"]);
}

/// A VolumeSnapshot `name` of `pvc` in `namespace`, waited for until ready, as the snapshot
/// controller leaves it (its content Delete, unlabelled); returns (content, handle).
fn ready_snapshot(bed: &Bed, namespace: &str, name: &str, pvc: &str) -> (String, String) {
    ready_snapshot_of_class(bed, namespace, name, pvc, default_class(bed))
}

/// The bed's VolumeSnapshotClass (deletionPolicy Delete).
fn default_class(bed: &Bed) -> &str {
    bed.var("SNAPSHOT_CLASS")
        .unwrap_or("rewind-hostpath-snapshots")
}

/// [`ready_snapshot`] through VolumeSnapshotClass `class`.
fn ready_snapshot_of_class(
    bed: &Bed,
    namespace: &str,
    name: &str,
    pvc: &str,
    class: &str,
) -> (String, String) {
    apply_in(
        bed,
        namespace,
        &format!(
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: {name}}}\nspec: {{volumeSnapshotClassName: {class}, source: {{persistentVolumeClaimName: {pvc}}}}}\n"
        ),
    );
    let content = bed.wait_until(
        &format!("VolumeSnapshot {namespace}/{name} to be ready"),
        Duration::from_secs(60),
        || {
            let ready = bed.jsonpath(
                &["-n", namespace, "volumesnapshot", name],
                "{.status.readyToUse}",
            );
            let content = bed.jsonpath(
                &["-n", namespace, "volumesnapshot", name],
                "{.status.boundVolumeSnapshotContentName}",
            );
            (ready.as_deref() == Some("true"))
                .then_some(content)
                .flatten()
        },
        || bed.describe(namespace),
    );
    let handle = bed
        .jsonpath(
            &["volumesnapshotcontent", &content],
            "{.status.snapshotHandle}",
        )
        .expect("a ready snapshot's handle");
    (content, handle)
}

/// A snapshot of `pvc` in `namespace` taken as a backup takes it (a VolumeSnapshot, ready, its
/// content made Retain and labelled pending for backup `uid`); returns (content, handle).
fn pending_snapshot(bed: &Bed, namespace: &str, pvc: &str, uid: &str) -> (String, String) {
    let (content, handle) = ready_snapshot(bed, namespace, pvc, pvc);
    let pending = format!(
        r#"{{"metadata":{{"labels":{{"rewind.dev/pending-for-backup":"{uid}"}}}},"spec":{{"deletionPolicy":"Retain"}}}}"#
    );
    bed.kubectl_ok(&[
        "patch",
        "volumesnapshotcontent",
        &content,
        "--type",
        "merge",
        "-p",
        &pending,
    ]);
    (content, handle)
}

#[test]
fn deleting_a_backup_removes_the_snapshots_an_attempt_left_unlabelled_in_its_project_whatever_their_class_and_leaves_another_accounts_namesake_alone()
 {
    let bed = Bed::get();
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "the CSI driver's snapshots") else {
        return;
    };
    let operator = operator(&bed);
    let account = unique("stray");
    let project = bed.project("stray", &account);
    let ns = project.name.clone();
    let neighbour = bed.project("stray-next", &unique("next"));
    for (namespace, pvc) in [
        (ns.as_str(), "data"),
        (ns.as_str(), "logs"),
        (neighbour.name.as_str(), "data"),
    ] {
        apply_in(
            &bed,
            namespace,
            &format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {pvc}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 10Mi}}}}}}\n"
            ),
        );
        bed.wait_for_phase(namespace, "persistentvolumeclaim", pvc, "Bound", DONE);
    }
    // A class that keeps contents and physical snapshots when their VolumeSnapshot goes.
    let driver = bed
        .jsonpath(&["volumesnapshotclass", default_class(&bed)], "{.driver}")
        .expect("the bed's snapshot class names its driver");
    let retain_class = unique("rewind-retain");
    bed.apply(&format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata: {{name: {retain_class}}}\ndriver: {driver}\ndeletionPolicy: Retain\n"
    ));
    let name = unique("straybackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, &name);
    assert_eq!(status["phase"], "Completed", "{status}");
    let uid = bed
        .jsonpath(&["accountbackup", &name], "{.metadata.uid}")
        .expect("the backup's uid");

    // What an attempt stopped while the snapshot was still being taken leaves: the
    // VolumeSnapshot under the backup's deterministic name, its content never labelled
    // pending — Delete as the bed's class makes it, or Retain under a class that keeps it.
    // A tenant of another account copies the name into her own project.
    let snapshot = rewind::snapshot::decide::snapshot_name(&uid, "data");
    let (stray, stray_handle) = ready_snapshot(&bed, &ns, &snapshot, "data");
    let kept_snapshot = rewind::snapshot::decide::snapshot_name(&uid, "logs");
    let (kept_stray, kept_handle) =
        ready_snapshot_of_class(&bed, &ns, &kept_snapshot, "logs", &retain_class);
    let (namesake, namesake_handle) = ready_snapshot(&bed, &neighbour.name, &snapshot, "data");
    let namesake_uid = bed.jsonpath(
        &["-n", &neighbour.name, "volumesnapshot", &snapshot],
        "{.metadata.uid}",
    );

    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=90s"]);
    let tarball = |handle: &str| {
        std::path::Path::new(&csi_state)
            .join("snapshots")
            .join(format!("{handle}.tgz"))
    };
    for (snapshot, content, handle) in [
        (&snapshot, &stray, &stray_handle),
        (&kept_snapshot, &kept_stray, &kept_handle),
    ] {
        bed.wait_until(
            &format!(
                "stray VolumeSnapshot {snapshot}, its content and its physical snapshot to be gone"
            ),
            DONE,
            || {
                (bed.kubectl(&["-n", &ns, "get", "volumesnapshot", snapshot])
                    .is_err()
                    && bed
                        .kubectl(&["get", "volumesnapshotcontent", content])
                        .is_err()
                    && !tarball(handle).exists())
                .then_some(())
            },
            || operator.log_tail(),
        );
    }
    assert_eq!(
        bed.jsonpath(
            &["-n", &neighbour.name, "volumesnapshot", &snapshot],
            "{.metadata.uid}"
        ),
        namesake_uid,
        "another account's VolumeSnapshot under the same name is left alone"
    );
    assert!(
        bed.kubectl(&["get", "volumesnapshotcontent", &namesake])
            .is_ok()
            && tarball(&namesake_handle).exists(),
        "and so are its content and physical snapshot"
    );
    bed.kubectl_ok(&[
        "-n",
        &neighbour.name,
        "delete",
        "volumesnapshot",
        &snapshot,
        "--wait=true",
        "--timeout=60s",
    ]);
    bed.kubectl_ok(&["delete", "volumesnapshotclass", &retain_class]);
}

#[test]
fn settling_a_backup_releases_snapshots_the_snapshot_controller_left_stuck_or_still_bound_and_leaves_a_tenants_namesake_alone()
 {
    let bed = Bed::get();
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "the CSI driver's snapshots") else {
        return;
    };
    let project = bed.namespace("settle");
    let ns = project.name.as_str();
    for pvc in ["stuck", "bound", "kept"] {
        apply_in(
            &bed,
            ns,
            &format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {pvc}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 10Mi}}}}}}\n"
            ),
        );
    }
    for pvc in ["stuck", "bound", "kept"] {
        bed.wait_for_phase(
            ns,
            "persistentvolumeclaim",
            pvc,
            "Bound",
            Duration::from_secs(60),
        );
    }
    let uid = unique("backup-uid");
    let (stuck, stuck_handle) = pending_snapshot(&bed, ns, "stuck", &uid);
    let (bound, bound_handle) = pending_snapshot(&bed, ns, "bound", &uid);
    let (kept, kept_handle) = pending_snapshot(&bed, ns, "kept", &uid);

    // 1. What an API server restart left in the chaos suite: the VolumeSnapshot gone without
    // the snapshot controller's mark on the content, and the content deleted by an earlier
    // settle, held forever by the sidecar's finalizer. The VolumeSnapshot is removed without
    // its finalizers, and the controller's mark (if it was quicker) taken off again.
    // `kept` is left the same way (its VolumeSnapshot gone, no mark) but not deleted: the
    // backup records it.
    for (snapshot, content) in [("stuck", &stuck), ("kept", &kept)] {
        bed.kubectl_ok(&[
            "-n",
            ns,
            "patch",
            "volumesnapshot",
            snapshot,
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        bed.kubectl_ok(&[
            "-n",
            ns,
            "delete",
            "volumesnapshot",
            snapshot,
            "--wait=true",
        ]);
        // The snapshot controller may still write its mark from a view of the VolumeSnapshot
        // older than its deletion: taken off until it stays off (the controller has seen the
        // VolumeSnapshot go), or the content's deletion below would find it and go through.
        bed.wait_until(
            &format!("the being-deleted mark on {content} to stay off"),
            Duration::from_secs(60),
            || {
                bed.kubectl_ok(&[
                    "patch",
                    "volumesnapshotcontent",
                    content,
                    "--type",
                    "merge",
                    "-p",
                    r#"{"metadata":{"annotations":{"snapshot.storage.kubernetes.io/volumesnapshot-being-deleted":null}}}"#,
                ]);
                std::thread::sleep(Duration::from_secs(3));
                bed.jsonpath(
                    &["volumesnapshotcontent", content],
                    "{.metadata.annotations.snapshot\\.storage\\.kubernetes\\.io/volumesnapshot-being-deleted}",
                )
                .is_none()
                .then_some(())
            },
            || bed.kubectl(&["get", "volumesnapshotcontent", content, "-o", "yaml"]).unwrap_or_else(|e| e),
        );
    }
    bed.kubectl_ok(&["delete", "volumesnapshotcontent", &stuck, "--wait=false"]);
    // The tenant, who writes its own namespace, creates a VolumeSnapshot under the name of
    // Rewind's gone one: what settle deletes is chosen by the content's UID, never by a name a
    // tenant can take, so this one stays.
    let class = bed
        .var("SNAPSHOT_CLASS")
        .unwrap_or("rewind-hostpath-snapshots");
    apply_in(
        &bed,
        ns,
        &format!(
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: kept}}\nspec: {{volumeSnapshotClassName: {class}, source: {{persistentVolumeClaimName: kept}}}}\n"
        ),
    );
    let tenants = bed
        .jsonpath(&["-n", ns, "volumesnapshot", "kept"], "{.metadata.uid}")
        .expect("the tenant's namesake VolumeSnapshot");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        bed.jsonpath(
            &["volumesnapshotcontent", &stuck],
            "{.metadata.deletionTimestamp}"
        )
        .is_some(),
        "the precondition: without the mark, a deleted content whose VolumeSnapshot is gone stays"
    );
    // 2. An attempt stopped between labelling the content and deleting its VolumeSnapshot:
    // `bound` keeps its VolumeSnapshot.

    let driver = bed
        .jsonpath(&["volumesnapshotcontent", &kept], "{.spec.driver}")
        .expect("the content's driver");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let recorded = std::collections::BTreeSet::from([kept_handle.clone()]);
    let deleted = runtime
        .block_on(async {
            let client = bed.client().await;
            rewind::snapshot::pending::settle(
                &client,
                &uid,
                &recorded,
                &std::collections::BTreeSet::from([ns.to_string()]),
                ns,
                Duration::from_secs(60),
            )
            .await
        })
        .expect("settle");
    assert_eq!(deleted, 2, "the two unrecorded physical snapshots");

    bed.wait_until(
        "the three contents and the bound VolumeSnapshot to be gone",
        Duration::from_secs(60),
        || {
            let left: Vec<String> = [
                bed.kubectl(&["get", "volumesnapshotcontent", &stuck]).ok(),
                bed.kubectl(&["get", "volumesnapshotcontent", &bound]).ok(),
                bed.kubectl(&["get", "volumesnapshotcontent", &kept]).ok(),
                bed.kubectl(&["-n", ns, "get", "volumesnapshot", "bound"])
                    .ok(),
            ]
            .into_iter()
            .flatten()
            .collect();
            left.is_empty().then_some(())
        },
        || {
            bed.kubectl(&["get", "volumesnapshotcontents", "-o", "yaml"])
                .unwrap_or_else(|e| e)
        },
    );
    assert_eq!(
        bed.jsonpath(&["-n", ns, "volumesnapshot", "kept"], "{.metadata.uid}"),
        Some(tenants),
        "the tenant's namesake VolumeSnapshot is left alone"
    );
    let tarball = |handle: &str| {
        std::path::Path::new(&csi_state)
            .join("snapshots")
            .join(format!("{handle}.tgz"))
    };
    for handle in [&stuck_handle, &bound_handle] {
        assert!(
            !tarball(handle).exists(),
            "the physical snapshot {handle} was deleted"
        );
    }
    // The recorded one's object went (marked, Retain), its physical snapshot stays the backup's.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        tarball(&kept_handle).exists(),
        "the recorded physical snapshot {kept_handle} is kept"
    );
    runtime
        .block_on(async {
            let client = bed.client().await;
            rewind::snapshot::delete_physical(
                &client,
                &driver,
                &kept_handle,
                ns,
                Duration::from_secs(60),
            )
            .await
        })
        .expect("the test's own cleanup of the kept snapshot");
}

#[test]
fn deleting_a_physical_snapshot_whose_temporary_content_cannot_go_fails_with_the_reason_and_finishes_when_tried_again()
 {
    let bed = Bed::get();
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "the CSI driver's snapshots") else {
        return;
    };
    let project = bed.namespace("held");
    let ns = project.name.as_str();
    apply_in(
        &bed,
        ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Mi}}}\n",
    );
    bed.wait_for_phase(ns, "persistentvolumeclaim", "data", "Bound", DONE);
    // A committed backup's snapshot: known by driver and handle only, its objects gone.
    let uid = unique("backup-uid");
    let (content, handle) = pending_snapshot(&bed, ns, "data", &uid);
    let driver = bed
        .jsonpath(&["volumesnapshotcontent", &content], "{.spec.driver}")
        .expect("the content's driver");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime
        .block_on(async {
            let client = bed.client().await;
            rewind::snapshot::pending::settle(
                &client,
                &uid,
                &std::collections::BTreeSet::from([handle.clone()]),
                &std::collections::BTreeSet::from([ns.to_string()]),
                ns,
                Duration::from_secs(60),
            )
            .await
        })
        .expect("settled as committed");
    bed.wait_until(
        "the committed snapshot's content to go",
        DONE,
        || {
            bed.kubectl(&["get", "volumesnapshotcontent", &content])
                .is_err()
                .then_some(())
        },
        String::new,
    );

    // Someone else's finalizer holds the temporary content Rewind deletes the snapshot through.
    let temporary = rewind::snapshot::decide::deletion_content_name(&driver, &handle);
    bed.apply(&format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {{name: {temporary}, finalizers: [example.com/hold]}}\nspec: {{deletionPolicy: Delete, driver: {driver}, source: {{snapshotHandle: {handle}}}, volumeSnapshotRef: {{name: {temporary}, namespace: {ns}}}}}\n"
    ));
    let delete = || {
        runtime.block_on(async {
            let client = bed.client().await;
            rewind::snapshot::delete_physical(
                &client,
                &driver,
                &handle,
                ns,
                Duration::from_secs(10),
            )
            .await
        })
    };
    let error = delete().expect_err("the content stays: deleting the snapshot has not finished");
    let message = error.to_string();
    assert!(
        message.contains(&temporary)
            && message.contains("the physical snapshot is deleted")
            && message.contains("example.com/hold"),
        "the error names the content, where it stands and the finalizer holding it: {message}"
    );
    assert_eq!(error.category(), "snapshot-delete-timeout");
    let tarball = std::path::Path::new(&csi_state)
        .join("snapshots")
        .join(format!("{handle}.tgz"));
    assert!(
        !tarball.exists(),
        "the physical snapshot {handle} is deleted already"
    );

    let others: Vec<String> = bed
        .jsonpath(
            &["volumesnapshotcontent", &temporary],
            "{.metadata.finalizers}",
        )
        .and_then(|list| serde_json::from_str::<Vec<String>>(&list).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|finalizer| finalizer != "example.com/hold")
        .collect();
    bed.kubectl_ok(&[
        "patch",
        "volumesnapshotcontent",
        &temporary,
        "--type",
        "merge",
        "-p",
        &serde_json::json!({"metadata": {"finalizers": others}}).to_string(),
    ]);
    delete().expect("tried again once the finalizer is gone, it finishes");
    assert!(
        bed.kubectl(&["get", "volumesnapshotcontent", &temporary])
            .is_err(),
        "the temporary content is gone"
    );
}
