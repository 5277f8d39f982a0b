//! The BackupSchedule reconcile shell: the kube-runtime wiring, then observe → decide → apply → report.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{instrument, warn};

use super::apply::{self, publish};
use super::decide::{self, Plan, Retention, SlotDecision};
use super::error::ScheduleError;
use super::observe;
use crate::api::{AccountBackup, BackupSchedule};
use crate::context::Context;
use crate::metrics::ReconcileLabels;

/// The longest a schedule waits before looking again (ttl and maxAge pruning happen at least this often).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Runs the controller until `shutdown` is cancelled. `backup_changes` is a subscription to the
/// shared AccountBackup watch: a change of one of a schedule's backups wakes the schedule.
pub async fn run(
    ctx: Arc<Context>,
    backup_changes: impl futures::Stream<Item = Arc<AccountBackup>> + Send + 'static,
    shutdown: CancellationToken,
) {
    let schedules: Api<BackupSchedule> = Api::all(ctx.client.clone());
    // Retention decides from the shared cache of backups: wait until it holds the first list.
    tokio::select! {
        _ = ctx.backups.wait_until_ready() => {}
        _ = shutdown.cancelled() => return,
    }
    Controller::new(schedules, watcher::Config::default().any_semantic())
        .owns_shared_stream(backup_changes)
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

async fn reconcile_inner(
    schedule: &BackupSchedule,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, ScheduleError> {
    let schedules: Api<BackupSchedule> = Api::all(ctx.client.clone());
    let api: Api<AccountBackup> = Api::all(ctx.client.clone());
    let spec = &schedule.spec;
    if schedule.metadata.deletion_timestamp.is_some() {
        // Being deleted: garbage collection removes the owned backups; create nothing new.
        return Ok(Action::await_change());
    }
    let plan = match Plan::new(&spec.schedule, spec.time_zone.as_deref(), &spec.account) {
        Ok(plan) => plan,
        Err(err) => {
            let status = decide::invalid_status(schedule, err.category(), err.to_string(), now);
            apply::write(&schedules, schedule, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let max_age = match decide::max_age(schedule) {
        Ok(max_age) => max_age,
        Err(message) => {
            let status = decide::invalid_status(schedule, "InvalidRetention", message, now);
            apply::write(&schedules, schedule, &status).await?;
            return Ok(Action::await_change());
        }
    };

    let mut existing = observe::owned_by(schedule, observe::backups(&ctx.backups, schedule));
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
                let backup = decide::backup_for_slot(schedule, slot);
                if let Some(created) =
                    apply::create_slot_backup(&api, ctx, schedule, &backup, slot).await?
                {
                    existing.push(created);
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

    let retention = Retention {
        keep_last: spec.retention.keep_last as usize,
        max_age,
    };
    let mut facts = observe::facts(&existing);
    let mut prune = decide::to_prune(&facts, retention, now);
    if !prune.is_empty() {
        // Deleting is decided on what the API server holds now, never on a cache that may still
        // show a backup deleted a moment ago (and protect it instead of the newest real one).
        existing = observe::owned_by(schedule, observe::backups_live(&api, schedule).await?);
        facts = observe::facts(&existing);
        prune = decide::to_prune(&facts, retention, now);
    }
    for victim in &prune {
        // Only the object this schedule owns: a same-named object made since is left alone.
        let uid = existing
            .iter()
            .find(|b| &b.name_any() == victim)
            .and_then(|b| b.metadata.uid.clone());
        if apply::prune(&api, victim, uid).await? {
            publish(
                ctx,
                schedule,
                EventType::Normal,
                "Pruned",
                format!(
                    "deleted AccountBackup {victim} per retention (keepLast {}, maxAge {}, ttl)",
                    retention.keep_last,
                    spec.retention
                        .max_age
                        .as_ref()
                        .map_or("none", |age| age.as_str())
                ),
            )
            .await;
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
    let status = decide::scheduled_status(schedule, status, next, &remaining, now);
    // Owned backups report progress every few seconds: write only when something changed.
    if schedule.status.as_ref() != Some(&status) {
        apply::write(&schedules, schedule, &status).await?;
    }
    Ok(Action::requeue(decide::next_wake(next, now, MAX_WAIT)))
}
