//! A restored PVC filled from the backup's repository copy: a restore mover fills a staging PVC
//! in the operator's namespace, and the filled volume is handed to the restored claim in the
//! target namespace (kept, released, re-pointed; its reclaim policy given back once bound).
//! Every step finds the cluster as an earlier attempt left it, by deterministic names and the
//! volume's `rewind.dev/filled-by` label.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::{
    FILLED_BY_LABEL, OPERATION_UID_LABEL, RECLAIM_POLICY_ANNOTATION, VolumeCopyRecord,
    VolumeSnapshotRecord,
};
use crate::mover::restore::{RepositoryCopy, hand_over_patch, reclaim_policy_patch};
use crate::mover::{MoverSettings, RestoreVolume, apply, restore_mover};

/// How long a released volume may take to show Released before the hand-over gives up.
const RELEASE_WAIT: Duration = Duration::from_secs(60);

/// One volume to fill.
pub struct Fill<'a> {
    /// The ProjectRestore's UID.
    pub restore_uid: &'a str,
    /// The ProjectRestore as the owner of the mover's objects.
    pub owner: &'a OwnerReference,
    /// The namespace of the restored claim.
    pub target_namespace: &'a str,
    /// The volume as the backup recorded it.
    pub record: &'a VolumeSnapshotRecord,
    /// Its copy in the repository.
    pub copy: &'a VolumeCopyRecord,
}

/// Fills a new volume from the repository copy and hands it to claim `record.pvc` in the
/// target namespace; returns the PersistentVolume's name for the restored claim's
/// `spec.volumeName`. The claim itself is created by the restore like any other object.
pub async fn fill_from_repository(
    client: &Client,
    settings: &MoverSettings,
    fill: &Fill<'_>,
    time_left: Duration,
) -> Result<String, String> {
    let copy = RepositoryCopy {
        snapshot: fill.copy.snapshot.clone(),
        stream: fill.copy.stream.clone(),
    };
    let mover = restore_mover(
        settings,
        &RestoreVolume {
            restore_uid: fill.restore_uid,
            owner: fill.owner,
            target_namespace: fill.target_namespace,
            record: fill.record,
            copy: &copy,
        },
        time_left,
    )
    .map_err(|err| err.to_string())?;
    let namespace = settings.namespace.as_str();
    let kube_error =
        |err: kube::Error| format!("the Kubernetes API refused the restore mover: {err}");
    // An earlier attempt may have filled and released the volume already.
    let volume = match filled_volume(client, &mover.name)
        .await
        .map_err(kube_error)?
    {
        Some(volume) => volume,
        None => {
            apply::create_if_absent(client, &mover.pvc)
                .await
                .map_err(kube_error)?;
            apply::create_if_absent(client, &mover.pod)
                .await
                .map_err(kube_error)?;
            tracing::info!(mover = %mover.name, target = fill.target_namespace, pvc = %fill.record.pvc, "volume fill started");
            let ended =
                apply::wait_for_pod(client, namespace, &mover.name, &mover.pod, time_left).await;
            if let Err(reason) = ended {
                // The staging volume goes with its claim (its class's reclaim policy).
                let _ = apply::remove(client, namespace, &mover.name).await;
                return Err(reason);
            }
            let volume = apply::bound_volume(client, namespace, &mover.name)
                .await
                .map_err(kube_error)?
                .ok_or_else(|| "the filled staging claim names no volume".to_string())?;
            keep(client, &volume, &mover.name, fill.restore_uid)
                .await
                .map_err(kube_error)?;
            volume
        }
    };
    apply::remove(client, namespace, &mover.name)
        .await
        .map_err(kube_error)?;
    let handed =
        wait_released_or_handed(client, &volume, fill.target_namespace, &fill.record.pvc).await?;
    // Once handed (and perhaps bound), the claimRef is the restored claim's: never touched again.
    if !handed {
        apply::patch_volume(
            client,
            &volume,
            &hand_over_patch(fill.target_namespace, &fill.record.pvc),
        )
        .await
        .map_err(kube_error)?;
    }
    Ok(volume)
}

/// Labels the filled volume and makes it Retain, noting the policy it had.
async fn keep(
    client: &Client,
    volume: &str,
    mover: &str,
    restore_uid: &str,
) -> Result<(), kube::Error> {
    let policy = apply::volume(client, volume)
        .await?
        .and_then(|pv| pv.spec.and_then(|s| s.persistent_volume_reclaim_policy))
        .unwrap_or_else(|| "Delete".into());
    apply::patch_volume(
        client,
        volume,
        &json!({
            "metadata": {
                "labels": {FILLED_BY_LABEL: mover, OPERATION_UID_LABEL: restore_uid},
                "annotations": {RECLAIM_POLICY_ANNOTATION: policy},
            },
            "spec": {"persistentVolumeReclaimPolicy": "Retain"},
        }),
    )
    .await
}

/// The volume an earlier attempt filled and kept, if any.
async fn filled_volume(client: &Client, mover: &str) -> Result<Option<String>, kube::Error> {
    let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!("{FILLED_BY_LABEL}={mover}"));
    Ok(volumes
        .list_metadata(&params)
        .await?
        .items
        .first()
        .map(|pv| pv.name_any()))
}

/// Waits until the volume is released by its staging claim; true when an earlier attempt
/// handed it to the restored claim already.
async fn wait_released_or_handed(
    client: &Client,
    volume: &str,
    target_namespace: &str,
    pvc: &str,
) -> Result<bool, String> {
    let started = tokio::time::Instant::now();
    loop {
        let pv = apply::volume(client, volume)
            .await
            .map_err(|err| format!("reading the filled volume {volume}: {err}"))?
            .ok_or_else(|| format!("the filled volume {volume} is gone"))?;
        let phase = pv.status.as_ref().and_then(|s| s.phase.clone());
        let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let handed = claim.as_ref().is_some_and(|c| {
            c.namespace.as_deref() == Some(target_namespace) && c.name.as_deref() == Some(pvc)
        });
        if handed {
            return Ok(true);
        }
        if phase.as_deref() == Some("Released") || phase.as_deref() == Some("Available") {
            return Ok(false);
        }
        if started.elapsed() > RELEASE_WAIT {
            return Err(format!(
                "the filled volume {volume} was not released by its staging claim within {RELEASE_WAIT:?} (phase {phase:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Gives a handed-over volume its reclaim policy back once its restored claim is bound.
pub async fn give_back_reclaim_policy(client: &Client, volume: &str) -> Result<(), kube::Error> {
    let Some(pv) = apply::volume(client, volume).await? else {
        return Ok(());
    };
    let policy = pv
        .annotations()
        .get(RECLAIM_POLICY_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| "Delete".into());
    apply::patch_volume(client, volume, &reclaim_policy_patch(&policy)).await
}

/// Removes a restore's movers and gives up the volumes it filled but never handed over (a
/// failed or deleted restore): they get their reclaim policy back, and a released volume with
/// `Delete` goes with it. Volumes bound to a restored claim are the claim's and stay.
pub async fn remove_movers(
    client: &Client,
    namespace: &str,
    restore_uid: &str,
) -> Result<(), kube::Error> {
    if restore_uid.is_empty() {
        return Ok(());
    }
    apply::remove_all(client, namespace, restore_uid).await?;
    let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!(
        "{FILLED_BY_LABEL},{OPERATION_UID_LABEL}={restore_uid}"
    ));
    for pv in volumes.list(&params).await?.items {
        let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            give_back_reclaim_policy(client, &pv.name_any()).await?;
        }
    }
    Ok(())
}
