//! Snapshots taken but not yet recorded by a committed backup.
//!
//! Until its backup's repository snapshot is committed, a detached snapshot's
//! VolumeSnapshotContent stays (deletionPolicy Retain, its namespaced VolumeSnapshot already
//! gone), labelled with the backup's UID. A copy that never finishes — the operator stopped,
//! the backup failed or was deleted — is then settled from the cluster, not from process
//! memory: snapshots the committed outcome records are kept, every other one is deleted.
//! An attempt stopped before it labelled a content (the snapshot still being taken) left a
//! VolumeSnapshot under the backup's deterministic name in one of its projects: its content is
//! labelled pending and made Retain, and it is settled the same way, whatever its class.

use crate::api::PENDING_LABEL;
use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::decide::{has_snapshot_name_shape, snapshot_name};
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

/// The unlabelled contents taken for a VolumeSnapshot in one of `projects` under a name of
/// the shape Rewind gives a backup's snapshots (pure): where an attempt may have stopped before
/// labelling its snapshot. Which of them really are the backup's is for the VolumeSnapshot
/// itself to say.
pub fn unlabelled_in<'a>(
    listed: &'a [DynamicObject],
    projects: &BTreeSet<String>,
) -> Vec<&'a DynamicObject> {
    listed
        .iter()
        .filter(|object| !object.labels().contains_key(PENDING_LABEL))
        .filter(|object| object.metadata.deletion_timestamp.is_none())
        .filter(|object| {
            pending_of(object)
                .bound_to
                .is_some_and(|(namespace, name, _)| {
                    projects.contains(&namespace) && has_snapshot_name_shape(&name)
                })
        })
        .collect()
}

/// Whether a VolumeSnapshot named `name` taking PVC `pvc` is the one backup `uid` takes of
/// that PVC (pure): the name is derived from both, so only an attempt of this backup, or
/// someone who copied the derivation into the project, made it.
pub fn taken_by_backup(uid: &str, name: &str, pvc: &str) -> bool {
    !pvc.is_empty() && snapshot_name(uid, pvc) == name
}

/// Takes over a snapshot an attempt of backup `uid` left unlabelled, when its VolumeSnapshot
/// is that very object (the content's UID), not being deleted, and named for this backup and
/// its source PVC: the content is labelled pending for `uid` and made Retain, so it settles as
/// any pending one whatever the class's deletionPolicy. One the driver has not made yet (no
/// handle) is the snapshot controller's to undo: its VolumeSnapshot is deleted.
async fn adopt_unlabelled(
    client: &Client,
    contents: &Api<DynamicObject>,
    uid: &str,
    content: &DynamicObject,
    deadline: Instant,
) -> Result<Option<Pending>, kube::Error> {
    let Some(bound) = pending_of(content).bound_to else {
        return Ok(None);
    };
    let (namespace, name, snapshot_uid) = &bound;
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    let Some(snapshot) = snapshots.get_opt(name).await? else {
        return Ok(None);
    };
    let pvc = snapshot.data["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or_default();
    if snapshot.metadata.uid.as_deref() != Some(snapshot_uid.as_str())
        || snapshot.metadata.deletion_timestamp.is_some()
        || !taken_by_backup(uid, name, pvc)
    {
        return Ok(None);
    }
    if !content.data["status"]["snapshotHandle"].is_string() {
        delete_bound_snapshot(client, &bound, deadline).await?;
        return Ok(None);
    }
    let pending = json!({
        "metadata": {"labels": {PENDING_LABEL: uid}},
        "spec": {"deletionPolicy": "Retain"},
    });
    let adopted = contents
        .patch(
            &content.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&pending),
        )
        .await?;
    Ok(Some(pending_of(&adopted)))
}

/// Deletes the VolumeSnapshot a pending content was taken for, if that very object (same UID)
/// is still there; a namesake created since is left alone. Waits for it until `deadline`, one
/// for the whole settle, so VolumeSnapshots held by someone's finalizer cannot add up.
async fn delete_bound_snapshot(
    client: &Client,
    (namespace, name, uid): &(String, String, String),
    deadline: Instant,
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
    let left = deadline.saturating_duration_since(Instant::now());
    if !wait_gone(&snapshots, name, left).await? {
        tracing::warn!(
            namespace,
            snapshot = name,
            "a stopped attempt's VolumeSnapshot was not gone within the snapshot timeout; the backup's next attempt waits for it"
        );
    }
    Ok(())
}

/// Releases `pending` snapshots: their VolumeSnapshots first, then the physical snapshots not
/// `recorded`, then the contents. Returns how many physical snapshots were deleted.
async fn release(
    client: &Client,
    contents: &Api<DynamicObject>,
    pending: &[Pending],
    recorded: &BTreeSet<String>,
    operator_namespace: &str,
    (timeout, deadline): (Duration, Instant),
) -> Result<usize, SnapshotError> {
    // A VolumeSnapshot still bound to a pending content (an attempt stopped between labelling
    // the content and deleting the VolumeSnapshot) goes first, and is waited for: a later
    // attempt must take a new snapshot, never find this one after its physical snapshot went.
    for snapshot in pending {
        if let Some(bound) = &snapshot.bound_to {
            delete_bound_snapshot(client, bound, deadline).await?;
        }
    }
    let doomed = to_delete(pending, recorded);
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
    for snapshot in pending {
        delete_content(client, contents, &snapshot.content).await?;
    }
    Ok(doomed.len())
}

/// Settles backup `uid`'s pending snapshots: the `recorded` ones stay (only their object goes),
/// every other one is deleted; then the snapshots an attempt left unlabelled in one of the
/// backup's `projects` the same way. Idempotent; returns how many physical snapshots were
/// deleted.
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
    let limits = (timeout, Instant::now() + timeout);
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    let listed = contents.list(&ListParams::default()).await?.items;
    let pending: Vec<Pending> = listed
        .iter()
        .filter(|object| object.labels().get(PENDING_LABEL).map(String::as_str) == Some(uid))
        .map(pending_of)
        .collect();
    let mut deleted = release(
        client,
        &contents,
        &pending,
        recorded,
        operator_namespace,
        limits,
    )
    .await?;
    let mut adopted = Vec::new();
    for content in unlabelled_in(&listed, projects) {
        if let Some(stray) = adopt_unlabelled(client, &contents, uid, content, limits.1).await? {
            adopted.push(stray);
        }
    }
    deleted += release(
        client,
        &contents,
        &adopted,
        recorded,
        operator_namespace,
        limits,
    )
    .await?;
    Ok(deleted)
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
    fn only_unlabelled_contents_taken_under_a_backup_snapshot_name_in_the_backups_projects_are_looked_at()
     {
        let name = |n: &str| snapshot_name("uid", n);
        let mut deleting = content("c4", &[], ("project-a", &name("4"), "u4"));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let listed = [
            content("c1", &[], ("project-a", &name("1"), "u1")),
            content(
                "c2",
                &[(PENDING_LABEL, "uid")],
                ("project-a", &name("2"), "u2"),
            ),
            content("c3", &[], ("other-account", &name("3"), "u3")),
            deleting,
            content("c5", &[], ("project-a", "", "")),
            content("c6", &[], ("project-a", "tenants-own", "u6")),
            content(
                "c7",
                &[],
                ("project-a", "rewind-restore-0123456789abcdef", "u7"),
            ),
        ];
        let projects = BTreeSet::from(["project-a".to_string()]);
        let looked_at: Vec<String> = unlabelled_in(&listed, &projects)
            .iter()
            .map(|c| c.name_any())
            .collect();
        assert_eq!(looked_at, ["c1"]);
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
