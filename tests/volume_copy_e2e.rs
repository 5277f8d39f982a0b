//! Volume data in the repository, end to end on the bed's real node: an operator with an S3
//! repository and mover pods backs up a project whose PVC holds files of several owners — the
//! backup records the volume's repository copy (files, bytes) beside its CSI snapshot and leaves
//! no mover behind; the storage system then loses the snapshot, and a restore fills the PVC
//! from the repository copy (same bytes, owners and modes) instead of failing the volume. A
//! restore with `volumeSource: Repository` takes the copy even while the snapshot exists.
//! Deleting the backup releases the copies. An operator SIGKILLed while a mover copies finishes
//! the backup once; and while a mover copies 2 GB the operator's memory stays within 10% of its
//! idle figure: it moves none of the bytes.
//!
//! Databases move on the node too: a PostgreSQL pod's dump is written by a worker pod into a
//! repository snapshot of its own and loaded back by another, each with a Role allowing exec
//! into that one pod that goes with the worker; a worker whose dump command fails fails that
//! database item with its reason.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use support::movers::{
    CopyBed, MoverOperator, WAIT, leftovers, owned, running_mover, turn, volume_dir, wait_phase,
};
use support::real_node::{apply_in, psql_in, wait_ready};
use support::{Bed, unique};

const FILES: [(&str, u32, u32, Option<&str>); 5] = [
    ("public.txt", 1000, 0o644, Some("anyone may read this\n")),
    ("db", 999, 0o700, None),
    ("db/secret.txt", 999, 0o600, Some("only 999\n")),
    ("uploads", 33, 0o750, None),
    ("uploads/photo.jpg", 33, 0o640, Some("jpeg bytes\n")),
];

fn assert_same_files(dir: &Path) {
    for (path, uid, mode, contents) in FILES {
        let meta =
            std::fs::symlink_metadata(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.uid(), uid, "{path}'s owner");
        assert_eq!(meta.mode() & 0o7777, mode, "{path}'s mode");
        if let Some(text) = contents {
            assert_eq!(
                std::fs::read_to_string(dir.join(path)).expect("read"),
                text,
                "{path}'s bytes"
            );
        }
    }
}

/// Database worker objects left: pods in the operator's namespace, Roles and RoleBindings in
/// `namespaces`.
fn worker_leftovers(bed: &Bed, op: &str, namespaces: &[&str]) -> String {
    let mut found = bed
        .kubectl(&[
            "-n",
            op,
            "get",
            "pods",
            "-l",
            "rewind.dev/mover in (dump,load)",
            "-o",
            "name",
        ])
        .unwrap_or_default();
    for namespace in namespaces {
        found += &bed
            .kubectl(&[
                "-n",
                namespace,
                "get",
                "roles,rolebindings",
                "-l",
                "rewind.dev/mover",
                "-o",
                "name",
            ])
            .unwrap_or_default();
    }
    found.trim().to_string()
}

/// Waits until no database worker object is left (`worker_leftovers`): the operator deletes
/// them when the worker ends, and a deleted pod on the real kubelet is listed (Terminating)
/// until the kubelet confirms it is gone.
fn assert_no_worker_left(bed: &Bed, op: &str, namespaces: &[&str], after: &str) {
    bed.wait_until(
        &format!("no worker pod, Role or RoleBinding to be left {after}"),
        Duration::from_secs(60),
        || worker_leftovers(bed, op, namespaces).is_empty().then_some(()),
        || {
            let mut shown = bed
                .kubectl(&[
                    "-n",
                    op,
                    "get",
                    "pods",
                    "-l",
                    "rewind.dev/mover",
                    "-o",
                    "custom-columns=NAME:.metadata.name,PHASE:.status.phase,DELETING:.metadata.deletionTimestamp",
                ])
                .unwrap_or_default();
            shown += &worker_leftovers(bed, op, namespaces);
            shown
        },
    );
}

/// One test at a time: each starts its own operator, and every operator reconciles every

