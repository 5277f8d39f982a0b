//! The statuses of a ProjectRestore's phases (pure: time injected).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AccountBackupStatus, ActivityLevel, ItemOutcome, Progress, ProjectRestore,
    ProjectRestoreStatus, RegeneratedToken, RestorePhase, RestoredCounts,
};
use crate::status::{READY, push_activity, set_condition};

fn base(restore: &ProjectRestore) -> ProjectRestoreStatus {
    let mut status = restore.status.clone().unwrap_or_default();
    status.observed_generation = restore.metadata.generation;
    status
}

/// Waiting behind another operation of the account.
pub fn queued(restore: &ProjectRestore, behind: &str, now: Timestamp) -> ProjectRestoreStatus {
    let mut status = base(restore);
    if status.queued_behind.as_deref() != Some(behind) || status.phase != Some(RestorePhase::Queued)
    {
        push_activity(
            &mut status.activity,
            ActivityLevel::Info,
            format!("queued behind {behind}"),
            now,
        );
    }
    status.phase = Some(RestorePhase::Queued);
    status.queued_behind = Some(behind.to_string());
    set_condition(
        &mut status.conditions,
        READY,
        false,
        "Queued",
        format!("waiting for {behind}; starts on its own when that ends"),
        restore.metadata.generation,
        now,
    );
    status
}

/// Refused or failed as a whole.
pub fn failed(
    restore: &ProjectRestore,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> ProjectRestoreStatus {
    let mut status = base(restore);
    status.phase = Some(RestorePhase::Failed);
    status.queued_behind = None;
    status.completed_at = Some(Time(now));
    push_activity(&mut status.activity, ActivityLevel::Error, message, now);
    set_condition(
        &mut status.conditions,
        READY,
        false,
        reason,
        message,
        restore.metadata.generation,
        now,
    );
    status
}

/// Holding the account's lock, about to create the namespaces.
pub fn started(
    restore: &ProjectRestore,
    targets: &BTreeMap<String, String>,
    backup: &AccountBackupStatus,
    now: Timestamp,
) -> ProjectRestoreStatus {
    let mut status = base(restore);
    if status.activity.is_empty() {
        push_activity(&mut status.activity, ActivityLevel::Info, "requested", now);
    }
    status.phase = Some(RestorePhase::Running);
    status.queued_behind = None;
    status.started_at = Some(Time(now));
    status.target_namespaces = targets.clone();
    // The totals come from the backup: every object and dump of the chosen projects.
    let chosen = backup
        .projects
        .iter()
        .filter(|project| targets.contains_key(&project.name));
    let (items_total, bytes_total) = chosen.fold((0, 0), |(items, bytes), project| {
        (
            items + project.resources + project.databases,
            bytes + project.bytes,
        )
    });
    status.progress = Some(Progress {
        items_total,
        bytes_total,
        ..Progress::default()
    });
    let pairs: Vec<String> = targets.iter().map(|(p, t)| format!("{p} → {t}")).collect();
    push_activity(
        &mut status.activity,
        ActivityLevel::Info,
        format!(
            "started restoring {} from {}",
            pairs.join(", "),
            restore.spec.backup
        ),
        now,
    );
    set_condition(
        &mut status.conditions,
        READY,
        false,
        "Running",
        "creating the restored namespaces",
        restore.metadata.generation,
        now,
    );
    status
}

/// A running restore's status with `items_done` and `bytes_done` so far, and the estimated
/// completion time at the rate so far.
pub fn progressed(
    mut status: ProjectRestoreStatus,
    items_done: u64,
    bytes_done: u64,
    now: Timestamp,
) -> ProjectRestoreStatus {
    let started = status.started_at.as_ref().map(|t| t.0);
    let progress = status.progress.get_or_insert_with(Progress::default);
    progress.items_done = items_done;
    progress.items_total = progress.items_total.max(items_done);
    progress.bytes_done = bytes_done;
    progress.estimated_completion_time = started
        .and_then(|started| {
            crate::status::estimate_completion(started, now, items_done, progress.items_total)
        })
        .map(Time);
    status.progress_summary = Some(format!("{items_done}/{}", progress.items_total));
    status
}

/// What the restore work produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Counts of what was recreated.
    pub restored: RestoredCounts,
    /// Items left out on purpose.
    pub skipped: Vec<ItemOutcome>,
    /// Items restored with a change that keeps the copy inert.
    pub adjusted: Vec<ItemOutcome>,
    /// Items that failed.
    pub failed: Vec<ItemOutcome>,
    /// Token Secrets with new values.
    pub regenerated_tokens: Vec<RegeneratedToken>,
    /// Things to know.
    pub warnings: Vec<String>,
    /// Bytes read from the repository (manifests and dumps).
    pub bytes_read: u64,
}

