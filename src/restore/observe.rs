//! What the ProjectRestore controller reads from the cluster (client required): the backup a
//! restore names and the namespaces that exist. Decisions on them live in `decide`.

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use crate::api::{AccountBackup, ProjectRestore};

/// The AccountBackup a restore names, if it exists (read live: its account is checked on it).
pub async fn backup_of(
    client: &Client,
    restore: &ProjectRestore,
) -> Result<Option<AccountBackup>, kube::Error> {
    Api::<AccountBackup>::all(client.clone())
        .get_opt(&restore.spec.backup)
        .await
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
