//! Snapshots taken but not yet recorded by a committed backup.
//!
//! Until its backup's repository snapshot is committed, a detached snapshot's
//! VolumeSnapshotContent stays (deletionPolicy Retain, its namespaced VolumeSnapshot already
//! gone), labelled with the backup's UID. A copy that never finishes — the operator stopped,
//! the backup failed or was deleted — is then settled from the cluster, not from process
//! memory: snapshots the committed outcome records are kept, every other one is deleted.

use crate::api::PENDING_LABEL;
use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use super::{
    SnapshotError, delete_content, delete_physical, volume_snapshot_contents, volume_snapshots,
    wait_gone,
};

/// One pending content as listed: object name, CSI driver, snapshot handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The VolumeSnapshotContent.
    pub content: String,
    /// Its CSI driver.
    pub driver: String,
    /// The physical snapshot's handle (empty if the sidecar never reported one).
    pub handle: String,
    /// The VolumeSnapshot it was taken for: namespace, name and UID.
    pub bound_to: Option<(String, String, String)>,
}

/// Which pending snapshots to delete physically (pure): all but those `recorded` names.
pub fn to_delete<'a>(pending: &'a [Pending], recorded: &BTreeSet<String>) -> Vec<&'a Pending> {
    pending
        .iter()
        .filter(|p| !p.handle.is_empty() && !recorded.contains(&p.handle))
        .collect()
}

fn pending_of(object: &DynamicObject) -> Pending {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    let reference = &object.data["spec"]["volumeSnapshotRef"];
    let bound_to = [
        text(&reference["namespace"]),
        text(&reference["name"]),
        text(&reference["uid"]),
    ];
    Pending {
        content: object.name_any(),
        driver: text(&object.data["spec"]["driver"]),
        handle: text(&object.data["status"]["snapshotHandle"]),
        bound_to: (!bound_to.iter().any(String::is_empty)).then(|| bound_to.into()),
    }
}

/// Deletes the VolumeSnapshot a pending content was taken for, if that very object (same UID)
/// is still there; a namesake created since is left alone.
async fn delete_bound_snapshot(
    client: &Client,
    (namespace, name, uid): &(String, String, String),
    timeout: Duration,
) -> Result<(), kube::Error> {
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    let only_that_one = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match snapshots.delete(name, &only_that_one).await {
        Ok(_) => {}
        // Gone already, or a different object under that name now.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            return Ok(());
        }
        Err(err) => return Err(err),
    }
    if !wait_gone(&snapshots, name, timeout).await? {
        tracing::warn!(
            namespace,
            snapshot = name,
            "a stopped attempt's VolumeSnapshot was not gone within the snapshot timeout; the backup's next attempt waits for it"
        );
    }
    Ok(())
}

/// Settles backup `uid`'s pending snapshots: the `recorded` ones stay (only their object goes),
/// every other one is deleted. Idempotent; returns how many were deleted.
pub async fn settle(
    client: &Client,
    uid: &str,
    recorded: &BTreeSet<String>,
    operator_namespace: &str,
    timeout: Duration,
) -> Result<usize, SnapshotError> {
    if uid.is_empty() {
        return Ok(0);
    }
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    let listed = contents
        .list(&ListParams::default().labels(&format!("{PENDING_LABEL}={uid}")))
        .await?;
    let pending: Vec<Pending> = listed.items.iter().map(pending_of).collect();
    // A VolumeSnapshot still bound to a pending content (an attempt stopped between labelling
    // the content and deleting the VolumeSnapshot) goes first, and is waited for: a later
    // attempt must take a new snapshot, never find this one after its physical snapshot went.
    for snapshot in &pending {
        if let Some(bound) = &snapshot.bound_to {
            delete_bound_snapshot(client, bound, timeout).await?;
        }
    }
    let doomed = to_delete(&pending, recorded);
    for snapshot in &doomed {
        delete_physical(
            client,
            &snapshot.driver,
            &snapshot.handle,
            operator_namespace,
            timeout,
        )
        .await?;
    }
    for snapshot in &pending {
        delete_content(client, &contents, &snapshot.content).await?;
    }
    Ok(doomed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(content: &str, handle: &str) -> Pending {
        Pending {
            content: content.into(),
            driver: "hostpath.csi.rewind.dev".into(),
            handle: handle.into(),
            bound_to: None,
        }
    }

    #[test]
    fn snapshots_the_committed_backup_records_are_kept_the_rest_deleted() {
        let listed = [pending("c1", "h1"), pending("c2", "h2"), pending("c3", "")];
        let recorded = BTreeSet::from(["h1".to_string()]);
        let doomed: Vec<&str> = to_delete(&listed, &recorded)
            .iter()
            .map(|p| p.content.as_str())
            .collect();
        assert_eq!(doomed, ["c2"], "no handle: nothing physical to delete");
    }

    #[test]
    fn with_nothing_recorded_every_pending_snapshot_is_deleted() {
        let listed = [pending("c1", "h1"), pending("c2", "h2")];
        assert_eq!(to_delete(&listed, &BTreeSet::new()).len(), 2);
    }
}
