//! A restored PVC from the backup's physical snapshot: a pre-provisioned VolumeSnapshotContent
//! (Retain) bound to a new VolumeSnapshot in the target namespace, then a PVC with that dataSource.
//! Names derive from the restore's uid, so restoring one backup twice never collides.

use std::time::Duration;

use kube::api::{DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::VolumeSnapshotRecord;
use crate::snapshot::{volume_snapshot_contents, volume_snapshots};

/// The helper objects' name for one PVC of one restore (pure).
pub fn helper_name(restore_uid: &str, namespace: &str, pvc: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [restore_uid, namespace, pvc] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("rewind-restore-{}", hex::encode(&hasher.finalize()[..8]))
}

pub use crate::snapshot::import::{
    helper_content, helper_snapshot, pvc_from_snapshot, quantity_bytes,
};

async fn create_if_absent(api: &Api<DynamicObject>, object: Value) -> Result<(), kube::Error> {
    let object: DynamicObject = serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Creates the helper content and snapshot and waits until the snapshot is readyToUse.
pub async fn prepare_snapshot(
    client: &Client,
    name: &str,
    namespace: &str,
    record: &VolumeSnapshotRecord,
    timeout: Duration,
) -> Result<(), String> {
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    create_if_absent(&contents, helper_content(name, namespace, record))
        .await
        .map_err(|e| e.to_string())?;
    create_if_absent(&snapshots, helper_snapshot(name, namespace))
        .await
        .map_err(|e| e.to_string())?;
    let started = tokio::time::Instant::now();
    let mut driver_refusing_since = None;
    loop {
        let current = snapshots.get(name).await.map_err(|e| e.to_string())?;
        if current.data["status"]["readyToUse"].as_bool() == Some(true) {
            return Ok(());
        }
        // Only the driver's answer, on the content, counts: the snapshot controller also puts
        // errors on the VolumeSnapshot while its cache has not seen the new content yet
        // ("VolumeSnapshotContent is missing"), and those pass.
        let content = contents.get_opt(name).await.map_err(|e| e.to_string())?;
        let driver_error = content
            .as_ref()
            .and_then(|c| c.data["status"]["error"]["message"].as_str())
            .map(str::to_string);
        let now = tokio::time::Instant::now();
        driver_refusing_since = driver_error
            .as_ref()
            .map(|_| driver_refusing_since.unwrap_or(now));
        let snapshot_error = current.data["status"]["error"]["message"].as_str();
        match import_verdict(
            driver_error.as_deref(),
            driver_refusing_since.map(|since| now - since),
            now - started,
            timeout,
        ) {
            ImportVerdict::Wait => {}
            ImportVerdict::Unavailable(message) => {
                return Err(snapshot_unavailable(record, &message));
            }
            ImportVerdict::TimedOut => {
                return Err(format!(
                    "the imported snapshot was not ready within {timeout:?} (last error: {}): is the physical snapshot still there (driver {})?",
                    snapshot_error.unwrap_or("none"),
                    record.driver
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long the driver must keep refusing an imported snapshot before the volume fails.
pub const DRIVER_REFUSAL_GRACE: Duration = Duration::from_secs(5);

/// What to make of an imported snapshot that is not ready yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportVerdict {
    /// Keep polling.
    Wait,
    /// The driver keeps saying it cannot provide the snapshot: fail the volume now.
    Unavailable(String),
    /// The snapshot timeout passed.
    TimedOut,
}

/// Decides from the driver's error on the helper content, how long it has stood, and how long
/// the import has taken (pure). A driver error fails the volume once it has stood for
/// [`DRIVER_REFUSAL_GRACE`] (a single failed call of the driver is retried by its sidecar).
pub fn import_verdict(
    driver_error: Option<&str>,
    refusing_for: Option<Duration>,
    waited: Duration,
    timeout: Duration,
) -> ImportVerdict {
    match (driver_error, refusing_for) {
        (Some(message), Some(refusing)) if refusing >= DRIVER_REFUSAL_GRACE => {
            ImportVerdict::Unavailable(message.to_string())
        }
        _ if waited >= timeout => ImportVerdict::TimedOut,
        _ => ImportVerdict::Wait,
    }
}

/// Why a volume cannot come back from its snapshot, for the restore's failed item (pure).
pub fn snapshot_unavailable(record: &VolumeSnapshotRecord, driver_message: &str) -> String {
    format!(
        "the storage system could not provide the volume's snapshot {} (driver {}: {driver_message}); \
         if the snapshot is gone (storage lost or deleted outside Rewind), this backup holds no other copy \
         of the volume's data: restore the volume from another backup",
        record.snapshot_handle.as_deref().unwrap_or("(no handle)"),
        record.driver
    )
}

/// Removes the helper snapshot and content; the physical snapshot stays (Retain).
pub async fn remove_helpers(
    client: &Client,
    name: &str,
    namespace: &str,
) -> Result<(), kube::Error> {
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    let removed = async {
        crate::snapshot::delete_if_present(&snapshots, name).await?;
        crate::snapshot::delete_content(client, &contents, name).await
    }
    .await;
    if let Err(err) = &removed {
        tracing::warn!(error = %err, "removing a restore's helper snapshot failed");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> VolumeSnapshotRecord {
        VolumeSnapshotRecord {
            project: "shop".into(),
            pvc: "data".into(),
            driver: "hostpath.csi.k8s.io".into(),
            snapshot_handle: Some("snap-1".into()),
            restore_size: Some("2147483648".into()),
            volume_snapshot_class: Some("csi-hostpath-snapclass".into()),
            ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn helper_names_differ_between_two_restores_of_the_same_backup() {
        assert_ne!(
            helper_name("restore-a", "shop-r1", "data"),
            helper_name("restore-b", "shop-r2", "data")
        );
        assert_eq!(
            helper_name("restore-a", "shop-r1", "data"),
            helper_name("restore-a", "shop-r1", "data")
        );
    }

    #[test]
    fn an_import_fails_only_when_the_driver_keeps_refusing_the_snapshot() {
        let minute = Duration::from_secs(60);
        let secs = Duration::from_secs;
        // The snapshot controller's own error ("VolumeSnapshotContent is missing") is not
        // passed in: only the content's, which the driver's sidecar writes.
        assert_eq!(
            import_verdict(None, None, secs(3), minute),
            ImportVerdict::Wait
        );
        assert_eq!(
            import_verdict(Some("not found"), Some(secs(1)), secs(3), minute),
            ImportVerdict::Wait,
            "one refusal may be a passing failure of the driver"
        );
        assert_eq!(
            import_verdict(Some("not found"), Some(secs(5)), secs(8), minute),
            ImportVerdict::Unavailable("not found".into())
        );
        assert_eq!(
            import_verdict(None, None, minute, minute),
            ImportVerdict::TimedOut
        );
    }

    #[test]
    fn a_lost_snapshot_names_its_handle_the_driver_and_what_to_do() {
        let reason = snapshot_unavailable(&record(), "can not find snapshot for snapshotID snap-1");
        assert!(reason.contains("snapshot snap-1"), "{reason}");
        assert!(reason.contains("can not find snapshot"), "{reason}");
        assert!(
            reason.contains("restore the volume from another backup"),
            "{reason}"
        );
    }
}
