//! The BackupSchedule controller: creates one AccountBackup per slot and prunes by retention.
//!
//! observe (the schedule's backups) → decide (pure: [`decide`], [`cron`]) → apply
//! (create by a name derived from the slot, so a second create — after a
//! restart or a leader change — is AlreadyExists and harmless; delete pruned
//! backups, whose finalizer releases the data) → status.

use super::{decide, observe};
use crate::api::{SCHEDULE_LABEL, SLOT_ANNOTATION};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use super::decide::{Plan, Retention, SlotDecision};
use super::error::ScheduleError;
use crate::api::{AccountBackup, AccountBackupSpec, BackupSchedule, BackupScheduleStatus};
use crate::context::Context;
use crate::metrics::ReconcileLabels;
use crate::status::{READY, apply_status, set_condition};

/// The longest a schedule waits before looking again (ttl and maxAge pruning happen at least this often).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let schedules: Api<BackupSchedule> = Api::all(client.clone());
    let backups: Api<AccountBackup> = Api::all(client);
    Controller::new(schedules, watcher::Config::default().any_semantic())
        .owns(
            backups,
            watcher::Config::default()
                .labels(SCHEDULE_LABEL)
                .any_semantic(),
        )
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(schedule: Arc<BackupSchedule>, error: &ScheduleError, ctx: Arc<Context>) -> Action {
    let uid = schedule.metadata.uid.clone().unwrap_or_default();
    let wait = ctx.backoff.failed(&uid, error.is_permanent());
    warn!(schedule = %schedule.name_any(), category = error.category(), permanent = error.is_permanent(), retry_in = ?wait, error = %error, "reconcile failed");
    Action::requeue(wait)
}

#[instrument(skip_all, fields(schedule = %schedule.name_any(), account = %schedule.spec.account))]
async fn reconcile(
    schedule: Arc<BackupSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, ScheduleError> {
    let result = reconcile_inner(&schedule, &ctx, Timestamp::now()).await;
    let (outcome, category) = match &result {
        Ok(_) => {
            ctx.backoff
                .succeeded(schedule.metadata.uid.as_deref().unwrap_or_default());
            ("ok", "none")
        }
        Err(err) => ("error", err.category()),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: "backupschedule",
            result: outcome,
            category,
        })
        .inc();
    result
}

async fn publish(
    ctx: &Context,
    schedule: &BackupSchedule,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Schedule".into(),
        secondary: None,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &schedule.object_ref(&()))
        .await
    {
        warn!(error = %err, "publishing an event failed");
    }
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
        token_selector: template.token_selector.clone(),
    };
    let mut backup = AccountBackup::new(&decide::backup_name(&schedule.name_any(), slot), spec);
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