#[test]
fn a_backup_copies_its_volume_into_the_repository_and_a_restore_fills_it_from_there_once_the_snapshot_is_gone()
 {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        state_dir,
        endpoint,
        bucket,
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    let operator = &setup.spawn(&bed);
    let op = &setup.op_ns.name;

    // A project with a volume whose files belong to three owners.
    let account = unique("copy");
    let project = bed.project("copy-src", &account);
    let ns = project.name.clone();
    apply_in(
        &bed,
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    bed.wait_for_phase(&ns, "pvc", "data", "Bound", WAIT);
    let source = volume_dir(&bed, &state_dir, &ns, "data");
    for (path, uid, mode, contents) in FILES {
        owned(&source.join(path), uid, mode, contents);
    }

    let backup = unique("copybackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let status = wait_phase(&bed, operator, "accountbackup", &backup);
    assert_eq!(
        status["phase"],
        "Completed",
        "{status}\n{}",
        operator.log_tail()
    );
    let volume = &status["volumeSnapshots"][0];
    let copy = &volume["repositoryCopy"];
    assert!(
        copy["snapshot"].as_str().is_some_and(|s| !s.is_empty()),
        "the copy is recorded: {status}"
    );
    assert_eq!(copy["files"], 3, "three files copied: {copy}");
    assert_eq!(
        copy["bytes"].as_u64(),
        Some(
            FILES
                .iter()
                .filter_map(|f| f.3)
                .map(|t| t.len() as u64)
                .sum()
        ),
        "{copy}"
    );
    assert!(
        volume["snapshotHandle"].as_str().is_some(),
        "the CSI snapshot is kept too: {volume}"
    );
    assert_eq!(
        leftovers(&bed, op),
        "",
        "no mover object is left after the backup"
    );

    // A restore that asks for the repository copy while the snapshot still exists.
    let from_copy = unique("copy-repo");
    let _from_copy_ns = bed.adopt_namespace(&from_copy);
    let restore_a = unique("copyrestore");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore_a}}}\nspec:\n  account: {account}\n  backup: {backup}\n  volumeSource: Repository\n  targetNamespaces: {{{ns}: {from_copy}}}\n"
    ));
    let restored = wait_phase(&bed, operator, "projectrestore", &restore_a);
    assert_eq!(
        restored["phase"],
        "Completed",
        "{restored}\n{}",
        operator.log_tail()
    );
    assert_eq!(
        bed.jsonpath(&["-n", &from_copy, "pvc", "data"], "{.spec.dataSource}")
            .unwrap_or_default(),
        "",
        "the claim was filled from the repository, not made from the snapshot"
    );
    assert_same_files(&volume_dir(&bed, &state_dir, &from_copy, "data"));

    // The storage system loses the snapshot: a default restore falls back to the copy.
    let handle = volume["snapshotHandle"]
        .as_str()
        .expect("handle")
        .to_string();
    let snapshots = Path::new(&state_dir).join("snapshots");
    for file in [format!("{handle}.tgz"), format!("{handle}.json")] {
        std::fs::remove_file(snapshots.join(&file)).expect("remove the physical snapshot");
    }
    let target = unique("copy-back");
    let _target_ns = bed.adopt_namespace(&target);
    let restore_b = unique("copyrestore");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore_b}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"
    ));
    let restored = wait_phase(&bed, operator, "projectrestore", &restore_b);
    assert_eq!(
        restored["phase"],
        "Completed",
        "the volume came back from the repository copy: {restored}\n{}",
        operator.log_tail()
    );
    let warnings = restored["warnings"].to_string();
    assert!(
        warnings.contains("filled from the backup's repository copy"),
        "the fallback is said: {warnings}"
    );
    assert_same_files(&volume_dir(&bed, &state_dir, &target, "data"));
    let pv = bed
        .jsonpath(&["-n", &target, "pvc", "data"], "{.spec.volumeName}")
        .expect("bound");
    assert_eq!(
        bed.jsonpath(&["pv", &pv], "{.spec.persistentVolumeReclaimPolicy}")
            .as_deref(),
        Some("Delete"),
        "the handed-over volume has its class's reclaim policy back"
    );
    assert_eq!(
        leftovers(&bed, op),
        "",
        "no mover object is left after the restores"
    );

    // Deleting the backup releases its volume copy.
    bed.kubectl_ok(&[
        "delete",
        "projectrestore",
        &restore_a,
        &restore_b,
        "--timeout=90s",
    ]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=120s"]);
    let text = setup.repo_ls(&bed);
    let copy_id = copy["snapshot"].as_str().unwrap_or_default();
    assert!(
        !text.contains(&copy_id[..copy_id.len().min(8)]),
        "the volume copy {copy_id} is released with its backup:\n{text}"
    );
}

