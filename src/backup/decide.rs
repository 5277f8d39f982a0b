//! What an AccountBackup should do next, and the status that says so (pure: no client, time injected).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AccountBackup, AccountBackupStatus, ActivityLevel, BackupPhase, ByteSize, Progress,
};
use crate::archive::layout::BackupOutcome;
use crate::status::{READY, push_activity, set_condition};

/// A project namespace as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedProject {
    /// Namespace name.
    pub name: String,
    /// The `rewind.dev/busy` annotation, when set.
    pub busy: Option<String>,
    /// The namespace is being deleted.
    pub terminating: bool,
    /// Its Pod Security Admission labels, carried into a restored copy.
    pub pod_security: std::collections::BTreeMap<String, String>,
}

/// What a backup that has not started yet should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartDecision {
    /// It can never run: fail with a reason and a message saying what to do.
    Fail {
        reason: &'static str,
        message: String,
    },
    /// A project is busy: wait, showing why.
    Queue { behind: String },
    /// Try to take the account's lock and start.
    TryStart,
}

/// Decides whether a Queued (or new) backup can start.
pub fn decide_start(backup: &AccountBackup, projects: &[ObservedProject]) -> StartDecision {
    if let Err(err) = backup.spec.ttl.get() {
        return StartDecision::Fail {
            reason: "InvalidTTL",
            message: err.to_string(),
        };
    }
    let live: Vec<&ObservedProject> = projects.iter().filter(|p| !p.terminating).collect();
    if live.is_empty() {
        return StartDecision::Fail {
            reason: "NoProjects",
            message: format!(
                "no namespace is labelled rewind.dev/account={account}: label the account's project namespaces \
                 (kubectl label namespace <project> rewind.dev/account={account}) and create a new AccountBackup",
                account = backup.spec.account
            ),
        };
    }
    if let Some(busy) = live
        .iter()
        .find_map(|p| p.busy.as_ref().map(|reason| (p, reason)))
    {
        return StartDecision::Queue {
            behind: format!("project {} is busy: {}", busy.0.name, busy.1),
        };
    }
    StartDecision::TryStart
}

/// What a finished backup should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishedDecision {
    /// Past `restorableUntil`: mark Expired and release its data.
    Expire,
    /// Still restorable: look again at this time.
    RecheckAt(Timestamp),
    /// Nothing will change on its own.
    Nothing,
}

/// Decides for a backup in a finished phase.
pub fn decide_finished(status: &AccountBackupStatus, now: Timestamp) -> FinishedDecision {
    match (status.phase, &status.restorable_until) {
        (Some(BackupPhase::Completed | BackupPhase::PartiallyFailed), Some(Time(until)))
            if *until <= now =>
        {
            FinishedDecision::Expire
        }
        (Some(BackupPhase::Completed | BackupPhase::PartiallyFailed), Some(Time(until))) => {
            FinishedDecision::RecheckAt(*until)
        }
        _ => FinishedDecision::Nothing,
    }
}

/// A Running backup that has run longer than this is failed rather than left Running for ever.
pub fn running_too_long(status: &AccountBackupStatus, now: Timestamp, limit: Duration) -> bool {
    crate::status::past_deadline(status.started_at.as_ref(), now, limit)
}

/// How long a Running backup may still run before the operation timeout (pure): the copy is
/// cut off then, so a step that hangs (a hook, a dump) cannot hold a backup slot for ever.
pub fn time_left(status: &AccountBackupStatus, now: Timestamp, limit: Duration) -> Duration {
    crate::status::time_left(status.started_at.as_ref(), now, limit)
}

fn base(backup: &AccountBackup) -> AccountBackupStatus {
    let mut status = backup.status.clone().unwrap_or_default();
    status.observed_generation = backup.metadata.generation;
    status
}

