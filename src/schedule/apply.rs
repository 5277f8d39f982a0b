//! What the schedule controller writes (client required): a slot's AccountBackup, the deletion
//! of pruned ones, its status and events. Each write is idempotent.

use jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::error::ScheduleError;
use super::observe;
use crate::api::{AccountBackup, BackupSchedule, BackupScheduleStatus};
use crate::context::Context;
use crate::status::apply_status;

/// Publishes an event about the schedule.
pub async fn publish(
    ctx: &Context,
    schedule: &BackupSchedule,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::events::publish(&ctx.recorder, schedule, "Schedule", type_, reason, note).await;
}

/// Writes the schedule's status (server-side apply).
pub async fn write(
    api: &Api<BackupSchedule>,
    schedule: &BackupSchedule,
    status: &BackupScheduleStatus,
) -> Result<(), ScheduleError> {
    apply_status(api, &schedule.name_any(), status).await?;
    Ok(())
}

/// Creates the slot's backup; returns it, or None when an earlier reconcile (or another
/// replica) created it already. When someone else took the slot's name, the slot's backup is
/// created under a generated name instead, and a Warning event says so.
pub async fn create_slot_backup(
    api: &Api<AccountBackup>,
    ctx: &Context,
    schedule: &BackupSchedule,
    backup: &AccountBackup,
    slot: Timestamp,
) -> Result<Option<AccountBackup>, ScheduleError> {
    let backup_name = backup.name_any();
    match api.create(&PostParams::default(), backup).await {
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
            Ok(Some(created))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let taken = api.get_opt(&backup_name).await?;
            let ours = taken.is_some_and(|b| !observe::owned_by(schedule, vec![b]).is_empty());
            if ours {
                return Ok(None);
            }
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
            Ok(Some(created))
        }
        Err(err) => Err(err.into()),
    }
}

/// Deletes a pruned backup, exactly the object with `uid`; true when this call deleted it.
pub async fn prune(
    api: &Api<AccountBackup>,
    name: &str,
    uid: Option<String>,
) -> Result<bool, ScheduleError> {
    match api.delete(name, &crate::delete::exactly(uid)).await {
        Ok(_) => {
            info!(backup = %name, "backup pruned");
            Ok(true)
        }
        // 404: gone already; 409: the name now belongs to another object (uid precondition).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(err) => Err(err.into()),
    }
}