/// Finished: Completed, or PartiallyFailed listing each failed item; sets expiresAt from expireAfter.
pub fn finished(
    restore: &ProjectRestore,
    outcome: &RestoreOutcome,
    now: Timestamp,
) -> ProjectRestoreStatus {
    let mut status = base(restore);
    status.completed_at = Some(Time(now));
    status.restored = Some(outcome.restored.clone());
    let where_all = "the operator's log lists every one";
    status.skipped = crate::status::first_items(&outcome.skipped, where_all);
    status.adjusted = crate::status::first_items(&outcome.adjusted, where_all);
    status.failed = crate::status::first_items(&outcome.failed, where_all);
    let limit = crate::status::ITEM_LIST_LIMIT;
    status.regenerated_tokens =
        outcome.regenerated_tokens[..outcome.regenerated_tokens.len().min(limit)].to_vec();
    status.regenerated_token_count = outcome.regenerated_tokens.len() as u64;
    status.warnings = if outcome.warnings.len() <= limit {
        outcome.warnings.clone()
    } else {
        let mut first = outcome.warnings[..limit - 1].to_vec();
        first.push(format!(
            "{} more warnings not listed here; {where_all}",
            outcome.warnings.len() - (limit - 1)
        ));
        first
    };
    let done = outcome.restored.resources
        + outcome.restored.volumes
        + outcome.restored.databases
        + outcome.failed.len() as u64;
    let bytes_done = outcome.bytes_read;
    let bytes_total = status.progress.as_ref().map_or(0, |p| p.bytes_total);
    status.progress = Some(Progress {
        items_done: done,
        items_total: done,
        bytes_done,
        bytes_total: bytes_total.max(bytes_done),
        estimated_completion_time: None,
    });
    status.progress_summary = Some(format!("{done}/{done}"));
    if let Some(Time(started)) = status.started_at {
        let seconds = now.duration_since(started).as_secs_f64().max(0.001);
        push_activity(
            &mut status.activity,
            ActivityLevel::Info,
            format!(
                "{done} items ({}) in {seconds:.1} s: {:.0} items/s",
                crate::api::human_bytes(bytes_done),
                done as f64 / seconds
            ),
            now,
        );
    }
    if let Some(after) = restore
        .spec
        .expire_after
        .as_ref()
        .and_then(|d| d.get().ok())
        && let Ok(after) = SignedDuration::try_from(after)
        && let Ok(at) = now.checked_add(after)
    {
        status.expires_at = Some(Time(at));
    }
    for warning in outcome.warnings.iter().take(limit) {
        push_activity(
            &mut status.activity,
            ActivityLevel::Warning,
            warning.clone(),
            now,
        );
    }
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
    let summary = format!(
        "{} resources, {} volumes, {} databases restored; {} tokens regenerated; {} skipped",
        outcome.restored.resources,
        outcome.restored.volumes,
        outcome.restored.databases,
        outcome.restored.tokens,
        outcome.skipped.len()
    );
    if outcome.failed.is_empty() {
        status.phase = Some(RestorePhase::Completed);
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
            restore.metadata.generation,
            now,
        );
    } else {
        status.phase = Some(RestorePhase::PartiallyFailed);
        let message = format!(
            "{} items failed (see status.failed); {summary}",
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
            restore.metadata.generation,
            now,
        );
    }
    status
}

/// The condition a restore gets when expireAfter deleted its namespaces.
pub const EXPIRED: &str = "Expired";

