//! The operator as a deployment: one leader among replicas, a standby that takes over, a
//! backup interrupted by a crash finished by the next leader, probes and metrics.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::operator::{Launch, Operator, new_key_hex};
use support::{Bed, unique};

const WAIT: Duration = Duration::from_secs(120);

/// Each test runs its own operators, and an operator reconciles every backup of the cluster:
/// two tests at once would steal each other's work, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn on the bed, and the bed — None (skipped, said on stderr) on a cluster of
/// REWIND_E2E_KUBECONFIG, which has no host exec for `what`.
fn own_turn_with_host_exec(what: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Bed)> {
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bed = Bed::get();
    if bed.external {
        eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec for {what}");
        return None;
    }
    Some((turn, bed))
}

fn lease_holder(bed: &Bed, namespace: &str) -> Option<String> {
    bed.jsonpath(
        &["-n", namespace, "lease", "rewind-operator-leader"],
        "{.spec.holderIdentity}",
    )
}

/// An operator deployment of a crash test's own: one namespace, repository and key shared by
/// the replicas it launches.
struct OwnDeployment {
    namespace: String,
    state: tempfile::TempDir,
    key: String,
    args: &'static [&'static str],
}

impl OwnDeployment {
    fn new(bed: &Bed, prefix: &str, args: &'static [&'static str]) -> Self {
        Operator::install_crds(bed);
        let namespace = unique(prefix);
        bed.kubectl_ok(&["create", "namespace", &namespace]);
        OwnDeployment {
            namespace,
            state: tempfile::tempdir().expect("temp dir"),
            key: new_key_hex(),
            args,
        }
    }

    fn launch<'a>(&'a self, identity: &'a str) -> Launch<'a> {
        Launch {
            namespace: &self.namespace,
            identity,
            state_dir: self.state.path(),
            key_hex: &self.key,
            extra_args: self.args,
            repository: None,
            env: &[],
        }
    }
}