async fn write_invalid(
    api: &Api<BackupSchedule>,
    schedule: &BackupSchedule,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Result<Action, ScheduleError> {
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
    apply_status(api, &schedule.name_any(), &status).await?;
    Ok(Action::await_change())
}

async fn reconcile_inner(
    schedule: &BackupSchedule,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ScheduleError> {
    let schedules: Api<BackupSchedule> = Api::all(ctx.client.clone());
    let api: Api<AccountBackup> = Api::all(ctx.client.clone());
    let name = schedule.name_any();
    let spec = &schedule.spec;
    if schedule.metadata.deletion_timestamp.is_some() {
        // Being deleted: garbage collection removes the owned backups; create nothing new.
        return Ok(Action::await_change());
    }
    let plan = match Plan::new(&spec.schedule, spec.time_zone.as_deref(), &spec.account) {
        Ok(plan) => plan,
        Err(err) => {
            return write_invalid(&schedules, schedule, err.category(), err.to_string(), now).await;
        }
    };
    let max_age = match spec
        .retention
        .max_age
        .as_deref()
        .map(crate::duration::parse_duration)
    {
        None => None,
        Some(Ok(age)) => Some(age),
        Some(Err(err)) => {
            return write_invalid(
                &schedules,
                schedule,
                "InvalidRetention",
                format!("retention.maxAge: {err}"),
                now,
            )
            .await;
        }
    };

    let mut existing = observe::owned_by(schedule, observe::backups(&api, &name).await?);
    let mut status = schedule.status.clone().unwrap_or_default();
    let recorded = status.last_schedule_time.as_ref().map(|t| t.0);
    let last = recorded.max(observe::latest_slot(&existing));
    let created = schedule
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let deadline = spec
        .starting_deadline_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs);

    if !spec.suspend {
        match decide::due_slot(&plan, last, created, deadline, now) {
            SlotDecision::Create(slot) => {
                let backup = backup_for_slot(schedule, slot);
                let backup_name = backup.name_any();
                match api.create(&PostParams::default(), &backup).await {
                    Ok(created) => {
                        info!(backup = %backup_name, slot = %slot, "backup created");
                        publish(
                            ctx,
                            schedule,
                            EventType::Normal,
                            "Created",
                            format!("created AccountBackup {backup_name} for the slot {slot}"),
                        )
                        .await;
                        existing.push(created);
                    }
                    // Another replica or an earlier reconcile already created this slot's backup —
                    // or someone else took its name: then the slot's backup gets a generated name.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        let taken = api.get_opt(&backup_name).await?;
                        let ours = taken
                            .map(|b| observe::owned_by(schedule, vec![b]))
                            .is_some_and(|owned| !owned.is_empty());
                        if !ours {
                            let mut fallback = backup.clone();
                            fallback.metadata.name = None;
                            fallback.metadata.generate_name = Some(format!("{backup_name}-"));
                            let created = api.create(&PostParams::default(), &fallback).await?;
                            warn!(taken = %backup_name, backup = %created.name_any(), "the slot's backup name was taken by an object this schedule does not own");
                            publish(ctx, schedule, EventType::Warning, "NameTaken", format!(
                                "AccountBackup {backup_name} exists but is not this schedule's: the slot {slot} was backed up as {}",
                                created.name_any()
                            ))
                            .await;
                            existing.push(created);
                        }
                    }
                    Err(err) => return Err(err.into()),
                }
                status.last_schedule_time = Some(Time(slot));
            }
            SlotDecision::Missed(slot) => {
                publish(ctx, schedule, EventType::Warning, "MissedSchedule", format!(
                    "the slot {slot} was missed by more than startingDeadlineSeconds ({}s): skipped; the next slot runs as usual",
                    spec.starting_deadline_seconds.unwrap_or_default()
                ))
                .await;
                status.last_schedule_time = Some(Time(slot));
            }
            SlotDecision::Wait => {
                if let Some(last) = last {
                    status.last_schedule_time = Some(Time(last));
                }
            }
        }
    }

    let facts = observe::facts(&existing);
    let retention = Retention {
        keep_last: spec.retention.keep_last as usize,
        max_age,
    };
    let prune = decide::to_prune(&facts, retention, now);
    for victim in &prune {
        // Only the object this schedule owns: a same-named object made since is left alone.
        let uid = existing
            .iter()
            .find(|b| &b.name_any() == victim)
            .and_then(|b| b.metadata.uid.clone());
        match api.delete(victim, &crate::delete::exactly(uid)).await {
            // 409: the name now belongs to another object (uid precondition failed).
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Ok(_) => {
                info!(backup = %victim, "backup pruned");
                publish(ctx, schedule, EventType::Normal, "Pruned", format!("deleted AccountBackup {victim} per retention (keepLast {}, maxAge {}, ttl)", retention.keep_last, spec.retention.max_age.as_deref().unwrap_or("none"))).await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    let remaining: Vec<_> = facts
        .into_iter()
        .filter(|f| !prune.contains(&f.name))
        .collect();

    let next = if spec.suspend {
        None
    } else {
        plan.cron.next_after(now, &plan.tz)
    };
    status.observed_generation = schedule.metadata.generation;
    status.next_schedule_time = next.map(Time);
    status.last_successful_backup = decide::newest_successful(&remaining).map(|b| b.name.clone());
    status.active = decide::active(&remaining);
    let (reason, message) = if spec.suspend {
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
    // Owned backups report progress every few seconds: write only when something changed.
    if schedule.status.as_ref() != Some(&status) {
        write_status(&schedules, &name, &status).await?;
    }

    let wait = next
        .map(|next| next.duration_since(now).unsigned_abs() + Duration::from_secs(1))
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT);
    Ok(Action::requeue(wait))
}

async fn write_status(
    api: &Api<BackupSchedule>,
    name: &str,
    status: &BackupScheduleStatus,
) -> Result<(), ScheduleError> {
    apply_status(api, name, status).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupScheduleSpec;

    #[test]
    fn a_slot_backup_carries_the_template_label_slot_and_owner() {
        let mut schedule = BackupSchedule::new(
            "acme-daily",
            serde_json::from_value::<BackupScheduleSpec>(serde_json::json!({
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
            observe::latest_slot(std::slice::from_ref(&backup)),
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
