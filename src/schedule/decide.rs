//! Pure decisions of the schedule controller: which slot is due, the backup's name, what to prune.

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::cron::{Cron, CronError, expand_spread, time_zone};
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::api::{
    AccountBackup, AccountBackupSpec, BackupPhase, BackupSchedule, BackupScheduleStatus,
    SCHEDULE_LABEL, SLOT_ANNOTATION,
};
use crate::status::{READY, set_condition};

/// The longest AccountBackup name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// A schedule ready to compute slots: the expression (spread expanded) and its zone.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The parsed expression.
    pub cron: Cron,
    /// The zone it is read in.
    pub tz: TimeZone,
}

impl Plan {
    /// Parses `schedule` (spread forms placed by `account`) in `time_zone`.
    pub fn new(
        schedule: &str,
        time_zone_name: Option<&str>,
        account: &str,
    ) -> Result<Self, CronError> {
        Ok(Self {
            cron: Cron::parse(&expand_spread(schedule, account))?,
            tz: time_zone(time_zone_name)?,
        })
    }
}

/// What to do about the current slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotDecision {
    /// Create the backup of this slot now (idempotent by name).
    Create(Timestamp),
    /// The latest slot was missed by more than `startingDeadlineSeconds`: skipped, said so.
    Missed(Timestamp),
    /// Nothing due.
    Wait,
}

/// Decides whether a backup is due at `now`.
///
/// Only the latest slot after `last` (the last slot taken, else the schedule's
/// creation) is ever considered: after any downtime at most one catch-up backup.
pub fn due_slot(
    plan: &Plan,
    last: Option<Timestamp>,
    created: Timestamp,
    starting_deadline: Option<Duration>,
    now: Timestamp,
) -> SlotDecision {
    let not_before = match last {
        // Strictly after the last slot taken.
        Some(last) => last + jiff::SignedDuration::from_secs(1),
        None => created,
    };
    let Some(slot) = plan.cron.latest_at_or_before(now, not_before, &plan.tz) else {
        return SlotDecision::Wait;
    };
    if let Some(deadline) = starting_deadline
        && now.duration_since(slot).unsigned_abs() > deadline
    {
        return SlotDecision::Missed(slot);
    }
    SlotDecision::Create(slot)
}

/// The AccountBackup name of a slot: `<schedule>-<yyyymmddhhmm>` with the slot in UTC.
///
/// UTC keeps the name unique and ordered through DST changes. A schedule name too
/// long for the suffix is cut and made unique with its FNV-1a hash.
pub fn backup_name(schedule: &str, slot: Timestamp) -> String {
    let suffix = slot.strftime("%Y%m%d%H%M").to_string();
    let room = MAX_NAME - suffix.len() - 1;
    if schedule.len() <= room {
        return format!("{schedule}-{suffix}");
    }
    let hash = format!("{:016x}", super::cron::fnv1a(schedule));
    let cut = schedule[..room - hash.len() - 1].trim_end_matches(['-', '.']);
    format!("{cut}-{hash}-{suffix}")
}

/// What the retention decision needs of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    /// Object name.
    pub name: String,
    /// Phase, `None` when not yet reconciled.
    pub phase: Option<BackupPhase>,
    /// Creation time of the object.
    pub created: Timestamp,
    /// When the backup stops being restorable (its ttl).
    pub restorable_until: Option<Timestamp>,
}

/// Retention settings resolved from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep this many of the newest backups.
    pub keep_last: usize,
    /// Delete backups older than this.
    pub max_age: Option<Duration>,
}

fn is_active(phase: Option<BackupPhase>) -> bool {
    matches!(
        phase,
        None | Some(BackupPhase::Queued | BackupPhase::Running)
    )
}

/// The newest Completed backup: the one retention never deletes.
pub fn newest_successful(backups: &[BackupFacts]) -> Option<&BackupFacts> {
    backups
        .iter()
        .filter(|b| b.phase == Some(BackupPhase::Completed))
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)))
}