#[test]
fn an_operator_killed_while_a_mover_copies_finishes_the_backup_once_and_leaves_nothing_behind() {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        state_dir,
        endpoint,
        bucket,
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    let mut operator = setup.spawn(&bed);
    let op = setup.op_ns.name.clone();

    // A volume large enough that its copy is still running when the operator dies.
    let account = unique("kill");
    let project = bed.project("kill-src", &account);
    let ns = project.name.clone();
    apply_in(
        &bed,
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}\n",
    );
    bed.wait_for_phase(&ns, "pvc", "data", "Bound", WAIT);
    let source = volume_dir(&bed, &state_dir, &ns, "data");
    let status = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=400", "status=none"])
        .arg(format!("of={}", source.join("big.bin").display()))
        .status()
        .expect("dd");
    assert!(status.success());

    let backup = unique("killbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let mover = running_mover(&bed, &operator, &op, "backup");
    operator.kill_hard();
    let operator = setup.spawn(&bed);

    let status = wait_phase(&bed, &operator, "accountbackup", &backup);
    assert_eq!(
        status["phase"],
        "Completed",
        "{status}\n{}",
        operator.log_tail()
    );
    let copy = &status["volumeSnapshots"][0]["repositoryCopy"];
    assert_eq!(
        copy["bytes"],
        400 * 1024 * 1024,
        "the whole volume is copied: {copy}"
    );
    let uid = bed
        .jsonpath(&["accountbackup", &backup], "{.metadata.uid}")
        .expect("uid");
    // One copy: the restarted operator found the mover it had started and waited for it.
    let text = setup.repo_ls(&bed);
    let copies = text
        .lines()
        .filter(|line| line.contains(&format!("volume-of-backup-uid={uid}")))
        .count();
    assert_eq!(
        copies, 1,
        "one copy of the volume in the repository ({mover} resumed):\n{text}"
    );
    assert_eq!(
        leftovers(&bed, &op),
        "",
        "no mover pod, PVC, snapshot or content is left"
    );
    bed.wait_until(
        "the movers' source volumes to go",
        WAIT,
        || {
            let claims = bed
                .kubectl(&[
                    "get",
                    "pv",
                    "-o",
                    "jsonpath={range .items[*]}{.spec.claimRef.namespace}{'\\n'}{end}",
                ])
                .unwrap_or_default();
            (!claims.lines().any(|n| n == op)).then_some(())
        },
        || bed.kubectl(&["get", "pv"]).unwrap_or_default(),
    );
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=120s"]);
}

#[test]
fn the_operators_memory_stays_within_ten_percent_of_idle_while_a_mover_copies_two_gigabytes() {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        state_dir,
        endpoint,
        bucket,
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let mut setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    // Taking a CSI snapshot of 2 GB (a tarball on the bed) takes longer than the suites' minute.
    if let Some(at) = setup.extra.iter().position(|a| a == "--snapshot-timeout") {
        setup.extra[at + 1] = "600s".into();
    }
    let operator = setup.spawn(&bed);

    let account = unique("rss");
    let project = bed.project("rss-src", &account);
    let ns = project.name.clone();
    apply_in(
        &bed,
        &ns,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 3Gi}}}\n",
    );
    bed.wait_for_phase(&ns, "pvc", "data", "Bound", WAIT);
    let source = volume_dir(&bed, &state_dir, &ns, "data");
    let backup_of_account = || {
        let backup = unique("rssbackup");
        bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
        backup
    };

    // Idle is an operator that has worked before: a first backup of a one-file volume, through a
    // mover, fills what any backup fills once (clients, connection pools, the allocator's arenas,
    // the repository's index). Then 2 GB land in the volume; the operator is measured at rest,
    // its peak reset, so what it reads at the end is the peak while the big backup ran.
    owned(
        &source.join("first.txt"),
        1000,
        0o644,
        Some("the first day\n"),
    );
    let warm_up = backup_of_account();
    let status = wait_phase(&bed, &operator, "accountbackup", &warm_up);
    assert_eq!(status["phase"], "Completed", "{status}");
    for (name, count) in [("a.bin", 1024), ("b.bin", 1024)] {
        let status = std::process::Command::new("dd")
            .args(["if=/dev/urandom", "bs=1M", "status=none"])
            .arg(format!("count={count}"))
            .arg(format!("of={}", source.join(name).display()))
            .status()
            .expect("dd");
        assert!(status.success());
    }
    std::thread::sleep(Duration::from_secs(5));
    let idle = operator.memory_mib("VmRSS:");
    operator.reset_peak_rss();

    let backup = backup_of_account();
    let status = bed.wait_until(
        "the 2 GB backup to finish",
        Duration::from_secs(900),
        || {
            let status = support::status_of(&bed, "accountbackup", &backup);
            matches!(
                status["phase"].as_str(),
                Some("Completed" | "PartiallyFailed" | "Failed")
            )
            .then_some(status)
        },
        || operator.log_tail(),
    );
    let peak = operator.peak_rss_mib();
    assert_eq!(
        status["phase"],
        "Completed",
        "{status}\n{}",
        operator.log_tail()
    );
    assert_eq!(
        status["volumeSnapshots"][0]["repositoryCopy"]["bytes"],
        2048u64 * 1024 * 1024 + "the first day\n".len() as u64,
        "the mover copied the whole 2 GB: {status}"
    );
    println!("operator RSS: idle {idle:.1} MiB, peak during the 2 GB copy {peak:.1} MiB");
    assert!(
        peak <= idle * 1.10,
        "the operator's peak RSS during the copy ({peak:.1} MiB) stays within 10% of idle ({idle:.1} MiB)"
    );
    bed.kubectl_ok(&[
        "delete",
        "accountbackup",
        &backup,
        &warm_up,
        "--timeout=180s",
    ]);
}

