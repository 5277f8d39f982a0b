//! The volume copy step of a backup: one mover pod per snapshotted volume copies its files into
//! the repository; the operator only creates, watches and removes the movers (docs/volumes.md).

use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::{Client, Resource};
use tokio::time::Instant;

use crate::api::{AccountBackup, ItemOutcome, VolumeCopyRecord, VolumeSnapshotRecord};
use crate::mover::{BackupVolume, MoverSettings, apply, backup_mover, copy_record};

/// Copies every volume that has a snapshot into the repository, `parallel` at a time, within
/// `time_left`. Each copy lands in its record; each failure is one failed item, with the snapshot
/// kept (the volume stays restorable while the storage system holds it).
pub async fn copy_volumes(
    client: &Client,
    settings: &MoverSettings,
    parallel: usize,
    backup: &AccountBackup,
    records: &mut [VolumeSnapshotRecord],
    time_left: Duration,
) -> Vec<ItemOutcome> {
    let started = Instant::now();
    let Some(owner) = backup.controller_owner_ref(&()) else {
        return Vec::new();
    };
    let uid = backup.metadata.uid.clone().unwrap_or_default();
    // Each future owns what it uses, so the stream is Send for the controller's runtime.
    let owned: Vec<(usize, VolumeSnapshotRecord)> = records
        .iter()
        .enumerate()
        .filter(|(_, record)| record.snapshot_handle.is_some())
        .map(|(at, record)| (at, record.clone()))
        .collect();
    let (client_all, settings_all) = (client.clone(), settings.clone());
    let jobs = owned.into_iter().map(move |(at, record)| {
        let (client, owner, uid) = (client_all.clone(), owner.clone(), uid.clone());
        let settings = settings_all.clone();
        async move {
            let left = time_left.saturating_sub(started.elapsed());
            let result = copy_one(&client, &settings, &uid, &owner, &record, left).await;
            (at, result)
        }
    });
    let results: Vec<(usize, Result<VolumeCopyRecord, String>)> = futures::stream::iter(jobs)
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut failed = Vec::new();
    for (at, result) in results {
        let record = &mut records[at];
        match result {
            Ok(copy) => record.repository_copy = Some(copy),
            Err(reason) => failed.push(ItemOutcome {
                project: record.project.clone(),
                kind: "PersistentVolumeClaim".into(),
                name: record.pvc.clone(),
                reason: format!(
                    "copying the volume into the repository failed: {reason}; its CSI snapshot is kept, so it stays restorable while the storage system holds it — take a new backup once the cause is fixed"
                ),
            }),
        }
    }
    failed
}

/// One volume's mover, from creation to removal.
async fn copy_one(
    client: &Client,
    settings: &MoverSettings,
    backup_uid: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    record: &VolumeSnapshotRecord,
    time_left: Duration,
) -> Result<VolumeCopyRecord, String> {
    let mover = backup_mover(
        settings,
        &BackupVolume {
            backup_uid,
            owner,
            record,
            read_only_many: false,
        },
        time_left,
    )
    .map_err(|err| err.to_string())?;
    let namespace = settings.namespace.as_str();
    let outcome = run_mover(client, namespace, &mover, time_left).await;
    // The mover's objects go whatever happened; the physical snapshot stays (Retain).
    if let Err(err) = apply::remove(client, namespace, &mover.name).await {
        tracing::warn!(mover = %mover.name, error = %err, "removing a backup mover failed; it is removed when the backup ends");
    }
    let summary = outcome?;
    copy_record(&summary, &Timestamp::now().to_string())
}

async fn run_mover(
    client: &Client,
    namespace: &str,
    mover: &crate::mover::BackupMover,
    time_left: Duration,
) -> Result<String, String> {
    for object in [&mover.content, &mover.snapshot, &mover.pvc, &mover.pod] {
        apply::create_if_absent(client, object)
            .await
            .map_err(|err| format!("the Kubernetes API refused the mover: {err}"))?;
    }
    tracing::info!(mover = %mover.name, "volume copy started");
    apply::wait_for_pod(client, namespace, &mover.name, &mover.pod, time_left).await
}
