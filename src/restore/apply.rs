//! What the restore controller writes (client required): its status, events, and the deletion
//! of the namespaces it created. The restore's own work is `execute`.

use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::error::RestoreError;
use super::namespace;
use crate::api::{ProjectRestore, ProjectRestoreStatus};
use crate::context::Context;
use crate::status::apply_status;

/// Publishes an event about the restore.
pub async fn publish(
    ctx: &Context,
    restore: &ProjectRestore,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::events::publish(&ctx.recorder, restore, "Restore", type_, reason, note).await;
}

/// Writes the restore's status (server-side apply).
pub async fn write(
    api: &Api<ProjectRestore>,
    restore: &ProjectRestore,
    status: &ProjectRestoreStatus,
) -> Result<(), RestoreError> {
    apply_status(api, &restore.name_any(), status).await?;
    Ok(())
}

/// Deletes the namespaces this restore created (never one it did not: see `namespace`).
pub async fn delete_namespaces(
    ctx: &Context,
    restore: &ProjectRestore,
) -> Result<(), RestoreError> {
    let identity = namespace::RestoreIdentity::of(restore);
    let targets = restore
        .status
        .iter()
        .flat_map(|status| status.target_namespaces.values());
    for target in targets {
        namespace::delete_if_ours(&ctx.client, target, &identity).await?;
    }
    Ok(())
}

/// Removes the restore's mover pods and staging claims, and gives up volumes it filled but
/// never handed over. A failure is logged: the owner references remove the pods and claims
/// with the ProjectRestore.
pub async fn remove_movers(ctx: &Context, restore: &ProjectRestore) {
    let uid = restore.metadata.uid.as_deref().unwrap_or_default();
    if let Err(err) = super::movers::remove_movers(&ctx.client, &ctx.namespace, uid).await {
        tracing::warn!(error = %err, "removing the restore's movers failed");
    }
}