#[test]
fn a_database_is_dumped_and_loaded_by_worker_pods_that_leave_no_pod_or_access_behind() {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        endpoint,
        bucket,
        ..
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    let operator = &setup.spawn(&bed);
    let op = &setup.op_ns.name;

    let account = unique("dbw");
    let project = bed.project("dbw-src", &account);
    let ns = project.name.clone();
    apply_in(
        &bed,
        &ns,
        &node.postgres_pod("db-0", "    rewind.dev/database: postgres", "emptyDir: {}"),
    );
    wait_ready(&bed, &ns, "db-0");
    psql_in(
        &bed,
        &ns,
        "db-0",
        "CREATE TABLE customers (id int primary key, name text); INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 2000) g",
    );
    let rows =
        "SELECT count(*) || ':' || md5(string_agg(id || name, ',' ORDER BY id)) FROM customers";
    let at_backup = psql_in(&bed, &ns, "db-0", rows);

    let backup = unique("dbwbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let status = wait_phase(&bed, operator, "accountbackup", &backup);
    assert_eq!(
        status["phase"],
        "Completed",
        "{status}\n{}",
        operator.log_tail()
    );
    let dump = &status["databaseDumps"][0];
    let dump_snapshot = dump["snapshot"].as_str().unwrap_or_default().to_string();
    assert!(
        !dump_snapshot.is_empty(),
        "the dump was written by a worker into a snapshot of its own: {dump}"
    );
    assert_ne!(
        status["repositorySnapshot"].as_str(),
        Some(dump_snapshot.as_str()),
        "{status}"
    );
    assert!(dump["bytes"].as_u64().unwrap_or(0) > 0, "{dump}");
    let uid = bed
        .jsonpath(&["accountbackup", &backup], "{.metadata.uid}")
        .expect("uid");
    let listed = setup.repo_ls(&bed);
    let line = listed
        .lines()
        .find(|line| line.contains(&dump_snapshot[..dump_snapshot.len().min(8)]))
        .unwrap_or_else(|| {
            panic!("the dump snapshot {dump_snapshot} is in the repository:\n{listed}")
        });
    assert!(
        line.contains(&format!("dump-of-backup-uid={uid}")),
        "it is tied to its backup: {line}"
    );
    assert_no_worker_left(&bed, op, &[&ns], "after the backup");

    let target = unique("dbw-back");
    let _target_ns = bed.adopt_namespace(&target);
    let restore = unique("dbwrestore");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"
    ));
    let restored = wait_phase(&bed, operator, "projectrestore", &restore);
    assert_eq!(
        restored["phase"],
        "Completed",
        "{restored}\n{}",
        operator.log_tail()
    );
    assert_eq!(
        psql_in(&bed, &target, "db-0", rows),
        at_backup,
        "the rows came back through the load worker"
    );
    assert_no_worker_left(&bed, op, &[&ns, &target], "after the restore");

    bed.kubectl_ok(&["delete", "projectrestore", &restore, "--timeout=90s"]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=120s"]);
    let listed = setup.repo_ls(&bed);
    assert!(
        !listed.contains(&dump_snapshot[..dump_snapshot.len().min(8)]),
        "the dump snapshot {dump_snapshot} is released with its backup:\n{listed}"
    );
}