/// After expireAfter: the restored namespaces were deleted.
pub fn expired(restore: &ProjectRestore, now: Timestamp) -> ProjectRestoreStatus {
    let mut status = base(restore);
    push_activity(
        &mut status.activity,
        ActivityLevel::Info,
        "expireAfter passed: the restored namespaces were deleted",
        now,
    );
    set_condition(
        &mut status.conditions,
        EXPIRED,
        true,
        "ExpireAfterPassed",
        "the restored namespaces were deleted",
        restore.metadata.generation,
        now,
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProjectRestoreSpec;
    use crate::duration::GoDuration;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    fn restore(expire_after: Option<&str>) -> ProjectRestore {
        ProjectRestore::new(
            "undo",
            ProjectRestoreSpec {
                account: "acme".into(),
                backup: "nightly".into(),
                projects: vec![],
                target_namespaces: BTreeMap::new(),
                expire_after: expire_after.map(GoDuration::from),
                restore_databases: true,
                restore_volumes: true,
                volume_source: Default::default(),
            },
        )
    }

    #[test]
    fn a_failed_item_makes_the_restore_partially_failed_never_bare() {
        let outcome = RestoreOutcome {
            failed: vec![ItemOutcome {
                project: "shop".into(),
                kind: "Database".into(),
                name: "db".into(),
                reason: "pg_restore exited 1".into(),
            }],
            ..Default::default()
        };
        let status = finished(&restore(None), &outcome, at(5));
        assert_eq!(status.phase, Some(RestorePhase::PartiallyFailed));
        assert_eq!(status.failed[0].reason, "pg_restore exited 1");
    }

    #[test]
    fn expire_after_sets_when_the_copy_goes_away() {
        let status = finished(&restore(Some("2h")), &RestoreOutcome::default(), at(100));
        assert_eq!(status.phase, Some(RestorePhase::Completed));
        assert_eq!(status.expires_at, Some(Time(at(100 + 7200))));
    }

    #[test]
    fn progress_runs_against_the_backups_totals_with_an_estimate_and_ends_with_the_rate() {
        let mut restore = restore(None);
        let targets = BTreeMap::from([("shop".to_string(), "shop-copy".to_string())]);
        let backup = AccountBackupStatus {
            projects: vec![
                crate::api::ProjectSummary {
                    name: "shop".into(),
                    resources: 990,
                    databases: 10,
                    bytes: 4000,
                    ..Default::default()
                },
                crate::api::ProjectSummary {
                    name: "other".into(),
                    resources: 5000,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let started = started(&restore, &targets, &backup, at(0));
        let progress = started.progress.clone().expect("progress");
        assert_eq!(
            (progress.items_total, progress.bytes_total),
            (1000, 4000),
            "only chosen projects"
        );
        let running = progressed(started.clone(), 250, 1000, at(10));
        let progress = running.progress.expect("progress");
        assert_eq!(progress.estimated_completion_time, Some(Time(at(40))));
        assert_eq!(running.progress_summary.as_deref(), Some("250/1000"));
        restore.status = Some(started);
        let outcome = RestoreOutcome {
            restored: RestoredCounts {
                resources: 990,
                databases: 10,
                ..Default::default()
            },
            bytes_read: 4000,
            ..Default::default()
        };
        let done = finished(&restore, &outcome, at(50));
        let progress = done.progress.expect("progress");
        assert_eq!(
            (
                progress.items_done,
                progress.bytes_done,
                progress.bytes_total
            ),
            (1000, 4000, 4000)
        );
        assert_eq!(progress.estimated_completion_time, None);
        assert!(
            done.activity
                .iter()
                .any(|e| e.message.contains("1000 items") && e.message.contains("20 items/s")),
            "{:?}",
            done.activity
        );
    }

    #[test]
    fn thousands_of_tokens_and_warnings_leave_a_bounded_status() {
        let outcome = RestoreOutcome {
            regenerated_tokens: vec![RegeneratedToken::default(); 500],
            warnings: (0..500)
                .map(|i| format!("PVC {i} is created empty"))
                .collect(),
            ..Default::default()
        };
        let status = finished(&restore(None), &outcome, at(5));
        assert_eq!(
            (
                status.regenerated_tokens.len(),
                status.regenerated_token_count
            ),
            (100, 500)
        );
        assert_eq!(status.warnings.len(), 100);
        assert!(
            status.warnings[99].starts_with("401 more warnings"),
            "{}",
            status.warnings[99]
        );
    }
}
