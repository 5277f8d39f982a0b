//! CSI volume snapshots that outlive their namespace, and their deletion.
//!
//! Taking: a VolumeSnapshot of the PVC, wait for readyToUse, set its
//! VolumeSnapshotContent's deletionPolicy to Retain and label it pending for the backup,
//! then remove the VolumeSnapshot: deleting the namespace can no longer touch the snapshot.
//! The content goes once the backup is committed ([`pending`]); from then on the physical
//! snapshot is known to the backup by its driver and handle.
//! Importing one into a namespace (a restore's target, a mover's PVC): [`import`].
//! Deleting: a temporary VolumeSnapshotContent with deletionPolicy Delete that
//! points at the handle, then deleting it makes the CSI sidecar delete the snapshot.

pub mod decide;
pub mod import;
pub mod pending;

use crate::api::DELETE_FINALIZER;
use std::time::Duration;

use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::json;
use tracing::debug;

pub use decide::{ClassInfo, choose_class, snapshot_name};

/// Why a volume could not be snapshotted or its snapshot deleted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No VolumeSnapshotClass for the PVC's driver.
    #[error(
        "no VolumeSnapshotClass for CSI driver {driver}: create one annotated snapshot.storage.kubernetes.io/is-default-class=true, or set spec.volumeSnapshotClassName"
    )]
    NoClass {
        /// The driver.
        driver: String,
    },
    /// The PVC is not bound to a CSI volume.
    #[error("PVC {pvc} is not bound to a CSI volume, so it cannot be snapshotted: {why}")]
    NotCsi {
        /// The PVC.
        pvc: String,
        /// Why.
        why: String,
    },
    /// The snapshot controller or driver reported an error.
    #[error("the CSI driver failed to snapshot PVC {pvc}: {message}")]
    Driver {
        /// The PVC.
        pvc: String,
        /// The driver's message.
        message: String,
    },
    /// readyToUse did not come in time.
    #[error(
        "the snapshot of PVC {pvc} was not ready within {after:?}; check the CSI snapshotter's logs, or raise --snapshot-timeout"
    )]
    Timeout {
        /// The PVC.
        pvc: String,
        /// The limit.
        after: Duration,
    },
    /// Deleting a physical snapshot did not finish in time.
    #[error(
        "deleting physical snapshot {handle} through VolumeSnapshotContent {content} did not finish within {after:?}: {why} (it is tried again)"
    )]
    DeleteTimeout {
        /// The physical snapshot's handle.
        handle: String,
        /// The temporary content deleting it.
        content: String,
        /// The limit.
        after: Duration,
        /// Where it stands and what to look at.
        why: String,
    },
    /// An API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl SnapshotError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoClass { .. } => "no-snapshot-class",
            Self::NotCsi { .. } => "not-csi",
            Self::Driver { .. } => "snapshot-driver",
            Self::Timeout { .. } => "snapshot-timeout",
            Self::DeleteTimeout { .. } => "snapshot-delete-timeout",
            Self::Kube(_) => "kubernetes",
        }
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind),
        plural,
    )
}

/// snapshot.storage.k8s.io/v1 VolumeSnapshot.
pub fn volume_snapshots() -> ApiResource {
    resource("VolumeSnapshot", "volumesnapshots")
}

/// snapshot.storage.k8s.io/v1 VolumeSnapshotContent.
pub fn volume_snapshot_contents() -> ApiResource {
    resource("VolumeSnapshotContent", "volumesnapshotcontents")
}

/// snapshot.storage.k8s.io/v1 VolumeSnapshotClass.
pub fn volume_snapshot_classes() -> ApiResource {
    resource("VolumeSnapshotClass", "volumesnapshotclasses")
}

/// Every VolumeSnapshotClass, as the class decision needs it.
pub async fn list_classes(client: &Client) -> Result<Vec<ClassInfo>, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_classes());
    let list = api.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .map(|class| ClassInfo {
            name: class.metadata.name.clone().unwrap_or_default(),
            driver: class.data["driver"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            is_default: class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("snapshot.storage.kubernetes.io/is-default-class"))
                .is_some_and(|v| v == "true"),
        })
        .collect())
}

/// What a finished snapshot is known by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TakenSnapshot {
    /// The CSI driver.
    pub driver: String,
    /// The driver's snapshot handle.
    pub handle: String,
    /// Bytes a restored volume needs, as reported.
    pub restore_size: Option<String>,
}