fn phase(bed: &Bed, name: &str) -> Value {
    bed.kubectl(&["get", "accountbackup", name, "-o", "json"])
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn one_replica_leads_and_a_standby_takes_over_a_backup_interrupted_by_a_crash() {
    let Some((_turn, bed)) = own_turn_with_host_exec("the slow hook") else {
        return;
    };
    let deployment = OwnDeployment::new(&bed, "rewind-ha", &["--hook-timeout", "60s"]);
    let namespace = deployment.namespace.clone();
    let launch = |identity: &'static str| deployment.launch(identity);
    let mut first = Operator::spawn(&bed, &launch("replica-a"));
    bed.wait_until(
        "replica-a to lead",
        WAIT,
        || (lease_holder(&bed, &namespace).as_deref() == Some("replica-a")).then_some(()),
        || first.log_tail(),
    );
    let mut second = Operator::spawn(&bed, &launch("replica-b"));
    // A busy machine may take a while to start the standby: wait for its probes, not a fixed time.
    bed.wait_until(
        "the standby to be healthy and ready",
        WAIT,
        || {
            (second.get("/healthz").starts_with("HTTP/1.1 200")
                && second.get("/readyz").starts_with("HTTP/1.1 200"))
            .then_some(())
        },
        || second.log_tail(),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lease_holder(&bed, &namespace).as_deref(),
        Some("replica-a"),
        "the ready standby does not take a valid lease"
    );

    // A backup whose pre-backup hook takes a while, so it is Running when the leader dies.
    let account = unique("ha");
    let project = bed.project("ha", &account);
    bed.bind_exec(&project.name, &project.name);
    bed.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  namespace: {}\n  annotations: {{rewind.dev/pre-backup: \"sleep 8\"}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n",
        project.name
    ));
    bed.wait_for_phase(&project.name, "pod", "slow", "Running", WAIT);
    let name = unique("crashed");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    bed.wait_until(
        "the backup to run",
        WAIT,
        || (phase(&bed, &name)["phase"] == "Running").then_some(()),
        || first.log_tail(),
    );
    std::thread::sleep(Duration::from_secs(2));
    first.kill_hard();

    bed.wait_until(
        "replica-b to take over the expired lease",
        WAIT,
        || (lease_holder(&bed, &namespace).as_deref() == Some("replica-b")).then_some(()),
        || second.log_tail(),
    );
    let status = bed.wait_until(
        "the interrupted backup to complete under the new leader",
        WAIT,
        || {
            let status = phase(&bed, &name);
            (status["phase"] == "Completed").then_some(status)
        },
        || format!("{}\n{}", phase(&bed, &name), second.log_tail()),
    );
    assert!(
        status["activity"].to_string().contains("resumed"),
        "the activity log says the backup resumed: {status}"
    );

    let metrics = second.get("/metrics");
    assert!(
        metrics.contains("rewind_reconciles_total{controller=\"accountbackup\",result=\"ok\""),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "rewind_last_successful_backup_timestamp_seconds{{account=\"{account}\"}}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("rewind_operation_duration_seconds_bucket"),
        "{metrics}"
    );

    // Graceful stop releases the lease at once.
    second.stop();
    bed.wait_until(
        "the lease to be released",
        Duration::from_secs(10),
        || lease_holder(&bed, &namespace).is_none().then_some(()),
        String::new,
    );
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--wait=false"]);
    let _ = bed.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

fn account_lock_holder(bed: &Bed, namespace: &str, account: &str) -> Option<String> {
    bed.jsonpath(
        &["-n", namespace, "lease", &format!("account-{account}")],
        "{.spec.holderIdentity}",
    )
}

fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Two replicas of `deployment`'s operator (`twin-a`, `twin-b`), each waited for until ready.
fn ready_twins(bed: &Bed, deployment: &OwnDeployment) -> Vec<Operator> {
    let replicas = vec![
        Operator::spawn(bed, &deployment.launch("twin-a")),
        Operator::spawn(bed, &deployment.launch("twin-b")),
    ];
    for replica in &replicas {
        bed.wait_until(
            "both replicas to be ready",
            WAIT,
            || {
                replica
                    .get("/readyz")
                    .starts_with("HTTP/1.1 200")
                    .then_some(())
            },
            || replica.log_tail(),
        );
    }
    replicas
}

/// A project of account `account` whose pod's pre-backup hook notes each copy attempt in
/// `runs` (a file on the bed's host), then sleeps 20 s.
fn project_with_slow_hook<'a>(
    bed: &'a Bed,
    account: &str,
    runs: &std::path::Path,
) -> support::TestNamespace<'a> {
    let project = bed.project("twin", account);
    bed.bind_exec(&project.name, &project.name);
    bed.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  namespace: {}\n  annotations: {{rewind.dev/pre-backup: \"echo run >> {}; sleep 20\"}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n",
        project.name,
        runs.display()
    ));
    bed.wait_for_phase(&project.name, "pod", "slow", "Running", WAIT);
    project
}

