//! What the backup controller writes (client required): its status, events, the release of
//! its slot, lock, volume snapshots and repository data. Each write is idempotent.

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use super::decide;
use super::error::BackupError;
use crate::account_lock::Holder;
use crate::api::{AccountBackup, AccountBackupStatus};
use crate::archive::layout::{BackupOutcome, with_complete_lists};
use crate::context::Context;
use crate::status::apply_status;

/// How often a Queued backup looks again whether it may start.
pub const QUEUED_RECHECK: Duration = Duration::from_secs(5);

/// Publishes an event about the backup.
pub async fn publish(
    ctx: &Context,
    backup: &AccountBackup,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::events::publish(&ctx.recorder, backup, "Backup", type_, reason, note).await;
}

pub async fn write(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
    status: &AccountBackupStatus,
) -> Result<(), BackupError> {
    apply_status(api, &backup.name_any(), status).await?;
    Ok(())
}

/// Holds a backup in Queued behind `behind`, writing its status only when that changes.
pub async fn queue(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
    behind: &str,
    now: Timestamp,
) -> Result<Action, BackupError> {
    let status = decide::queued_status(backup, behind, now);
    if backup.status.as_ref() != Some(&status) {
        write(api, backup, &status).await?;
    }
    Ok(Action::requeue(QUEUED_RECHECK))
}

/// Settles the backup's pending volume snapshots: those `outcome` records stay, the rest go.
pub async fn settle_snapshots(
    ctx: &Context,
    backup: &AccountBackup,
    outcome: Option<&BackupOutcome>,
) -> Result<(), BackupError> {
    let recorded = outcome
        .map(|o| {
            o.volume_snapshots
                .iter()
                .filter_map(|v| v.snapshot_handle.clone())
                .collect()
        })
        .unwrap_or_default();
    // Where an attempt may have left a snapshot it never labelled: the account's projects now
    // (namespaces carry the account label only by the platform's hand, never a tenant's).
    let projects = super::observe::projects(&ctx.client, &backup.spec.account)
        .await?
        .into_iter()
        .map(|project| project.name)
        .collect();
    let deleted = crate::snapshot::pending::settle(
        &ctx.client,
        backup.metadata.uid.as_deref().unwrap_or_default(),
        &recorded,
        &projects,
        &ctx.namespace,
        ctx.step_timeouts.snapshot,
    )
    .await
    .map_err(|err| BackupError::Snapshot(err.to_string()))?;
    if deleted > 0 {
        info!(
            deleted,
            "deleted volume snapshots an unfinished copy attempt had taken"
        );
    }
    Ok(())
}

/// A finished backup gives back its place under the concurrency limit and its account lock.
pub async fn release_slot_and_lock(
    ctx: &Context,
    backup: &AccountBackup,
) -> Result<(), BackupError> {
    ctx.backup_limit
        .slot_freed(backup.metadata.uid.as_deref().unwrap_or_default())
        .await;
    ctx.locks
        .release(&backup.spec.account, &Holder::backup(backup))
        .await?;
    // Movers and database workers of any attempt, a restarted operator's included.
    let uid = backup.metadata.uid.as_deref().unwrap_or_default();
    if !uid.is_empty()
        && let Err(err) = crate::mover::apply::remove_all(&ctx.client, &ctx.namespace, uid).await
    {
        tracing::warn!(error = %err, "removing the backup's movers failed; they go with the AccountBackup (owner references)");
    }
    Ok(())
}

/// Releases the snapshots of its own that movers and workers wrote for backup `uid` (volume
/// copies, database dumps) that are not in `keep`: those of an attempt that did not finish, or
/// all of them for a backup that failed or is deleted.
pub async fn release_copies_and_dumps(
    ctx: &Context,
    uid: &str,
    keep: &[&str],
) -> Result<usize, BackupError> {
    if uid.is_empty() {
        return Ok(0);
    }
    let snapshots = ctx
        .store
        .list()
        .await
        .map_err(|err| BackupError::Repository(err.message))?;
    let mut released = 0;
    for snapshot in snapshots.iter().filter(|s| {
        crate::archive::layout::is_data_of_backup(&s.metadata, uid)
            && !keep.contains(&s.id.as_str())
    }) {
        ctx.store
            .release(&snapshot.id)
            .await
            .map_err(|err| BackupError::Repository(err.message))?;
        released += 1;
    }
    Ok(released)
}

pub async fn release_data(backup: &AccountBackup, ctx: &Context) -> Result<(), BackupError> {
    // Every volume snapshot, also those beyond the first ones the status lists. When the
    // repository says the record is gone for good (released already by an earlier attempt that
    // could not write its status), the status's own list is what is left to release.
    let backup = match with_complete_lists(ctx.store.as_ref(), backup.clone()).await {
        Ok(complete) => complete,
        Err(err) if err.permanent => {
            tracing::warn!(error = %err, "the backup's outcome record cannot be read; releasing what its status lists");
            backup.clone()
        }
        Err(err) => return Err(BackupError::Repository(err.message)),
    };
    for volume in backup.status.iter().flat_map(|s| s.volume_snapshots.iter()) {
        if let Some(handle) = &volume.snapshot_handle {
            crate::snapshot::delete_physical(
                &ctx.client,
                &volume.driver,
                handle,
                &ctx.namespace,
                ctx.step_timeouts.snapshot,
            )
            .await
            .map_err(|err| BackupError::Snapshot(err.to_string()))?;
        }
    }
    let copies: Vec<&str> = backup
        .status
        .iter()
        .flat_map(|s| s.volume_snapshots.iter())
        .filter_map(|v| v.repository_copy.as_ref().map(|c| c.snapshot.as_str()))
        .chain(
            backup
                .status
                .iter()
                .flat_map(|s| s.database_dumps.iter())
                .filter_map(|d| d.snapshot.as_deref()),
        )
        .collect();
    for copy in &copies {
        ctx.store
            .release(copy)
            .await
            .map_err(|err| BackupError::Repository(err.message))?;
    }
    release_copies_and_dumps(ctx, backup.metadata.uid.as_deref().unwrap_or_default(), &[]).await?;
    if let Some(snapshot) = backup
        .status
        .as_ref()
        .and_then(|s| s.repository_snapshot.as_deref())
    {
        ctx.store
            .release(snapshot)
            .await
            .map_err(|err| BackupError::Repository(err.message))?;
    }
    Ok(())
}

/// Deletes an expired backup's object (its data is released already), exactly that object.
pub async fn delete_object(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
) -> Result<(), BackupError> {
    api.delete(
        &backup.name_any(),
        &crate::delete::exactly(backup.metadata.uid.clone()),
    )
    .await?;
    Ok(())
}
