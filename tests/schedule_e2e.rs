//! BackupSchedule on the test bed: every-minute slots, retention, suspend, a restart at the
//! slot boundary, admission of bad schedules, the global concurrency limit, and backup sync
//! from the repository.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::operator::{Launch, Operator, new_key_hex};
use support::{Bed, TestNamespace, unique};

const WAIT: Duration = Duration::from_secs(120);

/// Each test runs its own operators, and an operator reconciles every backup and schedule of
/// the cluster: two tests at once would steal each other's work, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn json(bed: &Bed, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    bed.kubectl(&full)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// The schedule's AccountBackups: name → (phase, slot annotation).
fn backups_of(bed: &Bed, schedule: &str) -> BTreeMap<String, (String, String)> {
    let list = json(
        bed,
        &[
            "accountbackups",
            "-l",
            &format!("rewind.dev/schedule={schedule}"),
        ],
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["metadata"]["deletionTimestamp"].is_null())
        .map(|item| {
            (
                item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                (
                    item["status"]["phase"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    item["metadata"]["annotations"]["rewind.dev/slot"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            )
        })
        .collect()
}

/// A project of a new account holding one ConfigMap.
fn small_account<'b>(bed: &'b Bed, prefix: &str) -> (String, TestNamespace<'b>) {
    let account = unique(prefix);
    let project = bed.project(prefix, &account);
    bed.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keep-me, namespace: {}}}\ndata: {{a: b}}\n",
        project.name
    ));
    (account, project)
}

/// A project whose pre-backup hook sleeps, so its backup stays Running for a while.
fn slow_account<'b>(bed: &'b Bed, prefix: &str, seconds: u32) -> (String, TestNamespace<'b>) {
    let (account, project) = small_account(bed, prefix);
    bed.bind_exec(&project.name, &project.name);
    bed.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  namespace: {}\n  annotations: {{rewind.dev/pre-backup: \"sleep {seconds}\"}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n",
        project.name
    ));
    bed.wait_for_phase(&project.name, "pod", "slow", "Running", WAIT);
    (account, project)
}

fn seconds_into_minute() -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() % 60) as f64 + f64::from(now.subsec_millis()) / 1000.0
}

/// Sleeps until `offset` seconds after the next minute boundary; returns that boundary as
/// `yyyymmddhhmm` in UTC (the slot part of a scheduled backup's name).
fn sleep_past_next_minute(offset: f64) -> String {
    let into = seconds_into_minute();
    std::thread::sleep(Duration::from_secs_f64(60.0 - into + offset));
    let boundary = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 60
        * 60;
    minute_name(boundary)
}

/// `yyyymmddhhmm` (UTC) of a Unix time.
fn minute_name(unix: u64) -> String {
    jiff::Timestamp::from_second(i64::try_from(unix).unwrap_or_default())
        .expect("a time")
        .strftime("%Y%m%d%H%M")
        .to_string()
}

fn launch<'a>(
    namespace: &'a str,
    identity: &'a str,
    state: &'a tempfile::TempDir,
    key: &'a str,
    extra_args: &'a [&'a str],
) -> Launch<'a> {
    Launch {
        namespace,
        identity,
        state_dir: state.path(),
        key_hex: key,
        extra_args,
        repository: None,
        env: &[],
    }
}

fn operator_namespace(bed: &Bed, prefix: &str) -> String {
    Operator::install_crds(bed);
    let namespace = unique(prefix);
    bed.kubectl_ok(&["create", "namespace", &namespace]);
    namespace
}

