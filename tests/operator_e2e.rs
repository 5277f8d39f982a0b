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

fn lease_holder(bed: &Bed, namespace: &str) -> Option<String> {
    bed.jsonpath(
        &["-n", namespace, "lease", "rewind-operator-leader"],
        "{.spec.holderIdentity}",
    )
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
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bed = Bed::get();
    if bed.external {
        eprintln!(
            "SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec for the slow hook"
        );
        return;
    }
    Operator::install_crds(&bed);
    let namespace = unique("rewind-ha");
    bed.kubectl_ok(&["create", "namespace", &namespace]);
    let state = tempfile::tempdir().expect("temp dir");
    let key = new_key_hex();
    let launch = |identity: &'static str| Launch {
        namespace: &namespace,
        identity,
        state_dir: state.path(),
        key_hex: &key,
        extra_args: &["--hook-timeout", "60s"],
    };
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
    let project = bed.namespace("ha");
    bed.kubectl_ok(&[
        "label",
        "namespace",
        &project.name,
        &format!("rewind.dev/account={account}"),
    ]);
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

#[test]
fn a_restore_interrupted_by_a_crash_completes_after_the_restart() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bed = Bed::get();
    if bed.external {
        eprintln!(
            "SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec for the slow restore"
        );
        return;
    }
    Operator::install_crds(&bed);
    let namespace = unique("rewind-restart");
    bed.kubectl_ok(&["create", "namespace", &namespace]);
    let state = tempfile::tempdir().expect("temp dir");
    let key = new_key_hex();
    let launch = |identity: &'static str| Launch {
        namespace: &namespace,
        identity,
        state_dir: state.path(),
        key_hex: &key,
        extra_args: &[],
    };
    let mut first = Operator::spawn(&bed, &launch("before-crash"));

    let account = unique("rr");
    let project = bed.namespace("rr");
    let ns = project.name.clone();
    let target = format!("{ns}-back");
    bed.kubectl_ok(&[
        "label",
        "namespace",
        &ns,
        &format!("rewind.dev/account={account}"),
    ]);
    bed.bind_exec(&ns, &ns);
    bed.bind_exec(&target, &target);
    bed.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: {ns}\n  annotations:\n    rewind.dev/database: custom\n    rewind.dev/backup-command: echo hello-data\n    rewind.dev/restore-command: sleep 8; cat >/dev/null\nspec: {{containers: [{{name: db, image: busybox}}]}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keep-me, namespace: {ns}}}\ndata: {{a: b}}\n"
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
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"));
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