async fn create_if_absent(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<(), kube::Error> {
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

pub(crate) async fn delete_if_present(
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// The annotation the CSI snapshotter's sidecar waits for before it removes its finalizer from a
/// deleted VolumeSnapshotContent that a VolumeSnapshot was bound to. The snapshot controller sets
/// it when the VolumeSnapshot is deleted; if that write is lost (the API server unreachable at
/// that moment) and the VolumeSnapshot goes anyway, nothing sets it again and the content stays
/// forever with its finalizer (seen in the chaos suite under an API server restart).
const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";

/// Deletes one of Rewind's VolumeSnapshotContents (all of them Retain: the physical snapshot
/// stays, whoever deletes it does so through [`delete_physical`]) so that it really goes. Once
/// its VolumeSnapshot is confirmed gone (absent, or a different object under that name) it is
/// marked as the snapshot controller would have marked it, and pinned to Retain in the same
/// write; while its VolumeSnapshot is still there (a PVC may still be provisioned from it) the
/// controller's own rule applies, and a later call marks it. Idempotent, and it frees a content
/// already stuck with a deletionTimestamp.
pub(crate) async fn delete_content(
    client: &Client,
    contents: &Api<DynamicObject>,
    name: &str,
) -> Result<(), kube::Error> {
    let Some(content) = contents.get_opt(name).await? else {
        return Ok(());
    };
    let reference = &content.data["spec"]["volumeSnapshotRef"];
    let text = |key: &str| reference[key].as_str().unwrap_or_default().to_string();
    let (namespace, snapshot, uid) = (text("namespace"), text("name"), text("uid"));
    let snapshot_gone = if namespace.is_empty() || snapshot.is_empty() {
        true
    } else {
        let snapshots: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &volume_snapshots());
        match snapshots.get_opt(&snapshot).await? {
            None => true,
            Some(found) => !uid.is_empty() && found.metadata.uid.as_deref() != Some(uid.as_str()),
        }
    };
    if snapshot_gone {
        let mark = json!({
            "metadata": {"annotations": {BEING_DELETED: "yes"}},
            "spec": {"deletionPolicy": "Retain"},
        });
        match contents
            .patch(name, &PatchParams::default(), &Patch::Merge(&mark))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(err) => return Err(err),
        }
    }
    delete_if_present(contents, name).await
}

/// One PVC to snapshot for one backup.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotRequest<'a> {
    /// The PVC's namespace.
    pub namespace: &'a str,
    /// The PVC.
    pub pvc: &'a str,
    /// The VolumeSnapshot's (deterministic) name.
    pub name: &'a str,
    /// The VolumeSnapshotClass.
    pub class: &'a str,
    /// The backup's name (a label on the VolumeSnapshot).
    pub backup: &'a str,
    /// The backup's UID: the content stays labelled pending for it.
    pub backup_uid: &'a str,
}