#[test]
fn an_every_minute_schedule_backs_up_each_slot_prunes_to_keep_last_and_stops_when_suspended() {
    let _turn = take_turn();
    let bed = Bed::get();
    let namespace = operator_namespace(&bed, "rewind-sched");
    let state = tempfile::tempdir().expect("temp dir");
    let key = new_key_hex();
    let operator = Operator::spawn(&bed, &launch(&namespace, "scheduler", &state, &key, &[]));
    let (account, _project) = small_account(&bed, "every-minute");
    let schedule = unique("every-minute");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: {schedule}}}\nspec:\n  account: {account}\n  schedule: '* * * * *'\n  retention: {{keepLast: 2}}\n"
    ));

    let mut seen = BTreeSet::new();
    let kept = bed.wait_until(
        "three slots backed up and the schedule pruned to keepLast 2",
        Duration::from_secs(300),
        || {
            let backups = backups_of(&bed, &schedule);
            seen.extend(backups.keys().cloned());
            let all_done = backups.values().all(|(phase, _)| phase == "Completed");
            (seen.len() >= 3 && backups.len() == 2 && all_done).then_some(backups)
        },
        || format!("{:?}\n{}", backups_of(&bed, &schedule), operator.log_tail()),
    );
    for (name, (_, slot)) in &kept {
        assert!(
            name.starts_with(&format!("{schedule}-")) && name.len() == schedule.len() + 13,
            "backup names are <schedule>-<yyyymmddhhmm>: {name}"
        );
        assert!(!slot.is_empty(), "{name} records its slot");
    }
    let newest = kept.keys().max().cloned().unwrap_or_default();
    let pruned: Vec<&String> = seen.iter().filter(|n| !kept.contains_key(*n)).collect();
    assert!(!pruned.is_empty());
    assert!(
        pruned.iter().all(|name| *name < &newest),
        "the oldest go first: pruned {pruned:?}, kept {kept:?}"
    );
    let events = bed.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("involvedObject.name={schedule},reason=Pruned"),
    ]);
    assert!(events.contains("Pruned"), "a Pruned event: {events}");

    // Pruning went through the finalizer: the repository keeps only the kept backups' snapshots.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    bed.wait_until(
        "the pruned backups' snapshots to be released",
        WAIT,
        || {
            let snapshots = runtime.block_on(async {
                operator
                    .repository()
                    .await
                    .list_snapshots()
                    .await
                    .expect("list snapshots")
            });
            let names: BTreeSet<String> = snapshots
                .iter()
                .filter_map(|s| s.metadata.get("backup").cloned())
                .collect();
            let live: BTreeSet<String> = backups_of(&bed, &schedule).keys().cloned().collect();
            (names.is_subset(&live) && snapshots.len() <= 3).then_some(())
        },
        || operator.log_tail(),
    );

    let status = json(&bed, &["backupschedule", &schedule])["status"].clone();
    assert!(status["lastScheduleTime"].is_string(), "{status}");
    assert!(status["nextScheduleTime"].is_string(), "{status}");
    assert!(
        kept.contains_key(status["lastSuccessfulBackup"].as_str().unwrap_or_default()),
        "lastSuccessfulBackup names a kept backup: {status}"
    );

    // Suspend: no new backup, no next time, but the kept ones stay.
    bed.kubectl_ok(&[
        "patch",
        "backupschedule",
        &schedule,
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    bed.wait_until(
        "the schedule to report Suspended",
        WAIT,
        || {
            let status = json(&bed, &["backupschedule", &schedule])["status"].clone();
            (status["nextScheduleTime"].is_null() && status.to_string().contains("Suspended"))
                .then_some(())
        },
        || operator.log_tail(),
    );
    let before: BTreeSet<String> = backups_of(&bed, &schedule).keys().cloned().collect();
    sleep_past_next_minute(20.0);
    let after: BTreeSet<String> = backups_of(&bed, &schedule).keys().cloned().collect();
    assert_eq!(
        before, after,
        "a suspended schedule creates no backup and deletes none of the kept ones"
    );

    bed.kubectl_ok(&["delete", "backupschedule", &schedule, "--wait=false"]);
    let _ = bed.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

#[test]
fn an_operator_restart_at_the_slot_boundary_yields_exactly_one_backup_per_slot() {
    let _turn = take_turn();
    let bed = Bed::get();
    let namespace = operator_namespace(&bed, "rewind-slot");
    let state = tempfile::tempdir().expect("temp dir");
    let key = new_key_hex();
    // Without leader election the replacement starts acting at once, at the boundary.
    let args = ["--no-leader-election"];
    let mut first = Operator::spawn(&bed, &launch(&namespace, "before", &state, &key, &args));
    let (account, _project) = small_account(&bed, "boundary");
    if seconds_into_minute() > 50.0 {
        sleep_past_next_minute(1.0);
    }
    let schedule = unique("boundary");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: {schedule}}}\nspec:\n  account: {account}\n  schedule: '* * * * *'\n"
    ));
    bed.wait_until(
        "the schedule to know its next slot",
        WAIT,
        || bed.jsonpath(&["backupschedule", &schedule], "{.status.nextScheduleTime}"),
        || first.log_tail(),
    );
    // Kill the operator 300 ms after the slot passed, while it creates that slot's backup.
    let slot = sleep_past_next_minute(0.3);
    first.kill_hard();
    let second = Operator::spawn(&bed, &launch(&namespace, "after", &state, &key, &args));
    let next_slot = sleep_past_next_minute(15.0);

    let backups = bed.wait_until(
        "both slots' backups to complete",
        WAIT,
        || {
            let backups = backups_of(&bed, &schedule);
            let next = format!("{schedule}-{next_slot}");
            (backups.contains_key(&next) && backups.values().all(|(phase, _)| phase == "Completed"))
                .then_some(backups)
        },
        || second.log_tail(),
    );
    let names: Vec<&String> = backups.keys().collect();
    assert_eq!(
        names,
        [
            &format!("{schedule}-{slot}"),
            &format!("{schedule}-{next_slot}")
        ],
        "one backup for the slot of the restart and one for the next; no catch-up storm, no gap"
    );
    let slots: BTreeSet<&String> = backups.values().map(|(_, slot)| slot).collect();
    assert_eq!(slots.len(), 2, "each backup has its own slot: {backups:?}");

    bed.kubectl_ok(&["delete", "backupschedule", &schedule, "--wait=false"]);
    let _ = bed.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