#[test]
fn two_replicas_without_leader_election_run_a_backup_once_and_the_survivor_resumes_it_when_the_other_dies()
 {
    let Some((_turn, bed)) = own_turn_with_host_exec("the hook") else {
        return;
    };
    let deployment = OwnDeployment::new(
        &bed,
        "rewind-twin",
        &["--no-leader-election", "--hook-timeout", "60s"],
    );
    let mut replicas = ready_twins(&bed, &deployment);

    // Each copy attempt runs the pre-backup hook once and notes it in a file on the bed's host.
    let runs = tempfile::NamedTempFile::new().expect("hook run file");
    let account = unique("twin");
    let _project = project_with_slow_hook(&bed, &account, runs.path());
    let name = unique("twin");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let logs = |replicas: &[Operator]| {
        replicas
            .iter()
            .map(Operator::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    };
    bed.wait_until(
        "the first copy attempt to run its hook",
        WAIT,
        || (lines_in(runs.path()) >= 1).then_some(()),
        || format!("{}\n{}", phase(&bed, &name), logs(&replicas)),
    );
    // Both replicas reconcile the Running backup; only the one named in the account's lock
    // copies, and it keeps renewing the lock while its hook sleeps.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        lines_in(runs.path()),
        1,
        "one copy attempt while the holder lives: {}",
        logs(&replicas)
    );
    let holder = account_lock_holder(&bed, &deployment.namespace, &account).unwrap_or_default();
    let copier = if holder.ends_with("@twin-a") { 0 } else { 1 };
    assert!(
        holder.ends_with(&format!("@twin-{}", ["a", "b"][copier])),
        "the lock names the operation and the replica running it: {holder}"
    );
    let mut survivor = replicas.remove(1 - copier);
    let mut copier = replicas.remove(0);
    copier.kill_hard();

    let status = bed.wait_until(
        "the survivor to resume the backup once the dead replica's lock went stale",
        WAIT,
        || {
            let status = phase(&bed, &name);
            (status["phase"] == "Completed").then_some(status)
        },
        || format!("{}\n{}", phase(&bed, &name), survivor.log_tail()),
    );
    assert_eq!(
        lines_in(runs.path()),
        2,
        "the survivor ran the copy once more, no one else did: {}",
        survivor.log_tail()
    );
    assert!(
        status["activity"].to_string().contains("resumed"),
        "the activity log says the backup resumed: {status}"
    );
    assert_eq!(
        account_lock_holder(&bed, &deployment.namespace, &account),
        None,
        "the account lock is released when the backup completes"
    );
    survivor.stop();
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--wait=false"]);
    let _ = bed.kubectl(&["delete", "namespace", &deployment.namespace, "--wait=false"]);
}