/// Which backups to delete, oldest first.
///
/// Deleted: beyond the newest `keep_last`, older than `max_age`, or past
/// `restorableUntil`. Never deleted: Queued/Running backups and the newest
/// Completed one (even when it is older than everything else).
pub fn to_prune(backups: &[BackupFacts], retention: Retention, now: Timestamp) -> Vec<String> {
    let protected = newest_successful(backups).map(|b| b.name.clone());
    let mut newest_first: Vec<&BackupFacts> = backups.iter().collect();
    newest_first.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
    let mut prune: Vec<String> = newest_first
        .iter()
        .enumerate()
        .filter(|(_, b)| !is_active(b.phase) && Some(&b.name) != protected.as_ref())
        .filter(|(index, b)| {
            let beyond_count = *index >= retention.keep_last;
            let too_old = retention.max_age.is_some_and(|age| {
                now.duration_since(b.created).unsigned_abs() > age && b.created < now
            });
            let expired = b.restorable_until.is_some_and(|until| until <= now);
            beyond_count || too_old || expired
        })
        .map(|(_, b)| b.name.clone())
        .collect();
    prune.reverse();
    prune
}

/// Names of the backups still Queued or Running, sorted.
pub fn active(backups: &[BackupFacts]) -> Vec<String> {
    let mut names: Vec<String> = backups
        .iter()
        .filter(|b| is_active(b.phase))
        .map(|b| b.name.clone())
        .collect();
    names.sort();
    names
}

/// The AccountBackup of one slot: template + account, labelled, annotated and owned by the schedule.
pub fn backup_for_slot(schedule: &BackupSchedule, slot: Timestamp) -> AccountBackup {
    let template = &schedule.spec.template;
    let spec = AccountBackupSpec {
        account: schedule.spec.account.clone(),
        display_name: template.display_name.clone(),
        notes: template.notes.clone(),
        ttl: template.ttl.clone(),
        volume_snapshot_class_name: template.volume_snapshot_class_name.clone(),
        databases: template.databases.clone(),
        volumes: template.volumes.clone(),
        token_selector: template.token_selector.clone(),
    };
    let mut backup = AccountBackup::new(&backup_name(&schedule.name_any(), slot), spec);
    backup.metadata.labels = Some(BTreeMap::from([
        (SCHEDULE_LABEL.to_string(), schedule.name_any()),
        (
            "rewind.dev/account".to_string(),
            schedule.spec.account.clone(),
        ),
    ]));
    backup.metadata.annotations = Some(BTreeMap::from([
        (SLOT_ANNOTATION.to_string(), slot.to_string()),
        (
            crate::api::REQUESTED_BY_ANNOTATION.to_string(),
            format!("BackupSchedule/{}", schedule.name_any()),
        ),
    ]));
    backup.metadata.owner_references = schedule.controller_owner_ref(&()).map(|r| vec![r]);
    backup
}

/// `retention.maxAge`, parsed; an error message names the field.
pub fn max_age(schedule: &BackupSchedule) -> Result<Option<Duration>, String> {
    schedule
        .spec
        .retention
        .max_age
        .as_ref()
        .map(crate::duration::GoDuration::get)
        .transpose()
        .map_err(|err| format!("retention.maxAge: {err}"))
}

/// The status of a schedule that cannot run as written: Ready=False with what is wrong.
pub fn invalid_status(
    schedule: &BackupSchedule,
    reason: &str,
    message: String,
    now: Timestamp,
) -> BackupScheduleStatus {
    let mut status = schedule.status.clone().unwrap_or_default();
    status.observed_generation = schedule.metadata.generation;
    status.next_schedule_time = None;
    set_condition(
        &mut status.conditions,
        READY,
        false,
        reason,
        message,
        schedule.metadata.generation,
        now,
    );
    status
}

/// The status of a running schedule: its next slot, newest successful and active backups
/// (of those `remaining` after pruning), Ready=True saying scheduled or suspended.
pub fn scheduled_status(
    schedule: &BackupSchedule,
    mut status: BackupScheduleStatus,
    next: Option<Timestamp>,
    remaining: &[BackupFacts],
    now: Timestamp,
) -> BackupScheduleStatus {
    status.observed_generation = schedule.metadata.generation;
    status.next_schedule_time = next.map(Time);
    status.last_successful_backup = newest_successful(remaining).map(|b| b.name.clone());
    status.active = active(remaining);
    let (reason, message) = if schedule.spec.suspend {
        (
            "Suspended",
            "suspended: no new backups; existing ones are still pruned".to_string(),
        )
    } else {
        match next {
            Some(next) => ("Scheduled", format!("next backup at {next}")),
            None => ("Scheduled", "the schedule has no further slot".to_string()),
        }
    };
    set_condition(
        &mut status.conditions,
        READY,
        true,
        reason,
        message,
        schedule.metadata.generation,
        now,
    );
    status
}

