//! Volume step of a backup: a detached CSI snapshot of every PVC of a project, in parallel.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::{AccountBackup, EXCLUDE_LABEL, ItemOutcome, VolumeSnapshotRecord};
use crate::snapshot::{
    ClassInfo, SnapshotError, SnapshotRequest, choose_class, snapshot_name, take_detached,
};

/// PVCs snapshotted at the same time.
const PARALLEL_SNAPSHOTS: usize = 8;

/// What the volume step of one project gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeResults {
    /// Snapshots taken and detached.
    pub records: Vec<VolumeSnapshotRecord>,
    /// PVCs excluded on purpose.
    pub excluded: Vec<ItemOutcome>,
    /// PVCs that could not be snapshotted, with why.
    pub failed: Vec<ItemOutcome>,
}

/// Whether a PVC is excluded by its label (pure).
pub fn is_excluded(labels: &BTreeMap<String, String>) -> bool {
    labels.get(EXCLUDE_LABEL).map(String::as_str) == Some("true")
}

async fn driver_of(client: &Client, pvc: &PersistentVolumeClaim) -> Result<String, SnapshotError> {
    let name = pvc.name_any();
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| phase == "Bound");
    let Some(volume) = volume else {
        return Err(SnapshotError::NotCsi {
            pvc: name,
            why: format!("it is not Bound (phase {phase:?})"),
        });
    };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes.get(&volume).await?;
    pv.spec
        .and_then(|s| s.csi)
        .map(|csi| csi.driver)
        .ok_or(SnapshotError::NotCsi {
            pvc: name,
            why: format!("volume {volume} is not a CSI volume"),
        })
}

async fn snapshot_one(
    client: &Client,
    backup: &AccountBackup,
    project: &str,
    pvc: &PersistentVolumeClaim,
    classes: &[ClassInfo],
    timeout: std::time::Duration,
) -> Result<VolumeSnapshotRecord, SnapshotError> {
    let name = pvc.name_any();
    let driver = driver_of(client, pvc).await?;
    let class = choose_class(
        backup.spec.volume_snapshot_class_name.as_deref(),
        &driver,
        classes,
    )
    .ok_or_else(|| SnapshotError::NoClass {
        driver: driver.clone(),
    })?;
    let uid = backup.metadata.uid.clone().unwrap_or_default();
    let backup_name = backup.name_any();
    let request = SnapshotRequest {
        namespace: project,
        pvc: &name,
        name: &snapshot_name(&uid, &name),
        class: &class,
        backup: &backup_name,
        backup_uid: &uid,
    };
    let taken = take_detached(client, &request, timeout).await?;
    let spec = pvc.spec.clone().unwrap_or_default();
    Ok(VolumeSnapshotRecord {
        project: project.to_string(),
        pvc: name,
        driver: taken.driver,
        snapshot_handle: Some(taken.handle),
        restore_size: taken.restore_size,
        pvc_size: spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").map(|q| q.0.clone())),
        storage_class: spec.storage_class_name,
        access_modes: spec.access_modes.unwrap_or_default(),
        volume_snapshot_class: Some(class),
        ready: true,
        repository_copy: None,
    })
}

/// Snapshots every PVC of a project, excluded ones aside; a failure affects only its PVC.
pub async fn snapshot_project(
    client: &Client,
    backup: &AccountBackup,
    project: &str,
    classes: &[ClassInfo],
    timeout: std::time::Duration,
) -> Result<VolumeResults, kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), project);
    let mut results = VolumeResults::default();
    let mut to_snapshot = Vec::new();
    for pvc in claims.list(&ListParams::default()).await?.items {
        if is_excluded(pvc.labels()) {
            results.excluded.push(ItemOutcome {
                project: project.to_string(),
                kind: "PersistentVolumeClaim".into(),
                name: pvc.name_any(),
                reason: format!(
                    "labelled {EXCLUDE_LABEL}=true: not snapshotted; a restore creates it empty"
                ),
            });
        } else {
            to_snapshot.push(pvc);
        }
    }
    // Each future owns what it uses, so the stream is Send for the controller's runtime.
    let jobs = to_snapshot.into_iter().map(|pvc| {
        let client = client.clone();
        let backup = backup.clone();
        let project = project.to_string();
        let classes = classes.to_vec();
        async move {
            let outcome = snapshot_one(&client, &backup, &project, &pvc, &classes, timeout).await;
            (pvc.name_any(), outcome)
        }
    });
    let outcomes: Vec<(String, Result<VolumeSnapshotRecord, SnapshotError>)> =
        futures::stream::iter(jobs)
            .buffer_unordered(PARALLEL_SNAPSHOTS)
            .collect()
            .await;
    for (pvc, outcome) in outcomes {
        match outcome {
            Ok(record) => results.records.push(record),
            Err(err) => results.failed.push(ItemOutcome {
                project: project.to_string(),
                kind: "PersistentVolumeClaim".into(),
                name: pvc,
                reason: err.to_string(),
            }),
        }
    }
    results.records.sort_by(|a, b| a.pvc.cmp(&b.pvc));
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_label_value_true_excludes() {
        let labels = |v: &str| BTreeMap::from([(EXCLUDE_LABEL.to_string(), v.to_string())]);
        assert!(is_excluded(&labels("true")));
        assert!(!is_excluded(&labels("false")));
        assert!(!is_excluded(&BTreeMap::new()));
    }
}
