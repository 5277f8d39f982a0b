//! AccountBackup's volume snapshots and database dumps on the test bed: they outlive the
//! project namespace, and every failing dump or volume fails alone, with its reason.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::operator::Operator;
use support::{Bed, unique};
use tokio::io::AsyncReadExt;

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

fn psql(bed: &Bed, database: &str, sql: &str) -> String {
    let bin = bed.var("PG_BIN").unwrap_or("/usr/bin");
    let output = Command::new(format!("{bin}/psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
            "-c",
            sql,
        ])
        .envs(bed.envs())
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn table_checksum(bed: &Bed, database: &str) -> String {
    psql(
        bed,
        database,
        "SELECT count(*) || ':' || md5(string_agg(id || '/' || name, ',' ORDER BY id)) FROM customers",
    )
}

fn backup_status(bed: &Bed, name: &str) -> Value {
    bed.kubectl(&["get", "accountbackup", name, "-o", "json"])
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .map(|object| object["status"].clone())
        .unwrap_or(Value::Null)
}

fn wait_finished(bed: &Bed, operator: &Operator, name: &str) -> Value {
    bed.wait_until(
        &format!("AccountBackup {name} to finish"),
        DONE,
        || {
            let status = backup_status(bed, name);
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || {
            format!(
                "status: {}\n--- operator log ---\n{}",
                backup_status(bed, name),
                operator.log_tail()
            )
        },
    )
}

fn db_pod(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n{annotations}\nspec:\n  containers: [{{name: db, image: postgres:16}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_snapshot_and_database_dump_outlive_the_deleted_namespace() {
    let bed = Bed::get();
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "reading volumes and snapshots on the host")
    else {
        return;
    };
    let operator = operator(&bed);
    let account = unique("vol");
    let project = bed.project("vol", &account);
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    psql(&bed, "postgres", &format!("CREATE DATABASE \"{ns}\""));
    psql(
        &bed,
        &ns,
        "CREATE TABLE customers (id int primary key, name text); INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5000) g",
    );
    let expected_rows = table_checksum(&bed, &ns);

    bed.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: uploads, namespace: {ns}, labels: {{rewind.dev/exclude: \"true\"}}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    ));
    bed.kubectl_with_stdin(&["-n", &ns, "apply", "-f", "-"], Some(db_pod("db-0", "    rewind.dev/database: postgres\n    rewind.dev/pre-backup: \"psql -c CHECKPOINT\"").as_bytes())).expect("db pod");
    bed.wait_for_phase(&ns, "pod", "db-0", "Running", DONE);
    bed.wait_for_phase(&ns, "pvc", "data", "Bound", DONE);
    let volume = bed
        .jsonpath(&["-n", &ns, "pvc", "data"], "{.spec.volumeName}")
        .expect("volume");
    let handle = bed
        .jsonpath(&["pv", &volume], "{.spec.csi.volumeHandle}")
        .expect("handle");
    std::fs::write(
        std::path::Path::new(&csi_state)
            .join(&handle)
            .join("orders.csv"),
        "1,widget\n2,gadget\n",
    )
    .expect("write into the volume");

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
            && dumps[0]["sha256"].as_str().unwrap_or_default().len() == 64
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

    // The dump, read back from the repository, restores the same rows into a scratch database.
    let repo = operator.repository().await;
    let mut dump = Vec::new();
    repo.read_stream(
        status["repositorySnapshot"].as_str().expect("snapshot"),
        dumps[0]["stream"].as_str().expect("stream"),
    )
    .await
    .expect("dump stream")
    .read_to_end(&mut dump)
    .await
    .expect("read dump");
    let scratch = format!("scratch_{}", ns.replace('-', "_"));
    psql(&bed, "postgres", &format!("CREATE DATABASE {scratch}"));
    let restore = Command::new(format!(
        "{}/pg_restore",
        bed.var("PG_BIN").unwrap_or("/usr/bin")
    ))
    .args(["--no-owner", "-d", &scratch])
    .envs(bed.envs())
    .stdin(std::process::Stdio::piped())
    .spawn()
    .and_then(|mut child| {
        use std::io::Write;
        child.stdin.take().map(|mut s| s.write_all(&dump));
        child.wait()
    })
    .expect("pg_restore");
    assert!(restore.success(), "pg_restore of the backed-up dump");
    assert_eq!(
        table_checksum(&bed, &scratch),
        expected_rows,
        "the restored rows equal the original's"
    );
    psql(&bed, "postgres", &format!("DROP DATABASE {scratch}"));
    psql(&bed, "postgres", &format!("DROP DATABASE \"{ns}\""));

    // Deleting the backup deletes the physical snapshot, through a temporary content, and its data.
    let snapshot_id = status["repositorySnapshot"]
        .as_str()
        .expect("snapshot")
        .to_string();
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=90s"]);
    assert!(
        operator
            .repository()
            .await
            .manifest(&snapshot_id)
            .await
            .is_err(),
        "the repository snapshot is released"
    );
    bed.wait_until(
        "the physical snapshot to be deleted",
        DONE,
        || (!tarball.exists()).then_some(()),
        || operator.log_tail(),
    );
    let leftovers = bed.kubectl_ok(&["get", "volumesnapshotcontents", "-o", "name"]);
    assert!(
        !leftovers.contains("rewind-delete"),
        "the temporary content is gone: {leftovers}"
    );
}

#[test]
fn failing_dumps_and_an_unsnapshottable_volume_each_fail_alone_with_their_reason() {
    let bed = Bed::get();
    if bed.external {
        eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec");
        return;
    }
    let operator = operator(&bed);
    let account = unique("faildb");
    let project = bed.project("faildb", &account);
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    let custom = |backup: &str| {
        format!(
            "    rewind.dev/database: custom\n    rewind.dev/backup-command: '{backup}'\n    rewind.dev/restore-command: cat"
        )
    };
    for (pod, command) in [
        ("exits-1", "echo some bytes; echo failing >&2; exit 1"),
        ("cut-off", "head -c 200000 /dev/zero; kill -9 $$"),
        ("hangs", "echo started; sleep 600"),
        ("works", "echo all good"),
    ] {
        bed.kubectl_with_stdin(
            &["-n", &ns, "apply", "-f", "-"],
            Some(db_pod(pod, &custom(command)).as_bytes()),
        )
        .expect("pod");
        bed.wait_for_phase(&ns, "pod", pod, "Running", DONE);
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
fn a_200_mb_dump_streams_through_with_flat_operator_memory() {
    let bed = Bed::get();
    if bed.external {
        eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec");
        return;
    }
    let operator = operator(&bed);
    let account = unique("bigdump");
    let project = bed.project("bigdump", &account);
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    let pod = db_pod(
        "big",
        "    rewind.dev/database: custom\n    rewind.dev/backup-command: head -c 200000000 /dev/urandom\n    rewind.dev/restore-command: cat >/dev/null",
    );
    bed.kubectl_with_stdin(&["-n", &ns, "apply", "-f", "-"], Some(pod.as_bytes()))
        .expect("pod");
    bed.wait_for_phase(&ns, "pod", "big", "Running", DONE);
    let before = operator.memory_mib("VmRSS:");
    let name = unique("bigdump");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, &name);
    assert_eq!(status["phase"], "Completed", "{status}");
    assert_eq!(
        status["databaseDumps"][0]["bytes"], 200_000_000u64,
        "{status}"
    );
    let peak = operator.peak_rss_mib();
    let rise_mib = (peak - before).max(0.0);
    eprintln!(
        "operator RSS before {before:.0} MiB, peak after {peak:.0} MiB, rise {rise_mib:.0} MiB"
    );
    assert!(
        rise_mib <= 64.0,
        "the operator's RSS rose by {rise_mib:.0} MiB while streaming 200 MB (limit 64)"
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