/// Status of a backup waiting for its turn. Logs only when what it waits for changes.
pub fn queued_status(backup: &AccountBackup, behind: &str, now: Timestamp) -> AccountBackupStatus {
    let mut status = base(backup);
    let changed = status.queued_behind.as_deref() != Some(behind)
        || status.phase != Some(BackupPhase::Queued);
    status.phase = Some(BackupPhase::Queued);
    status.queued_behind = Some(behind.to_string());
    if changed {
        push_activity(
            &mut status.activity,
            ActivityLevel::Info,
            format!("queued behind {behind}"),
            now,
        );
    }
    set_condition(
        &mut status.conditions,
        READY,
        false,
        "Queued",
        format!("waiting for {behind}; starts on its own when that ends"),
        backup.metadata.generation,
        now,
    );
    status
}

/// Status of a backup that has just taken its account's lock.
pub fn started_status(backup: &AccountBackup, now: Timestamp) -> AccountBackupStatus {
    let mut status = base(backup);
    if status.activity.is_empty() {
        push_activity(&mut status.activity, ActivityLevel::Info, "requested", now);
    }
    status.phase = Some(BackupPhase::Running);
    status.queued_behind = None;
    status.started_at = Some(Time(now));
    status.requested_by = requested_by(backup);
    status.progress = Some(Progress::default());
    push_activity(
        &mut status.activity,
        ActivityLevel::Info,
        format!("started backing up account {}", backup.spec.account),
        now,
    );
    set_condition(
        &mut status.conditions,
        READY,
        false,
        "Running",
        "copying the account's projects",
        backup.metadata.generation,
        now,
    );
    status
}

/// The activity entry that opens a copy attempt: "copying" the first time, a resume warning after.
pub fn copy_attempt_entry(status: &AccountBackupStatus) -> (ActivityLevel, &'static str) {
    if is_resumed(status) {
        (
            ActivityLevel::Warning,
            "resumed: the previous copy attempt did not finish (an operator restart or a failed reconcile, see the events); copying again (data already stored is deduplicated)",
        )
    } else {
        (ActivityLevel::Info, COPYING)
    }
}

/// Whether a copy attempt already started for this backup: the operator stopped mid-copy.
/// Read from a counter of its own, not from the activity log, which keeps only its last entries
/// (an account of many projects pushes the first "copying" out). Statuses written before the
/// counter existed still carry the entry.
pub fn is_resumed(status: &AccountBackupStatus) -> bool {
    status.copy_attempts.unwrap_or(0) > 0 || status.activity.iter().any(|e| e.message == COPYING)
}

/// Records that one more copy attempt starts (written before the attempt copies anything).
pub fn count_copy_attempt(status: &mut AccountBackupStatus) {
    status.copy_attempts = Some(status.copy_attempts.unwrap_or(0).saturating_add(1));
}

const COPYING: &str = "copying";

/// Who asked for the backup: the `rewind.dev/requested-by` annotation (set by `kubectl rewind`
/// and by BackupSchedules), else the schedule that owns it; unknown otherwise.
pub fn requested_by(backup: &AccountBackup) -> Option<String> {
    backup
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::REQUESTED_BY_ANNOTATION).cloned())
        .or_else(|| {
            backup
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|o| o.kind == "BackupSchedule")
                .map(|o| format!("BackupSchedule/{}", o.name))
        })
}

/// The condition type that says a deletion waits for something outside Rewind.
pub const DELETION_BLOCKED: &str = "DeletionBlocked";

/// What to do when a backup's deletion cannot release its data (pure): the message names the
/// cause and the way out, which leaves the data where it is.
pub fn deletion_blocked_message(backup: &str, cause: &str) -> String {
    format!(
        "deleting AccountBackup {backup} waits: its data could not be released ({cause}); Rewind retries with backoff. \
         Fix the cause (the CSI snapshot controller and driver, the repository), or delete the object without \
         releasing its data — its physical snapshots and repository data then stay and are yours to remove: \
         kubectl patch accountbackup {backup} --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'"
    )
}