/// Takes a snapshot of a PVC and detaches it from the namespace (idempotent under its
/// deterministic name); its content stays labelled pending for the backup.
pub async fn take_detached(
    client: &Client,
    request: &SnapshotRequest<'_>,
    timeout: Duration,
) -> Result<TakenSnapshot, SnapshotError> {
    let SnapshotRequest {
        namespace,
        pvc,
        name,
        class,
        backup,
        backup_uid: pending_for,
    } = *request;
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    let mut object = DynamicObject::new(name, &volume_snapshots())
        .within(namespace)
        .data(json!({
            "spec": {"volumeSnapshotClassName": class, "source": {"persistentVolumeClaimName": pvc}}
        }));
    object.metadata.labels = Some(
        [
            ("rewind.dev/backup", backup),
            ("app.kubernetes.io/managed-by", "rewind"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    create_if_absent(&snapshots, &object).await?;

    let deadline = tokio::time::Instant::now() + timeout;
    // An error the snapshotter retries (the driver timed out, was busy) is waited out; it is
    // the reason given if the snapshot is still not ready at the deadline.
    let mut retried_error: Option<String> = None;
    let content_name = loop {
        let current = snapshots.get(name).await?;
        if current.metadata.deletion_timestamp.is_some() {
            // Left by a stopped attempt and being deleted (its physical snapshot may be gone
            // already): wait for it to go, then take a new one under the same name.
            wait_gone(&snapshots, name, timeout).await?;
            create_if_absent(&snapshots, &object).await?;
            if tokio::time::Instant::now() >= deadline {
                return Err(SnapshotError::Timeout {
                    pvc: pvc.into(),
                    after: timeout,
                });
            }
            continue;
        }
        let status = &current.data["status"];
        if let Some(message) = status["error"]["message"].as_str() {
            if !decide::driver_error_is_retried(message) {
                return Err(SnapshotError::Driver {
                    pvc: pvc.into(),
                    message: message.into(),
                });
            }
            retried_error = Some(message.to_string());
        }
        if status["readyToUse"].as_bool() == Some(true)
            && let Some(content) = status["boundVolumeSnapshotContentName"].as_str()
        {
            break content.to_string();
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(match retried_error {
                Some(message) => SnapshotError::Driver {
                    pvc: pvc.into(),
                    message: format!(
                        "{message} (retried by the snapshotter until the snapshot timeout of {timeout:?} passed: raise --snapshot-timeout, or the sidecar's --timeout, for a storage system this slow)"
                    ),
                },
                None => SnapshotError::Timeout {
                    pvc: pvc.into(),
                    after: timeout,
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let retain = json!({
        "metadata": {"labels": {crate::api::PENDING_LABEL: pending_for}},
        "spec": {"deletionPolicy": "Retain"},
    });
    let content = contents
        .patch(
            &content_name,
            &PatchParams::default(),
            &Patch::Merge(&retain),
        )
        .await?;
    if content.metadata.deletion_timestamp.is_some() {
        return Err(SnapshotError::Driver {
            pvc: pvc.into(),
            message: format!(
                "the snapshot's VolumeSnapshotContent {content_name} is being deleted; the backup takes the volume's snapshot again on its next attempt"
            ),
        });
    }
    let taken = TakenSnapshot {
        driver: content.data["spec"]["driver"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        handle: content.data["status"]["snapshotHandle"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        restore_size: content.data["status"]["restoreSize"]
            .as_i64()
            .map(|b| b.to_string()),
    };
    if taken.handle.is_empty() {
        return Err(SnapshotError::Driver {
            pvc: pvc.into(),
            message: "the VolumeSnapshotContent has no snapshotHandle".into(),
        });
    }
    delete_if_present(&snapshots, name).await?;
    if !wait_gone(&snapshots, name, timeout).await? {
        tracing::warn!(
            pvc,
            snapshot = name,
            "the VolumeSnapshot was not gone within the snapshot timeout (a finalizer of someone else's, or a PVC being provisioned from it); its content stays pending for the backup"
        );
    }
    debug!(pvc, snapshot = name, handle = %taken.handle, content = %content_name, "snapshot detached from its namespace, pending until the backup commits");
    Ok(taken)
}

/// Waits up to `timeout` for object `name` to be gone; whether it is.
pub(crate) async fn wait_gone(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
) -> Result<bool, kube::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if api.get_opt(name).await?.is_none() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Deletes a physical snapshot through a temporary VolumeSnapshotContent with deletionPolicy Delete.
/// Idempotent: the content's name derives from the handle, and a retry resumes where it stood.
pub async fn delete_physical(
    client: &Client,
    driver: &str,
    handle: &str,
    operator_namespace: &str,
    timeout: Duration,
) -> Result<(), SnapshotError> {
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    let name = decide::deletion_content_name(driver, handle);
    let mut object = DynamicObject::new(&name, &volume_snapshot_contents()).data(json!({
        "spec": {
            "deletionPolicy": "Delete",
            "driver": driver,
            "source": {"snapshotHandle": handle},
            // Required by the API; no such VolumeSnapshot exists, which is the point.
            "volumeSnapshotRef": {"name": name, "namespace": operator_namespace},
        }
    }));
    object.metadata.finalizers = Some(vec![DELETE_FINALIZER.to_string()]);
    create_if_absent(&contents, &object).await?;
    let timed_out = |why: String| SnapshotError::DeleteTimeout {
        handle: handle.into(),
        content: name.clone(),
        after: timeout,
        why,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    // 1. The sidecar has looked the snapshot up (or reported that it is gone already).
    loop {
        let Some(current) = contents.get_opt(&name).await? else {
            return Ok(());
        };
        let status = &current.data["status"];
        if current.metadata.deletion_timestamp.is_some()
            || status["snapshotHandle"].is_string()
            || status["error"].is_object()
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out(format!(
                "the CSI snapshotter of driver {driver} has not looked the snapshot up; check that it runs and its logs"
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // 2. Delete it: the sidecar calls DeleteSnapshot and clears status.snapshotHandle.
    match contents.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    loop {
        let Some(current) = contents.get_opt(&name).await? else {
            return Ok(());
        };
        if !current.data["status"]["snapshotHandle"].is_string() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let error = current.data["status"]["error"]["message"]
                .as_str()
                .map(|message| format!(" (its error: {message})"))
                .unwrap_or_default();
            return Err(timed_out(format!(
                "the driver has not confirmed the deletion{error}; check the CSI snapshotter's logs"
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // 3. Done: let the object go.
    if let Some(current) = contents.get_opt(&name).await? {
        let remaining: Vec<String> = current
            .metadata
            .finalizers
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != DELETE_FINALIZER)
            .collect();
        let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": current.metadata.resource_version}});
        match contents
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(err) => return Err(err.into()),
        }
    }
    // Gone, or tried again: a content left behind would stay forever. What is left of the
    // deadline, and a few seconds for the last finalizer to come off after a slow driver.
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(5));
    if !wait_gone(&contents, &name, left).await? {
        let held_by = contents
            .get_opt(&name)
            .await?
            .and_then(|current| current.metadata.finalizers)
            .unwrap_or_default()
            .join(", ");
        return Err(timed_out(format!(
            "the physical snapshot is deleted, but the content stays, held by finalizers [{held_by}]: find who holds it, or remove them"
        )));
    }
    Ok(())
}
