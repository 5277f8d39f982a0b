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