/// How long to wait before looking again: just past the next slot, never longer than `max`.
pub fn next_wake(next: Option<Timestamp>, now: Timestamp, max: Duration) -> Duration {
    next.map(|next| next.duration_since(now).unsigned_abs() + Duration::from_secs(1))
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn daily() -> Plan {
        Plan::new("0 3 * * *", None, "acme").expect("plan")
    }

    #[test]
    fn slot_is_created_when_it_passes() {
        let d = due_slot(
            &daily(),
            Some(ts("2026-05-09T03:00:00Z")),
            ts("2026-01-01T00:00:00Z"),
            None,
            ts("2026-05-10T03:00:05Z"),
        );
        assert_eq!(d, SlotDecision::Create(ts("2026-05-10T03:00:00Z")));
    }

    #[test]
    fn a_slot_already_taken_is_not_taken_again() {
        let d = due_slot(
            &daily(),
            Some(ts("2026-05-10T03:00:00Z")),
            ts("2026-01-01T00:00:00Z"),
            None,
            ts("2026-05-10T09:00:00Z"),
        );
        assert_eq!(d, SlotDecision::Wait);
    }

    #[test]
    fn long_downtime_yields_one_catch_up_backup_not_a_storm() {
        // Down for 30 days: only the latest slot is due, once.
        let now = ts("2026-06-10T12:00:00Z");
        let d = due_slot(
            &daily(),
            Some(ts("2026-05-10T03:00:00Z")),
            ts("2026-01-01T00:00:00Z"),
            None,
            now,
        );
        assert_eq!(d, SlotDecision::Create(ts("2026-06-10T03:00:00Z")));
        // After taking it nothing else is due.
        let again = due_slot(
            &daily(),
            Some(ts("2026-06-10T03:00:00Z")),
            ts("2026-01-01T00:00:00Z"),
            None,
            now,
        );
        assert_eq!(again, SlotDecision::Wait);
    }

    #[test]
    fn a_slot_missed_beyond_the_starting_deadline_is_skipped() {
        let d = due_slot(
            &daily(),
            Some(ts("2026-05-09T03:00:00Z")),
            ts("2026-01-01T00:00:00Z"),
            Some(Duration::from_secs(600)),
            ts("2026-05-10T03:20:00Z"),
        );
        assert_eq!(d, SlotDecision::Missed(ts("2026-05-10T03:00:00Z")));
        let within = due_slot(
            &daily(),
            Some(ts("2026-05-09T03:00:00Z")),
            ts("2026-01-01T00:00:00Z"),
            Some(Duration::from_secs(600)),
            ts("2026-05-10T03:05:00Z"),
        );
        assert_eq!(within, SlotDecision::Create(ts("2026-05-10T03:00:00Z")));
    }

    #[test]
    fn a_new_schedule_does_not_back_fill_slots_before_its_creation() {
        let d = due_slot(
            &daily(),
            None,
            ts("2026-05-10T09:00:00Z"),
            None,
            ts("2026-05-10T10:00:00Z"),
        );
        assert_eq!(d, SlotDecision::Wait);
    }

    #[test]
    fn backup_name_is_the_utc_slot_and_a_valid_dns_name() {
        assert_eq!(
            backup_name("acme-daily", ts("2026-03-29T01:30:00Z")),
            "acme-daily-202603290130"
        );
        let long = "a".repeat(253);
        let name = backup_name(&long, ts("2026-03-29T01:30:00Z"));
        assert!(name.len() <= 253, "{}", name.len());
        assert_eq!(name, backup_name(&long, ts("2026-03-29T01:30:00Z")));
        assert!(name.ends_with("-202603290130"));
    }

    fn facts(name: &str, phase: BackupPhase, created: &str) -> BackupFacts {
        BackupFacts {
            name: name.into(),
            phase: Some(phase),
            created: ts(created),
            restorable_until: None,
        }
    }

    const KEEP_2: Retention = Retention {
        keep_last: 2,
        max_age: None,
    };

    #[test]
    fn retention_keeps_the_newest_n() {
        let backups = vec![
            facts("b1", BackupPhase::Completed, "2026-05-01T03:00:00Z"),
            facts("b2", BackupPhase::Completed, "2026-05-02T03:00:00Z"),
            facts("b3", BackupPhase::Completed, "2026-05-03T03:00:00Z"),
            facts("b4", BackupPhase::Completed, "2026-05-04T03:00:00Z"),
        ];
        assert_eq!(
            to_prune(&backups, KEEP_2, ts("2026-05-05T00:00:00Z")),
            ["b1", "b2"]
        );
    }

    #[test]
    fn retention_never_deletes_the_newest_successful_backup() {
        let backups = vec![
            facts("ok", BackupPhase::Completed, "2026-05-01T03:00:00Z"),
            facts("f1", BackupPhase::Failed, "2026-05-02T03:00:00Z"),
            facts("f2", BackupPhase::Failed, "2026-05-03T03:00:00Z"),
            facts("f3", BackupPhase::Failed, "2026-05-04T03:00:00Z"),
        ];
        let mut with_expiry = backups.clone();
        with_expiry[0].restorable_until = Some(ts("2026-05-02T00:00:00Z"));
        let retention = Retention {
            keep_last: 1,
            max_age: Some(Duration::from_secs(3600)),
        };
        let pruned = to_prune(&with_expiry, retention, ts("2026-06-01T00:00:00Z"));
        assert!(!pruned.contains(&"ok".to_string()), "{pruned:?}");
        assert_eq!(pruned, ["f1", "f2", "f3"]);
    }

    #[test]
    fn retention_spares_running_backups_and_prunes_expired_and_old_ones() {
        let mut backups = vec![
            facts("old", BackupPhase::Completed, "2026-04-01T03:00:00Z"),
            facts(
                "expired",
                BackupPhase::PartiallyFailed,
                "2026-05-03T03:00:00Z",
            ),
            facts("new", BackupPhase::Completed, "2026-05-04T03:00:00Z"),
            facts("running", BackupPhase::Running, "2026-04-02T03:00:00Z"),
        ];
        backups[1].restorable_until = Some(ts("2026-05-04T00:00:00Z"));
        let retention = Retention {
            keep_last: 10,
            max_age: Some(Duration::from_secs(7 * 86400)),
        };
        assert_eq!(
            to_prune(&backups, retention, ts("2026-05-05T00:00:00Z")),
            ["old", "expired"]
        );
    }

    #[test]
    fn active_lists_queued_running_and_unreconciled() {
        let mut backups = vec![
            facts("q", BackupPhase::Queued, "2026-05-01T03:00:00Z"),
            facts("r", BackupPhase::Running, "2026-05-01T03:00:00Z"),
            facts("c", BackupPhase::Completed, "2026-05-01T03:00:00Z"),
        ];
        backups.push(BackupFacts {
            phase: None,
            ..facts("n", BackupPhase::Queued, "2026-05-01T03:00:00Z")
        });
        assert_eq!(active(&backups), ["n", "q", "r"]);
    }

    #[test]
    fn a_slot_backup_carries_the_template_label_slot_and_owner() {
        let mut schedule = BackupSchedule::new(
            "acme-daily",
            serde_json::from_value::<crate::api::BackupScheduleSpec>(serde_json::json!({
                "account": "acme",
                "template": {"ttl": "48h", "notes": "nightly"}
            }))
            .expect("spec"),
        );
        schedule.metadata.uid = Some("uid-1".into());
        let slot: Timestamp = "2026-05-10T03:00:00Z".parse().expect("ts");
        let backup = backup_for_slot(&schedule, slot);
        assert_eq!(backup.name_any(), "acme-daily-202605100300");
        assert_eq!(backup.spec.account, "acme");
        assert_eq!(backup.spec.ttl, "48h");
        assert_eq!(backup.spec.notes.as_deref(), Some("nightly"));
        assert_eq!(
            backup.labels().get(SCHEDULE_LABEL).map(String::as_str),
            Some("acme-daily")
        );
        assert_eq!(
            crate::schedule::observe::latest_slot(std::slice::from_ref(&backup)),
            Some(slot)
        );
        let owner = backup
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .expect("owner");
        assert_eq!(owner.kind, "BackupSchedule");
        assert_eq!(owner.uid, "uid-1");
    }
}
