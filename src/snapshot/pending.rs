//! Snapshots taken but not yet recorded by a committed backup.
//!
//! Until its backup's repository snapshot is committed, a detached snapshot's
//! VolumeSnapshotContent stays (deletionPolicy Retain, its namespaced VolumeSnapshot already
//! gone), labelled with the backup's UID. A copy that never finishes — the operator stopped,
//! the backup failed or was deleted — is then settled from the cluster, not from process
//! memory: snapshots the committed outcome records are kept, every other one is deleted.
//! An attempt stopped before it labelled a content (the snapshot still being taken) left a
//! VolumeSnapshot under the backup's deterministic name in one of its projects: that one is
//! deleted too, with its content and physical snapshot (deletionPolicy Delete, as taken).

use crate::api::PENDING_LABEL;
use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use super::decide::snapshot_name;
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

/// The VolumeSnapshots (namespace, name, UID) that contents not labelled pending were taken
/// for in one of `projects` (pure): where an attempt stopped before labelling its snapshot.
/// Which of them really are the backup's is for the VolumeSnapshot itself to say.
pub fn unlabelled_in(
    listed: &[DynamicObject],
    projects: &BTreeSet<String>,
) -> Vec<(String, String, String)> {
    listed
        .iter()
        .filter(|object| !object.labels().contains_key(PENDING_LABEL))
        .filter(|object| object.metadata.deletion_timestamp.is_none())
        .filter_map(|object| pending_of(object).bound_to)
        .filter(|(namespace, _, _)| projects.contains(namespace))
        .collect()
}

/// Whether a VolumeSnapshot named `name` taking PVC `pvc` is the one backup `uid` takes of
/// that PVC (pure): the name is derived from both, so only an attempt of this backup, or
/// someone who copied the derivation into the project, made it.
pub fn taken_by_backup(uid: &str, name: &str, pvc: &str) -> bool {
    !pvc.is_empty() && snapshot_name(uid, pvc) == name
}

/// Deletes the VolumeSnapshot an attempt of backup `uid` created in a project and never
/// labelled; its content (Delete, as taken) and physical snapshot go with it. Whether it is
/// one is read from the object: its UID, its name derived from `uid` and its source PVC.
async fn delete_unlabelled_snapshot(
    client: &Client,
    uid: &str,
    bound: &(String, String, String),
    timeout: Duration,
) -> Result<bool, kube::Error> {
    let (namespace, name, snapshot_uid) = bound;
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    let Some(snapshot) = snapshots.get_opt(name).await? else {
        return Ok(false);
    };
    let pvc = snapshot.data["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or_default();
    if snapshot.metadata.uid.as_deref() != Some(snapshot_uid.as_str())
        || snapshot.metadata.deletion_timestamp.is_some()
        || !taken_by_backup(uid, name, pvc)
    {
        return Ok(false);
    }
    delete_bound_snapshot(client, bound, timeout).await?;
    Ok(true)
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
/// every other one is deleted, as is a snapshot an attempt left unlabelled in one of the
/// backup's `projects`. Idempotent; returns how many physical snapshots were deleted.
pub async fn settle(
    client: &Client,
    uid: &str,
    recorded: &BTreeSet<String>,
    projects: &BTreeSet<String>,
    operator_namespace: &str,
    timeout: Duration,
) -> Result<usize, SnapshotError> {
    if uid.is_empty() {
        return Ok(0);
    }
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    let listed = contents.list(&ListParams::default()).await?;
    let (labelled, unlabelled): (Vec<DynamicObject>, Vec<DynamicObject>) = listed
        .items
        .into_iter()
        .partition(|object| object.labels().contains_key(PENDING_LABEL));
    let mut stray = 0;
    for bound in unlabelled_in(&unlabelled, projects) {
        if delete_unlabelled_snapshot(client, uid, &bound, timeout).await? {
            stray += 1;
        }
    }
    let pending: Vec<Pending> = labelled
        .iter()
        .filter(|object| object.labels().get(PENDING_LABEL).map(String::as_str) == Some(uid))
        .map(pending_of)
        .collect();
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
    Ok(doomed.len() + stray)
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

    fn content(name: &str, labels: &[(&str, &str)], bound_to: (&str, &str, &str)) -> DynamicObject {
        let (namespace, snapshot, uid) = bound_to;
        let mut object = DynamicObject::new(name, &volume_snapshot_contents()).data(
            serde_json::json!({"spec": {"volumeSnapshotRef": {"namespace": namespace, "name": snapshot, "uid": uid}}}),
        );
        object.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        object
    }

    #[test]
    fn only_unlabelled_contents_taken_in_the_backups_projects_are_looked_at() {
        let mut deleting = content("c4", &[], ("project-a", "rewind-4", "u4"));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let listed = [
            content("c1", &[], ("project-a", "rewind-1", "u1")),
            content(
                "c2",
                &[(PENDING_LABEL, "uid")],
                ("project-a", "rewind-2", "u2"),
            ),
            content("c3", &[], ("other-account", "rewind-3", "u3")),
            deleting,
            content("c5", &[], ("project-a", "", "")),
        ];
        let projects = BTreeSet::from(["project-a".to_string()]);
        assert_eq!(
            unlabelled_in(&listed, &projects),
            [(
                "project-a".to_string(),
                "rewind-1".to_string(),
                "u1".to_string()
            )]
        );
    }

    #[test]
    fn a_volume_snapshot_is_the_backups_only_under_the_name_derived_from_its_uid_and_pvc() {
        let name = snapshot_name("backup-uid", "data");
        assert!(taken_by_backup("backup-uid", &name, "data"));
        assert!(!taken_by_backup("other-backup", &name, "data"));
        assert!(!taken_by_backup("backup-uid", &name, "logs"));
        assert!(!taken_by_backup("backup-uid", &name, ""));
        assert!(!taken_by_backup("backup-uid", "data", "data"));
    }

    #[test]
    fn with_nothing_recorded_every_pending_snapshot_is_deleted() {
        let listed = [pending("c1", "h1"), pending("c2", "h2")];
        assert_eq!(to_delete(&listed, &BTreeSet::new()).len(), 2);
    }
}