#[test]
fn a_worker_whose_dump_command_fails_fails_that_database_with_the_reason() {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        endpoint,
        bucket,
        ..
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    let operator = &setup.spawn(&bed);
    let op = &setup.op_ns.name;

    let account = unique("dbfail");
    let project = bed.project("dbfail-src", &account);
    let ns = project.name.clone();
    apply_in(
        &bed,
        &ns,
        &node.annotated_shell_pod(
            "broken",
            "    rewind.dev/database: custom\n    rewind.dev/backup-command: \"echo the dump tool is broken >&2; exit 3\"\n    rewind.dev/restore-command: cat",
        ),
    );
    wait_ready(&bed, &ns, "broken");
    let backup = unique("dbfailbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let status = wait_phase(&bed, operator, "accountbackup", &backup);
    assert_eq!(
        status["phase"],
        "PartiallyFailed",
        "{status}\n{}",
        operator.log_tail()
    );
    let failed = status["failed"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|i| i["kind"] == "Database" && i["name"] == "broken")
        })
        .cloned()
        .unwrap_or_else(|| panic!("the database item failed: {status}"));
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("worker pod failed")
            && reason.contains("code 3")
            && reason.contains("the dump tool is broken"),
        "the worker's reason is the item's: {reason}"
    );
    assert!(
        status["databaseDumps"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    assert_no_worker_left(&bed, op, &[&ns], "after the failure");
    let uid = bed
        .jsonpath(&["accountbackup", &backup], "{.metadata.uid}")
        .expect("uid");
    assert!(
        !setup
            .repo_ls(&bed)
            .contains(&format!("dump-of-backup-uid={uid}")),
        "a failed dump commits no snapshot"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=120s"]);
}

#[test]
fn a_200_mb_dump_and_its_load_move_through_workers_while_the_operators_memory_and_cpu_stay_flat() {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        endpoint,
        bucket,
        ..
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    let operator = &setup.spawn(&bed);
    let account = unique("dbbig");
    let project = bed.project("dbbig-src", &account);
    let ns = project.name.clone();
    // 200 MiB that does not compress, in a real PostgreSQL on the real node.
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
    let sum = "SELECT count(*) || ':' || md5(string_agg(md5(data), ',' ORDER BY id)) FROM blobs";
    let at_backup = psql_in(&bed, &ns, "big", sum);

    let (rss_before, cpu_before) = (operator.memory_mib("VmRSS:"), operator.cpu_seconds());
    let backup = unique("dbbigbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let status = wait_phase(&bed, operator, "accountbackup", &backup);
    assert_eq!(
        status["phase"],
        "Completed",
        "{status}\n{}",
        operator.log_tail()
    );
    let dump = &status["databaseDumps"][0];
    let bytes = dump["bytes"].as_u64().unwrap_or(0);
    assert!(bytes >= 200 * 1024 * 1024, "{dump}");
    assert!(
        dump["snapshot"].as_str().is_some(),
        "a worker wrote it: {dump}"
    );

    let target = unique("dbbig-back");
    let _target_ns = bed.adopt_namespace(&target);
    let restore = unique("dbbigrestore");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"
    ));
    let restored = wait_phase(&bed, operator, "projectrestore", &restore);
    assert_eq!(
        restored["phase"],
        "Completed",
        "{restored}\n{}",
        operator.log_tail()
    );
    let (peak, cpu_after) = (operator.peak_rss_mib(), operator.cpu_seconds());
    assert_eq!(
        psql_in(&bed, &target, "big", sum),
        at_backup,
        "every blob came back"
    );

    let rise_mib = (peak - rss_before).max(0.0);
    let cpu = cpu_after - cpu_before;
    eprintln!(
        "dump of {:.0} MB and its load through workers: operator RSS before {rss_before:.0} MiB, peak {peak:.0} MiB (rise {rise_mib:.0} MiB), CPU {cpu:.2} s",
        bytes as f64 / 1e6
    );
    // The operator's own dump streamed these bytes through its memory (a bounded 64 MiB rise,
    // volumes_databases_e2e) and encrypted them on its CPU; here it only watched two pods.
    assert!(
        rise_mib <= 32.0,
        "the operator's RSS rose by {rise_mib:.0} MiB while workers moved {bytes} bytes"
    );
    assert!(
        cpu <= 10.0,
        "the operator used {cpu:.1} s of CPU while workers moved {bytes} bytes twice"
    );
    bed.kubectl_ok(&["delete", "projectrestore", &restore, "--timeout=90s"]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=120s"]);
}

#[test]
fn a_worker_pod_that_vanishes_mid_dump_is_started_again_and_the_dump_recorded_once() {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        endpoint,
        bucket,
        ..
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    let operator = &setup.spawn(&bed);
    let op = &setup.op_ns.name;
    let account = unique("dbgone");
    let project = bed.project("dbgone-src", &account);
    let ns = project.name.clone();
    // A dump slow enough to delete its worker while it runs.
    apply_in(
        &bed,
        &ns,
        &node.annotated_shell_pod(
            "slow",
            "    rewind.dev/database: custom\n    rewind.dev/backup-command: \"sleep 15; echo rows\"\n    rewind.dev/restore-command: \"cat >/dev/null\"",
        ),
    );
    wait_ready(&bed, &ns, "slow");
    let backup = unique("dbgonebackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let worker = running_mover(&bed, operator, op, "dump");
    bed.kubectl_ok(&["-n", op, "delete", &worker, "--wait=false"]);
    let status = wait_phase(&bed, operator, "accountbackup", &backup);
    assert_eq!(
        status["phase"],
        "Completed",
        "the worker was started again and finished: {status}\n{}",
        operator.log_tail()
    );
    assert_eq!(status["databaseDumps"][0]["bytes"], 5, "{status}");
    let uid = bed
        .jsonpath(&["accountbackup", &backup], "{.metadata.uid}")
        .expect("uid");
    let dumps = setup
        .repo_ls(&bed)
        .lines()
        .filter(|line| line.contains(&format!("dump-of-backup-uid={uid}")))
        .count();
    assert_eq!(
        dumps, 1,
        "one dump snapshot: the deleted worker committed none"
    );
    assert_no_worker_left(&bed, op, &[&ns], "after the retried dump");
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=120s"]);
}

#[test]
fn an_operator_killed_while_a_worker_dumps_finishes_the_backup_once_and_leaves_no_worker_or_access_behind()
 {
    let bed = Bed::get();
    let Some(CopyBed {
        node,
        endpoint,
        bucket,
        ..
    }) = CopyBed::of(&bed)
    else {
        return;
    };
    let _turn = turn();
    let setup = MoverOperator::start(&bed, &node, &endpoint, &bucket);
    let mut operator = setup.spawn(&bed);
    let op = setup.op_ns.name.clone();
    let account = unique("dbkill");
    let project = bed.project("dbkill-src", &account);
    let ns = project.name.clone();
    // A dump slow enough to kill the operator while its worker runs.
    apply_in(
        &bed,
        &ns,
        &node.annotated_shell_pod(
            "slow",
            "    rewind.dev/database: custom\n    rewind.dev/backup-command: \"echo run >> /tmp/dump-runs; sleep 15; echo rows\"\n    rewind.dev/restore-command: \"cat >/dev/null\"",
        ),
    );
    wait_ready(&bed, &ns, "slow");
    let backup = unique("dbkillbackup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    running_mover(&bed, &operator, &op, "dump");
    operator.kill_hard();
    let operator = setup.spawn(&bed);

    let status = wait_phase(&bed, &operator, "accountbackup", &backup);
    assert_eq!(
        status["phase"],
        "Completed",
        "the restarted operator finished the backup: {status}\n{}",
        operator.log_tail()
    );
    assert_eq!(status["databaseDumps"][0]["bytes"], 5, "{status}");
    let runs = bed
        .kubectl(&["-n", &ns, "exec", "slow", "--", "cat", "/tmp/dump-runs"])
        .unwrap_or_default();
    assert_eq!(
        runs.lines().count(),
        1,
        "the dump ran once: the restarted operator waited for the worker it had started"
    );
    let uid = bed
        .jsonpath(&["accountbackup", &backup], "{.metadata.uid}")
        .expect("uid");
    let dumps = setup
        .repo_ls(&bed)
        .lines()
        .filter(|line| line.contains(&format!("dump-of-backup-uid={uid}")))
        .count();
    assert_eq!(
        dumps, 1,
        "one dump snapshot of the backup stays, the one its status records"
    );
    assert_no_worker_left(&bed, &op, &[&ns], "after the operator's restart");
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=120s"]);
}
