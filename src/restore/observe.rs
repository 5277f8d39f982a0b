//! What the ProjectRestore controller reads (client required): the backup a restore names —
//! with its records completed from the repository when its status lists only the first ones —
//! and the namespaces that exist. Decisions on them live in `decide`.

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use super::decide::reads_all_records;
use super::error::RestoreError;
use crate::api::{AccountBackup, ProjectRestore};
use crate::archive::layout::with_complete_lists;
use crate::archive::store::SnapshotStore;

/// The AccountBackup a restore names, if it exists (read live: its account is checked on it).
pub async fn backup_of(
    client: &Client,
    restore: &ProjectRestore,
) -> Result<Option<AccountBackup>, kube::Error> {
    Api::<AccountBackup>::all(client.clone())
        .get_opt(&restore.spec.backup)
        .await
}

/// `backup` with every project, volume snapshot and dump listed, read from the repository when
/// its status lists only the first ones — but only for a restorable backup of the restore's own
/// account: a restore that will be refused costs no repository read.
pub async fn with_all_records(
    store: &dyn SnapshotStore,
    restore: &ProjectRestore,
    backup: AccountBackup,
) -> Result<AccountBackup, RestoreError> {
    if !reads_all_records(restore, &backup) {
        return Ok(backup);
    }
    with_complete_lists(store, backup)
        .await
        .map_err(|err| RestoreError::Repository {
            message: format!("reading the backup's records: {}", err.message),
            permanent: err.permanent,
        })
}

/// The names of every namespace of the cluster (a restore never writes into an existing one).
pub async fn namespace_names(client: &Client) -> Result<Vec<String>, kube::Error> {
    Ok(Api::<Namespace>::all(client.clone())
        .list_metadata(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect())
}