#[test]
fn a_backup_deleted_while_another_replica_copies_it_is_released_only_once_that_copy_ends() {
    let Some((_turn, bed)) = own_turn_with_host_exec("the hook") else {
        return;
    };
    let deployment = OwnDeployment::new(
        &bed,
        "rewind-twin-delete",
        &["--no-leader-election", "--hook-timeout", "60s"],
    );
    let replicas = ready_twins(&bed, &deployment);
    let logs = || {
        replicas
            .iter()
            .map(Operator::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let runs = tempfile::NamedTempFile::new().expect("hook run file");
    let account = unique("twindel");
    let _project = project_with_slow_hook(&bed, &account, runs.path());
    let name = unique("twindel");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    bed.wait_until(
        "one replica to copy (its hook runs)",
        WAIT,
        || (lines_in(runs.path()) >= 1).then_some(()),
        || format!("{}\n{}", phase(&bed, &name), logs()),
    );
    let uid = bed
        .jsonpath(&["accountbackup", &name], "{.metadata.uid}")
        .expect("the backup's uid");

    // Deleted while one replica copies: the other, which may take the deletion, waits.
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        bed.jsonpath(&["accountbackup", &name], "{.metadata.deletionTimestamp}")
            .is_some(),
        "the deletion waits for the copy another replica runs: {}",
        logs()
    );
    bed.wait_until(
        "the backup to be gone once its copy ended",
        WAIT,
        || {
            bed.kubectl(&["get", "accountbackup", &name])
                .is_err()
                .then_some(())
        },
        logs,
    );
    assert_eq!(lines_in(runs.path()), 1, "copied once: {}", logs());
    // What the copy committed after the deletion began was released with the backup.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let left: Vec<String> = runtime
        .block_on(async { replicas[0].repository().await.list_snapshots().await })
        .expect("list the repository")
        .into_iter()
        .filter(|snapshot| {
            snapshot
                .metadata
                .get(rewind::archive::layout::BACKUP_UID_METADATA)
                .is_some_and(|value| *value == uid)
        })
        .map(|snapshot| snapshot.id)
        .collect();
    assert!(
        left.is_empty(),
        "no repository snapshot of the deleted backup is left: {left:?}\n{}",
        logs()
    );
    assert_eq!(
        account_lock_holder(&bed, &deployment.namespace, &account),
        None,
        "the account lock is released"
    );
    for mut replica in replicas {
        replica.stop();
    }
    let _ = bed.kubectl(&["delete", "namespace", &deployment.namespace, "--wait=false"]);
}

#[test]
fn a_restore_interrupted_by_a_crash_completes_after_the_restart_with_the_tokens_it_regenerated_once()
 {
    let Some((_turn, bed)) = own_turn_with_host_exec("the slow restore") else {
        return;
    };
    let deployment = OwnDeployment::new(&bed, "rewind-restart", &[]);
    let namespace = deployment.namespace.clone();
    let launch = |identity: &'static str| deployment.launch(identity);
    let mut first = Operator::spawn(&bed, &launch("before-crash"));

    let account = unique("rr");
    let project = bed.project("rr", &account);
    let ns = project.name.clone();
    let target = format!("{ns}-back");
    bed.bind_exec(&ns, &ns);
    bed.bind_exec(&target, &target);
    bed.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: {ns}\n  annotations:\n    rewind.dev/database: custom\n    rewind.dev/backup-command: echo hello-data\n    rewind.dev/restore-command: sleep 8; cat >/dev/null\nspec: {{containers: [{{name: db, image: busybox}}]}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keep-me, namespace: {ns}}}\ndata: {{a: b}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: api-token, namespace: {ns}, labels: {{rewind.dev/token: \"true\"}}}}\nstringData: {{token: the-original-token-value-42}}\n"
    ));
    bed.wait_for_phase(&ns, "pod", "db-0", "Running", WAIT);
    let backup = unique("rr-backup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    bed.wait_until(
        "the backup",
        WAIT,
        || (phase(&bed, &backup)["phase"] == "Completed").then_some(()),
        || first.log_tail(),
    );

    let restore = unique("rr-restore");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"));
    let restore_status = || {
        bed.kubectl(&[
            "get",
            "projectrestore",
            &restore,
            "-o",
            "jsonpath={.status}",
        ])
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null)
    };
    bed.wait_until(
        "the restore to load the database",
        WAIT,
        || {
            let running = restore_status()["phase"] == "Running";
            let loading = bed
                .jsonpath(&["-n", &target, "configmap", "keep-me"], "{.data.a}")
                .is_some();
            (running && loading).then_some(())
        },
        || first.log_tail(),
    );
    std::thread::sleep(Duration::from_secs(2));
    // The token Secret was created, with a new value, before the crash.
    let token = |namespace: &str| {
        bed.jsonpath(&["-n", namespace, "secret", "api-token"], "{.data.token}")
            .unwrap_or_default()
    };
    let regenerated = token(&target);
    assert!(
        !regenerated.is_empty() && regenerated != token(&ns),
        "the token was regenerated before the crash"
    );
    first.kill_hard();

    let second = Operator::spawn(&bed, &launch("after-crash"));
    let status = bed.wait_until(
        "the interrupted restore to complete after the restart",
        WAIT,
        || {
            let status = restore_status();
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || format!("{}\n{}", restore_status(), second.log_tail()),
    );
    assert_eq!(status["phase"], "Completed", "{status}");
    assert_eq!(status["restored"]["databases"], 1, "{status}");
    // The resumed restore kept the first attempt's token: regenerated exactly once.
    assert_eq!(
        token(&target),
        regenerated,
        "the resumed restore regenerated the token a second time"
    );
    // The backup completed under the first process; the second one's gauge comes from the
    // cluster, so the 26 h alert still works after a restart.
    let gauge = format!("rewind_last_successful_backup_timestamp_seconds{{account=\"{account}\"}}");
    bed.wait_until(
        "the restarted operator to export the last successful backup",
        WAIT,
        || second.get("/metrics").contains(&gauge).then_some(()),
        || second.get("/metrics"),
    );
    assert_eq!(
        bed.jsonpath(&["-n", &target, "configmap", "keep-me"], "{.data.a}")
            .as_deref(),
        Some("b")
    );
    bed.kubectl_ok(&["delete", "projectrestore", &restore]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--wait=false"]);
    let _ = bed.kubectl(&["delete", "namespace", &target, &namespace, "--wait=false"]);
    bed.unbind_exec(&target);
}

#[test]
fn a_backup_interrupted_after_its_volume_snapshot_leaves_no_orphaned_snapshot() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bed = Bed::get();
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "reading snapshots on the host") else {
        return;
    };
    if bed.external {
        eprintln!(
            "SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec for the slow dump"
        );
        return;
    }
    let deployment = OwnDeployment::new(&bed, "rewind-orphan", &["--dump-timeout", "60s"]);
    let launch = |identity: &'static str| deployment.launch(identity);
    let mut first = Operator::spawn(&bed, &launch("before-crash"));

    let account = unique("orphan");
    let project = bed.project("orphan", &account);
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    // Volumes are snapshotted before databases are dumped: the slow dump holds the copy open
    // after the snapshot was taken and detached, which is where the operator dies.
    bed.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: {ns}\n  annotations:\n    rewind.dev/database: custom\n    rewind.dev/backup-command: sleep 6; echo dumped\n    rewind.dev/restore-command: cat >/dev/null\nspec: {{containers: [{{name: db, image: busybox}}]}}\n"
    ));
    bed.wait_for_phase(&ns, "pvc", "data", "Bound", WAIT);
    bed.wait_for_phase(&ns, "pod", "db-0", "Running", WAIT);
    let backup = unique("orphan-backup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let uid = bed.kubectl_ok(&[
        "get",
        "accountbackup",
        &backup,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let pending = format!("rewind.dev/pending-for-backup={uid}");
    let first_handle = bed.wait_until(
        "the volume snapshot to be taken, detached and pending",
        WAIT,
        || {
            bed.kubectl(&[
                "get",
                "volumesnapshotcontents",
                "-l",
                &pending,
                "-o",
                "jsonpath={.items[0].status.snapshotHandle}",
            ])
            .ok()
            .filter(|handle| !handle.is_empty())
        },
        || first.log_tail(),
    );
    first.kill_hard();
    let tarball = |handle: &str| {
        std::path::Path::new(&csi_state)
            .join("snapshots")
            .join(format!("{handle}.tgz"))
    };
    assert!(
        tarball(&first_handle).exists(),
        "the first attempt's snapshot exists on the host"
    );

    let second = Operator::spawn(&bed, &launch("after-crash"));
    let status = bed.wait_until(
        "the interrupted backup to complete after the restart",
        WAIT,
        || {
            let status = phase(&bed, &backup);
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || format!("{}\n{}", phase(&bed, &backup), second.log_tail()),
    );
    assert_eq!(status["phase"], "Completed", "{status}");
    let kept = status["volumeSnapshots"][0]["snapshotHandle"]
        .as_str()
        .expect("the backup records its volume snapshot")
        .to_string();
    assert!(tarball(&kept).exists(), "the recorded snapshot exists");
    assert_ne!(kept, first_handle, "the resumed attempt snapshotted again");
    assert!(
        !tarball(&first_handle).exists(),
        "the interrupted attempt's snapshot {first_handle} was deleted, not orphaned"
    );
    assert_eq!(
        bed.kubectl_ok(&[
            "get",
            "volumesnapshotcontents",
            "-l",
            &pending,
            "-o",
            "name"
        ])
        .trim(),
        "",
        "no pending VolumeSnapshotContent is left once the backup is committed"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=90s"]);
    assert!(
        !tarball(&kept).exists(),
        "deleting the backup deletes its snapshot"
    );
    bed.unbind_exec(&ns);
}

#[test]
fn a_hook_that_never_returns_fails_the_backup_at_the_operation_timeout() {
    let Some((_turn, bed)) = own_turn_with_host_exec("the hook") else {
        return;
    };
    // The hook may take 10 minutes (it sleeps 2), the whole operation only 8 seconds.
    let deployment = OwnDeployment::new(
        &bed,
        "rewind-deadline",
        &["--operation-timeout", "8s", "--hook-timeout", "10m"],
    );
    let operator = Operator::spawn(&bed, &deployment.launch("deadline"));
    let account = unique("stuck");
    let project = bed.project("stuck", &account);
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    bed.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  namespace: {ns}\n  annotations: {{rewind.dev/pre-backup: \"sleep 120\"}}\nspec: {{containers: [{{name: app, image: busybox}}]}}\n"
    ));
    bed.wait_for_phase(&ns, "pod", "app", "Running", WAIT);
    let backup = unique("stuck");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let status = bed.wait_until(
        "the backup to fail at the operation timeout, not after the hook's 10 minutes",
        Duration::from_secs(90),
        || {
            let status = phase(&bed, &backup);
            (status["phase"] == "Failed").then_some(status)
        },
        || format!("{}\n{}", phase(&bed, &backup), operator.log_tail()),
    );
    assert!(
        status["conditions"]
            .to_string()
            .contains("DeadlineExceeded"),
        "{status}"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--wait=false"]);
    let _ = bed.kubectl(&["delete", "namespace", &deployment.namespace, "--wait=false"]);
}

#[test]
fn a_deletion_that_cannot_release_its_snapshot_says_so_and_how_to_get_out() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bed = Bed::get();
    let deployment = OwnDeployment::new(&bed, "rewind-blocked", &["--snapshot-timeout", "3s"]);
    let operator = Operator::spawn(&bed, &deployment.launch("blocked"));
    let account = unique("gone");
    let _project = bed.project("gone", &account);
    let backup = unique("gone");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    bed.wait_until(
        "the backup",
        WAIT,
        || (phase(&bed, &backup)["phase"] == "Completed").then_some(()),
        || operator.log_tail(),
    );
    // A snapshot on a CSI driver that no longer runs: nothing will ever delete it.
    bed.kubectl_ok(&[
        "patch",
        "accountbackup",
        &backup,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"volumeSnapshots":[{"project":"p","pvc":"data","driver":"gone.csi.example.com","snapshotHandle":"ghost-1","ready":true}]}}"#,
    ]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--wait=false"]);
    let status = bed.wait_until(
        "the DeletionBlocked condition",
        WAIT,
        || {
            let status = phase(&bed, &backup);
            status["conditions"]
                .to_string()
                .contains("DeletionBlocked")
                .then_some(status)
        },
        || format!("{}\n{}", phase(&bed, &backup), operator.log_tail()),
    );
    let conditions = status["conditions"].to_string();
    assert!(
        conditions.contains("/metadata/finalizers") && conditions.contains("could not be released"),
        "{status}"
    );
    // The documented way out works.
    bed.kubectl_ok(&[
        "patch",
        "accountbackup",
        &backup,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    bed.wait_until(
        "the AccountBackup to be gone",
        WAIT,
        || {
            bed.kubectl(&["get", "accountbackup", &backup])
                .is_err()
                .then_some(())
        },
        String::new,
    );
    // The temporary content for the gone driver is removed the same way.
    let listed = bed.kubectl_ok(&[
        "get",
        "volumesnapshotcontents",
        "-o",
        r#"jsonpath={range .items[?(@.spec.driver=="gone.csi.example.com")]}volumesnapshotcontent/{.metadata.name}{"\n"}{end}"#,
    ]);
    for content in listed.lines().filter(|line| !line.is_empty()) {
        let _ = bed.kubectl(&[
            "patch",
            content,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ]);
        let _ = bed.kubectl(&["delete", content, "--wait=false"]);
    }
    let _ = bed.kubectl(&["delete", "namespace", &deployment.namespace, "--wait=false"]);
}