#[test]
fn an_invalid_cron_or_time_zone_is_rejected_by_kubectl_apply() {
    let bed = Bed::get();
    Operator::install_crds(&bed);
    let apply = |schedule: &str, zone: &str| {
        let yaml = format!(
            "apiVersion: rewind.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: {}}}\nspec: {{account: acme, schedule: '{schedule}', timeZone: {zone}}}\n",
            unique("invalid")
        );
        bed.kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml.as_bytes()))
    };
    for schedule in [
        "75 3 * * *",
        "0 24 * * *",
        "0 3 * *",
        "0 3 * * MON",
        "@sometimes",
    ] {
        let refused = apply(schedule, "UTC").expect_err(schedule);
        assert!(
            refused.contains("spec.schedule") && refused.contains("minute 0-59"),
            "{schedule}: {refused}"
        );
    }
    for schedule in ["5-1 * * * *", "0 3 1,31-2 * *", "0 3 * * 5-1/2"] {
        let refused = apply(schedule, "UTC").expect_err(schedule);
        assert!(
            refused.contains("spec.schedule") && refused.contains("reversed range"),
            "{schedule}: {refused}"
        );
    }
    let refused = apply("0 3 * * *", "Mars/Olympus").expect_err("Mars/Olympus");
    assert!(
        refused.contains("spec.timeZone") && refused.contains("IANA time zone"),
        "{refused}"
    );
    let accepted = apply("*/15 2-4 1,15 * 1-5", "Europe/Berlin").expect("a valid schedule");
    let name = accepted
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    bed.kubectl_ok(&["delete", &name, "--wait=false"]);
}