/// The status of a backup whose deletion is blocked: the condition, and the cause in the log.
pub fn deletion_blocked_status(
    backup: &AccountBackup,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> AccountBackupStatus {
    let mut status = base(backup);
    let already = status
        .conditions
        .iter()
        .any(|c| c.type_ == DELETION_BLOCKED && c.status == "True" && c.message == message);
    if !already {
        push_activity(&mut status.activity, ActivityLevel::Error, message, now);
    }
    set_condition(
        &mut status.conditions,
        DELETION_BLOCKED,
        true,
        reason,
        message,
        backup.metadata.generation,
        now,
    );
    status
}

/// Status of a backup that cannot produce anything restorable.
pub fn failed_status(
    backup: &AccountBackup,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> AccountBackupStatus {
    let mut status = base(backup);
    status.phase = Some(BackupPhase::Failed);
    status.queued_behind = None;
    status.completed_at = Some(Time(now));
    push_activity(&mut status.activity, ActivityLevel::Error, message, now);
    set_condition(
        &mut status.conditions,
        READY,
        false,
        reason,
        message,
        backup.metadata.generation,
        now,
    );
    status
}

/// How long an Expired backup stays listed before its object is deleted.
pub const EXPIRED_VISIBLE_FOR: Duration = Duration::from_secs(24 * 3600);

/// Until when an Expired backup object stays: `None` when it is due for deletion now.
pub fn expired_object_due(status: &AccountBackupStatus, now: Timestamp) -> Option<Duration> {
    let Time(until) = status.restorable_until.clone()?;
    let visible = SignedDuration::try_from(EXPIRED_VISIBLE_FOR).ok()?;
    let due = until.checked_add(visible).ok()?;
    (due > now).then(|| {
        due.duration_since(now)
            .unsigned_abs()
            .min(Duration::from_secs(3600))
    })
}

/// Status of a backup whose data was released after `restorableUntil`.
pub fn expired_status(backup: &AccountBackup, now: Timestamp) -> AccountBackupStatus {
    let mut status = base(backup);
    status.phase = Some(BackupPhase::Expired);
    // The data is released: nothing here points at it any more, so a later deletion has
    // nothing to read from the repository or delete.
    status.repository_snapshot = None;
    status.volume_snapshots.clear();
    status.volume_snapshot_count = 0;
    status.database_dumps.clear();
    status.database_dump_count = 0;
    push_activity(
        &mut status.activity,
        ActivityLevel::Info,
        "expired: past restorableUntil, data released",
        now,
    );
    set_condition(
        &mut status.conditions,
        READY,
        false,
        "Expired",
        "the backup is past restorableUntil and can no longer be restored",
        backup.metadata.generation,
        now,
    );
    status
}

/// Status of a backup rebuilt from its repository snapshot: as it was when it finished, with
/// `restorableUntil` counted from the original completion.
pub fn imported_status(
    backup: &AccountBackup,
    snapshot_id: &str,
    outcome: &BackupOutcome,
    completed_at: Timestamp,
    now: Timestamp,
) -> AccountBackupStatus {
    let outcome = BackupOutcome {
        snapshot_id: snapshot_id.to_string(),
        ..outcome.clone()
    };
    let mut status = finished_status(backup, &outcome, completed_at);
    push_activity(
        &mut status.activity,
        ActivityLevel::Info,
        format!(
            "imported from repository snapshot {snapshot_id}: the AccountBackup object had been lost"
        ),
        now,
    );
    status
}

/// Whether a reconcile may act on its cached object: only when the API server still shows the
/// same object (same uid) in one of `phases`. A reconcile may run on a cached object older than
/// the status the previous reconcile wrote; acting on it would start again a backup that has
/// just started or finished.
pub fn cache_is_current(
    cached: &AccountBackup,
    live: Option<&AccountBackup>,
    phases: &[Option<BackupPhase>],
) -> bool {
    live.is_some_and(|live| {
        live.metadata.uid == cached.metadata.uid
            && phases.contains(&live.status.as_ref().and_then(|s| s.phase))
    })
}

/// Status of a backup whose copy step finished: Completed, or PartiallyFailed listing each failed item.
pub fn finished_status(
    backup: &AccountBackup,
    outcome: &BackupOutcome,
    now: Timestamp,
) -> AccountBackupStatus {
    let mut status = base(backup);
    let ttl = backup
        .spec
        .ttl
        .get()
        .unwrap_or(Duration::from_secs(168 * 3600));
    let restorable_until = SignedDuration::try_from(ttl)
        .ok()
        .and_then(|ttl| now.checked_add(ttl).ok())
        .unwrap_or(Timestamp::MAX);
    status.completed_at = Some(Time(now));
    status.restorable_until = Some(Time(restorable_until));
    status.repository_snapshot = Some(outcome.snapshot_id.clone());
    // Lists of records are bounded too: the first ones and a count (the restore and the release
    // read the whole list from the repository when the status does not hold it all).
    let first = |len: usize| len.min(crate::status::ITEM_LIST_LIMIT);
    let mut projects = Vec::new();
    for project in &outcome.projects[..first(outcome.projects.len())] {
        projects.push(crate::status::summary_for_status(&projects, project));
    }
    status.projects = projects;
    status.project_count = outcome.projects.len() as u64;
    // The repository's outcome record of this backup keeps every item; the status the first ones.
    let where_all = "the backup's outcome record in the repository has all of them";
    status.failed = crate::status::first_items(&outcome.failed, where_all);
    status.volume_snapshots =
        outcome.volume_snapshots[..first(outcome.volume_snapshots.len())].to_vec();
    status.volume_snapshot_count = outcome.volume_snapshots.len() as u64;
    status.database_dumps = outcome.database_dumps[..first(outcome.database_dumps.len())].to_vec();
    status.database_dump_count = outcome.database_dumps.len() as u64;
    status.excluded = crate::status::first_items(&outcome.excluded, where_all);
    for warning in &outcome.warnings {
        push_activity(
            &mut status.activity,
            ActivityLevel::Warning,
            warning.clone(),
            now,
        );
    }
    status.size = Some(ByteSize::new(outcome.stored_bytes));
    status.logical_size = Some(ByteSize::new(outcome.logical_bytes));
    status.progress = Some(Progress {
        items_done: outcome.items,
        items_total: outcome.items,
        bytes_done: outcome.logical_bytes,
        ..Progress::default()
    });
    for failure in &outcome.failed {
        push_activity(
            &mut status.activity,
            ActivityLevel::Error,
            format!(
                "{} {}/{} failed: {}",
                failure.kind, failure.project, failure.name, failure.reason
            ),
            now,
        );
    }
    let resources: u64 = outcome.projects.iter().map(|p| p.resources).sum();
    let summary = format!(
        "{} resources, {} volumes, {} databases of {} projects, {} logical, {} stored",
        resources,
        outcome.volume_snapshots.len(),
        outcome.database_dumps.len(),
        outcome.projects.len(),
        crate::api::human_bytes(outcome.logical_bytes),
        crate::api::human_bytes(outcome.stored_bytes)
    );
    if outcome.failed.is_empty() {
        status.phase = Some(BackupPhase::Completed);
        push_activity(
            &mut status.activity,
            ActivityLevel::Info,
            format!("completed: {summary}"),
            now,
        );
        set_condition(
            &mut status.conditions,
            READY,
            true,
            "Completed",
            summary,
            backup.metadata.generation,
            now,
        );
    } else {
        status.phase = Some(BackupPhase::PartiallyFailed);
        let message = format!(
            "{} items failed (see status.failed); restorable: {summary}",
            outcome.failed.len()
        );
        push_activity(
            &mut status.activity,
            ActivityLevel::Warning,
            message.clone(),
            now,
        );
        set_condition(
            &mut status.conditions,
            READY,
            true,
            "PartiallyFailed",
            message,
            backup.metadata.generation,
            now,
        );
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ItemOutcome;

    fn in_phase(backup: &AccountBackup, phase: Option<BackupPhase>) -> AccountBackup {
        let mut copy = backup.clone();
        copy.status = phase.map(|phase| AccountBackupStatus {
            phase: Some(phase),
            ..AccountBackupStatus::default()
        });
        copy
    }

    /// CloudNativePG's double-start test, for Rewind: the controller's cache lags behind the
    /// status the previous reconcile wrote, and the backup still starts (and copies) once.
    #[test]
    fn a_lagging_cache_never_starts_or_copies_a_backup_twice() {
        let mut backup = AccountBackup::new(
            "nightly",
            serde_json::from_value(serde_json::json!({"account": "acme"})).expect("a spec"),
        );
        backup.metadata.uid = Some("uid-1".into());
        let waiting = [None, Some(BackupPhase::Queued)];
        let running = [Some(BackupPhase::Running)];
        let queued = in_phase(&backup, Some(BackupPhase::Queued));
        // First reconcile: cache and API server agree, the backup starts.
        assert!(cache_is_current(&queued, Some(&queued), &waiting));
        // The start wrote Running; a second reconcile still sees Queued in its cache.
        let started = in_phase(&backup, Some(BackupPhase::Running));
        assert!(
            !cache_is_current(&queued, Some(&started), &waiting),
            "a cache that still shows Queued must not start the backup again"
        );
        // The Running reconcile copies once; the copy finished and wrote Completed, and a
        // reconcile on the cached Running object must not copy again.
        assert!(cache_is_current(&started, Some(&started), &running));
        let completed = in_phase(&backup, Some(BackupPhase::Completed));
        assert!(
            !cache_is_current(&started, Some(&completed), &running),
            "a cache that still shows Running must not copy a finished backup again"
        );
        // A same-named backup created again after a deletion is another object.
        let mut recreated = in_phase(&backup, None);
        recreated.metadata.uid = Some("uid-2".into());
        assert!(!cache_is_current(
            &in_phase(&backup, None),
            Some(&recreated),
            &waiting
        ));
        // Deleted meanwhile: nothing to act on.
        assert!(!cache_is_current(&queued, None, &waiting));
    }

    #[test]
    fn a_blocked_deletion_says_why_and_the_way_out_once() {
        let backup = AccountBackup::new(
            "nightly",
            serde_json::from_value(serde_json::json!({"account": "acme"})).expect("a spec"),
        );
        let message = deletion_blocked_message("nightly", "volume snapshot: timed out");
        assert!(message.contains("timed out") && message.contains("/metadata/finalizers"));
        let now = Timestamp::from_second(100).expect("time");
        let status = deletion_blocked_status(&backup, "snapshot", &message, now);
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == DELETION_BLOCKED)
            .expect("the condition");
        assert_eq!(condition.status, "True");
        let mut again = backup.clone();
        again.status = Some(status.clone());
        let twice = deletion_blocked_status(&again, "snapshot", &message, now);
        assert_eq!(
            twice.activity.len(),
            status.activity.len(),
            "logged once per cause"
        );
    }

    #[test]
    fn a_copy_gets_only_what_is_left_of_the_operation_timeout() {
        let mut status = AccountBackupStatus::default();
        let at = |second| Timestamp::from_second(second).expect("time");
        let hour = Duration::from_secs(3600);
        assert_eq!(
            time_left(&status, at(1000), hour),
            hour,
            "not started: the whole limit"
        );
        status.started_at = Some(Time(at(1000)));
        assert_eq!(
            time_left(&status, at(1600), hour),
            Duration::from_secs(3000)
        );
        assert_eq!(time_left(&status, at(9000), hour), Duration::ZERO);
    }

    #[test]
    fn a_resumed_copy_is_known_even_when_the_activity_log_has_rolled_over() {
        let mut status = AccountBackupStatus::default();
        assert!(!is_resumed(&status));
        count_copy_attempt(&mut status);
        let now = Timestamp::from_second(100).expect("time");
        for project in 0..200 {
            crate::status::push_activity(
                &mut status.activity,
                ActivityLevel::Info,
                format!("project p{project} backed up"),
                now,
            );
        }
        assert!(
            !status.activity.iter().any(|e| e.message == COPYING),
            "the log rolled over"
        );
        assert!(is_resumed(&status));
        count_copy_attempt(&mut status);
        assert_eq!(status.copy_attempts, Some(2));
    }
    use crate::api::AccountBackupSpec;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    fn backup(ttl: &str) -> AccountBackup {
        let mut backup = AccountBackup::new(
            "nightly",
            AccountBackupSpec {
                account: "acme".into(),
                display_name: None,
                notes: None,
                ttl: ttl.into(),
                volume_snapshot_class_name: None,
                databases: Default::default(),
                volumes: Default::default(),
                token_selector: None,
            },
        );
        backup.metadata.generation = Some(1);
        backup
    }

    fn project(name: &str) -> ObservedProject {
        ObservedProject {
            name: name.into(),
            busy: None,
            terminating: false,
            pod_security: Default::default(),
        }
    }

    #[test]
    fn backup_of_an_account_without_projects_fails_naming_the_label() {
        match decide_start(&backup("168h"), &[]) {
            StartDecision::Fail { reason, message } => {
                assert_eq!(reason, "NoProjects");
                assert!(message.contains("rewind.dev/account=acme"), "{message}");
            }
            other => panic!("expected Fail, got {other:?}"),
        }
    }

    #[test]
    fn busy_project_queues_the_backup_with_its_reason() {
        let mut busy = project("shop");
        busy.busy = Some("import running".into());
        assert_eq!(
            decide_start(&backup("168h"), &[project("blog"), busy]),
            StartDecision::Queue {
                behind: "project shop is busy: import running".into()
            }
        );
    }

    #[test]
    fn terminating_namespaces_are_not_projects() {
        let mut gone = project("old");
        gone.terminating = true;
        assert!(matches!(
            decide_start(&backup("168h"), &[gone]),
            StartDecision::Fail { .. }
        ));
        assert_eq!(
            decide_start(&backup("168h"), &[project("blog")]),
            StartDecision::TryStart
        );
    }

    #[test]
    fn unparseable_ttl_fails_with_an_example() {
        assert!(matches!(
            decide_start(&backup("7d"), &[project("a")]),
            StartDecision::Fail {
                reason: "InvalidTTL",
                ..
            }
        ));
    }

    #[test]
    fn completed_backup_is_restorable_for_its_ttl_then_expires() {
        let b = backup("2h");
        let status = finished_status(
            &b,
            &BackupOutcome {
                snapshot_id: "s1".into(),
                ..Default::default()
            },
            at(1000),
        );
        assert_eq!(status.phase, Some(BackupPhase::Completed));
        assert_eq!(status.restorable_until, Some(Time(at(1000 + 7200))));
        assert_eq!(
            decide_finished(&status, at(2000)),
            FinishedDecision::RecheckAt(at(8200))
        );
        assert_eq!(decide_finished(&status, at(8200)), FinishedDecision::Expire);
    }

    #[test]
    fn failed_items_make_the_backup_partially_failed_and_each_is_logged() {
        let outcome = BackupOutcome {
            snapshot_id: "s1".into(),
            failed: vec![ItemOutcome {
                project: "shop".into(),
                kind: "Widget".into(),
                name: "*".into(),
                reason: "forbidden".into(),
            }],
            ..Default::default()
        };
        let status = finished_status(&backup("1h"), &outcome, at(10));
        assert_eq!(status.phase, Some(BackupPhase::PartiallyFailed));
        assert_eq!(status.failed.len(), 1);
        assert!(
            status
                .activity
                .iter()
                .any(|e| e.level == ActivityLevel::Error && e.message.contains("forbidden"))
        );
    }

    #[test]
    fn queued_status_logs_only_when_the_reason_changes() {
        let mut b = backup("1h");
        b.status = Some(queued_status(&b, "AccountBackup/other", at(1)));
        b.status = Some(queued_status(&b, "AccountBackup/other", at(2)));
        assert_eq!(b.status.as_ref().map(|s| s.activity.len()), Some(1));
    }

    #[test]
    fn an_expired_backup_stays_listed_for_a_day_then_goes() {
        let status = AccountBackupStatus {
            restorable_until: Some(Time(at(1000))),
            ..Default::default()
        };
        assert!(expired_object_due(&status, at(1001)).is_some());
        assert_eq!(expired_object_due(&status, at(1000 + 24 * 3600)), None);
    }

    #[test]
    fn a_second_copy_attempt_is_logged_as_resumed() {
        let mut status = AccountBackupStatus::default();
        let (level, first) = copy_attempt_entry(&status);
        assert_eq!(level, ActivityLevel::Info);
        push_activity(&mut status.activity, level, first, at(1));
        let (level, second) = copy_attempt_entry(&status);
        assert_eq!(level, ActivityLevel::Warning);
        assert!(second.contains("resumed"));
    }

    #[test]
    fn running_backup_past_the_limit_is_detected() {
        let mut b = backup("1h");
        b.status = Some(started_status(&b, at(0)));
        let status = b.status.clone().unwrap_or_default();
        assert!(!running_too_long(
            &status,
            at(100),
            Duration::from_secs(3600)
        ));
        assert!(running_too_long(
            &status,
            at(3601),
            Duration::from_secs(3600)
        ));
    }

    #[test]
    fn a_large_backup_lists_the_first_records_and_counts_them_all() {
        let backup = AccountBackup::new(
            "big",
            serde_json::from_value(serde_json::json!({"account": "acme"})).expect("a spec"),
        );
        let outcome = BackupOutcome {
            snapshot_id: "s1".into(),
            projects: vec![crate::api::ProjectSummary::default(); 200],
            volume_snapshots: vec![crate::api::VolumeSnapshotRecord::default(); 150],
            database_dumps: vec![crate::api::DatabaseDumpRecord::default(); 3],
            ..BackupOutcome::default()
        };
        let mut backup = backup;
        // Running, the status already listed the projects done so far.
        backup.status = Some(AccountBackupStatus {
            projects: vec![crate::api::ProjectSummary::default(); 7],
            ..AccountBackupStatus::default()
        });
        let status = finished_status(&backup, &outcome, Timestamp::from_second(0).expect("time"));
        assert_eq!((status.projects.len(), status.project_count), (100, 200));
        assert_eq!(
            (status.volume_snapshots.len(), status.volume_snapshot_count),
            (100, 150)
        );
        assert_eq!(
            (status.database_dumps.len(), status.database_dump_count),
            (3, 3)
        );
        assert!(!crate::archive::layout::lists_complete(&status));
    }

    #[test]
    fn an_expired_backup_points_at_no_data_so_its_deletion_reads_nothing() {
        let mut backup = AccountBackup::new(
            "big",
            serde_json::from_value(serde_json::json!({"account": "acme"})).expect("a spec"),
        );
        let outcome = BackupOutcome {
            snapshot_id: "s1".into(),
            volume_snapshots: vec![crate::api::VolumeSnapshotRecord::default(); 150],
            ..BackupOutcome::default()
        };
        let now = Timestamp::from_second(0).expect("time");
        backup.status = Some(finished_status(&backup, &outcome, now));
        let expired = expired_status(&backup, now);
        assert_eq!(expired.repository_snapshot, None);
        assert!(expired.volume_snapshots.is_empty() && expired.volume_snapshot_count == 0);
        assert!(crate::archive::layout::lists_complete(&expired));
    }
}