#[test]
fn backups_beyond_the_concurrency_limit_wait_in_queued_and_start_on_their_own() {
    let _turn = take_turn();
    let bed = Bed::get();
    if bed.external {
        eprintln!(
            "SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec for the slow hook"
        );
        return;
    }
    let namespace = operator_namespace(&bed, "rewind-limit");
    let state = tempfile::tempdir().expect("temp dir");
    let key = new_key_hex();
    let args = ["--max-concurrent-backups", "1"];
    let operator = Operator::spawn(&bed, &launch(&namespace, "limited", &state, &key, &args));
    let (first_account, _first) = slow_account(&bed, "limit-a", 6);
    let (second_account, _second) = slow_account(&bed, "limit-b", 6);
    let names = [unique("limit-a"), unique("limit-b")];
    for (name, account) in names.iter().zip([&first_account, &second_account]) {
        bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    }
    let mut most_running = 0;
    let mut queued_for_the_limit = None;
    bed.wait_until(
        "both backups to complete, one at a time",
        WAIT,
        || {
            // One LIST: both phases as of one moment (two GETs could straddle a hand-over).
            let listed = json(&bed, &["accountbackups"]);
            let statuses: Vec<Value> = names
                .iter()
                .map(|name| {
                    listed["items"]
                        .as_array()
                        .and_then(|items| items.iter().find(|i| i["metadata"]["name"] == **name))
                        .map(|item| item["status"].clone())
                        .unwrap_or(Value::Null)
                })
                .collect();
            let running = statuses.iter().filter(|s| s["phase"] == "Running").count();
            most_running = most_running.max(running);
            if let Some(queued) = statuses.iter().find(|s| s["phase"] == "Queued") {
                let behind = queued["queuedBehind"].as_str().unwrap_or_default();
                if behind.contains("limit of 1 concurrent backups") {
                    queued_for_the_limit = Some(behind.to_string());
                }
            }
            statuses
                .iter()
                .all(|s| s["phase"] == "Completed")
                .then_some(())
        },
        || operator.log_tail(),
    );
    assert_eq!(most_running, 1, "never more than the limit Running at once");
    assert!(
        queued_for_the_limit.is_some(),
        "the second backup waited in Queued, saying it waits for the limit"
    );
    for name in &names {
        bed.kubectl_ok(&["delete", "accountbackup", name, "--wait=false"]);
    }
    let _ = bed.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

#[test]
fn lost_account_backups_come_back_from_the_repository_and_can_be_restored() {
    let _turn = take_turn();
    let bed = Bed::get();
    let namespace = operator_namespace(&bed, "rewind-sync");
    let state = tempfile::tempdir().expect("temp dir");
    let key = new_key_hex();
    let args = ["--sync-interval", "2s"];
    let mut first = Operator::spawn(&bed, &launch(&namespace, "original", &state, &key, &args));
    let (account, project) = small_account(&bed, "sync");
    let backup = unique("sync-backup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}, notes: before the rebuild, ttl: 48h}}\n"));
    let original = bed.wait_until(
        "the backup",
        WAIT,
        || {
            let status = json(&bed, &["accountbackup", &backup])["status"].clone();
            (status["phase"] == "Completed").then_some(status)
        },
        || first.log_tail(),
    );
    first.stop();

    // The object is lost the way a cluster rebuild loses it: gone, its finalizer never run.
    bed.kubectl_ok(&[
        "patch",
        "accountbackup",
        &backup,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup]);
    assert!(bed.kubectl(&["get", "accountbackup", &backup]).is_err());

    let second = Operator::spawn(&bed, &launch(&namespace, "rebuilt", &state, &key, &args));
    let imported = bed.wait_until(
        "the sync to bring the backup back",
        WAIT,
        || {
            let object = json(&bed, &["accountbackup", &backup]);
            (object["status"]["phase"] == "Completed").then_some(object)
        },
        || second.log_tail(),
    );
    let labels = &imported["metadata"]["labels"];
    assert_eq!(labels["rewind.dev/imported"], "true", "{imported}");
    assert_eq!(labels["rewind.dev/account"], account.as_str());
    assert_eq!(imported["spec"]["notes"], "before the rebuild");
    assert_eq!(imported["spec"]["ttl"], "48h");
    let status = &imported["status"];
    assert_eq!(status["repositorySnapshot"], original["repositorySnapshot"]);
    assert_eq!(status["completedAt"], original["completedAt"]);
    assert_eq!(status["restorableUntil"], original["restorableUntil"]);
    assert_eq!(status["projects"], original["projects"], "{status}");
    assert!(
        status["activity"]
            .to_string()
            .contains("imported from repository snapshot"),
        "{status}"
    );

    let target = format!("{}-back", project.name);
    let restore = unique("sync-restore");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{}: {target}}}\n", project.name));
    let restored = bed.wait_until(
        "the restore from the imported backup",
        WAIT,
        || {
            let status = json(&bed, &["projectrestore", &restore])["status"].clone();
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || second.log_tail(),
    );
    assert_eq!(restored["phase"], "Completed", "{restored}");
    assert_eq!(
        bed.jsonpath(&["-n", &target, "configmap", "keep-me"], "{.data.a}")
            .as_deref(),
        Some("b")
    );

    bed.kubectl_ok(&["delete", "projectrestore", &restore]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup]);
    let _ = bed.kubectl(&["delete", "namespace", &target, &namespace, "--wait=false"]);
}
