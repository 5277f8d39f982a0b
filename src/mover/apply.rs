//! A mover's objects on the cluster (client required, idempotent): created when absent, read,
//! and removed by name or by operation — always in the operator's namespace (and the helper
//! VolumeSnapshotContents, which are cluster-scoped).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::names::selector;
use super::state::{MoverState, mover_state};
use crate::snapshot::{volume_snapshot_contents, volume_snapshots};

/// The API of an object built by the `mover` builders, from its kind.
fn api_of(client: &Client, object: &Value) -> Api<DynamicObject> {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    match object["kind"].as_str().unwrap_or_default() {
        "VolumeSnapshotContent" => Api::all_with(client.clone(), &volume_snapshot_contents()),
        "VolumeSnapshot" => Api::namespaced_with(client.clone(), namespace, &volume_snapshots()),
        "PersistentVolumeClaim" => Api::namespaced_with(
            client.clone(),
            namespace,
            &kube::api::ApiResource::erase::<PersistentVolumeClaim>(&()),
        ),
        _ => Api::namespaced_with(
            client.clone(),
            namespace,
            &kube::api::ApiResource::erase::<Pod>(&()),
        ),
    }
}

/// Creates an object unless it exists already (an earlier attempt's, same deterministic name).
pub async fn create_if_absent(client: &Client, object: &Value) -> Result<(), kube::Error> {
    let api = api_of(client, object);
    let dynamic: DynamicObject =
        serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &dynamic).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

/// The mover pod as the API server has it, if it exists.
pub async fn pod(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .get_opt(name)
        .await?
        .map(|pod| serde_json::to_value(pod).unwrap_or(Value::Null)))
}

/// The volume bound to a mover's PVC, once bound.
pub async fn bound_volume(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    Ok(claims
        .get_opt(name)
        .await?
        .and_then(|pvc| pvc.spec.and_then(|s| s.volume_name))
        .filter(|v| !v.is_empty()))
}

/// Merge-patches a PersistentVolume.
pub async fn patch_volume(client: &Client, volume: &str, patch: &Value) -> Result<(), kube::Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    volumes
        .patch(volume, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// A PersistentVolume, if it exists.
pub async fn volume(client: &Client, name: &str) -> Result<Option<PersistentVolume>, kube::Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    volumes.get_opt(name).await
}

async fn delete_quietly<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Removes one mover's pod, PVC, helper snapshot and content (each absent one is fine). The
/// physical snapshot stays: the content is Retain, and it belongs to the backup.
pub async fn remove(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    delete_quietly(&pods, name).await?;
    delete_quietly(&claims, name).await?;
    delete_quietly(&snapshots, name).await?;
    delete_quietly(&contents, name).await?;
    Ok(())
}

/// Removes every mover object of one operation, found by its labels: after the operation ends,
/// whatever attempt made them (a restarted operator's included).
pub async fn remove_all(
    client: &Client,
    namespace: &str,
    operation_uid: &str,
) -> Result<usize, kube::Error> {
    let params = ListParams::default().labels(&selector(operation_uid));
    let mut names = std::collections::BTreeSet::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    names.extend(
        pods.list_metadata(&params)
            .await?
            .items
            .iter()
            .map(|p| p.name_any()),
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    names.extend(
        claims
            .list_metadata(&params)
            .await?
            .items
            .iter()
            .map(|p| p.name_any()),
    );
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshots());
    names.extend(
        snapshots
            .list_metadata(&params)
            .await?
            .items
            .iter()
            .map(|p| p.name_any()),
    );
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &volume_snapshot_contents());
    names.extend(
        contents
            .list_metadata(&params)
            .await?
            .items
            .iter()
            .map(|p| p.name_any()),
    );
    for name in &names {
        remove(client, namespace, name).await?;
    }
    Ok(names.len())
}

/// How often a running mover's pod is looked at.
const POLL: Duration = Duration::from_secs(2);
/// How often a mover pod that vanished (deleted, node lost) is created again before its
/// volume fails.
const RECREATE_LIMIT: u32 = 2;

/// Watches a mover pod until it ends: its summary, or why it failed. A pod that vanishes is
/// created again (twice at most). The pod's own deadline ends a slow move; the bound here only
/// covers a pod that never reports.
pub async fn wait_for_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    pod_object: &Value,
    time_left: Duration,
) -> Result<String, String> {
    let started = Instant::now();
    let mut recreated = 0;
    while started.elapsed() < time_left + Duration::from_secs(60) {
        match pod(client, namespace, name).await {
            Ok(Some(pod)) => match mover_state(&pod, created_ago(&pod)) {
                MoverState::Working => {}
                MoverState::Succeeded(summary) => return Ok(summary),
                MoverState::Failed(reason) => return Err(reason),
            },
            Ok(None) if recreated < RECREATE_LIMIT => {
                recreated += 1;
                tracing::warn!(mover = %name, "the mover pod is gone; starting it again");
                create_if_absent(client, pod_object)
                    .await
                    .map_err(|err| format!("the Kubernetes API refused the mover: {err}"))?;
            }
            Ok(None) => {
                return Err(format!(
                    "the mover pod {namespace}/{name} disappeared {recreated} times (deleted, or its node lost)"
                ));
            }
            // A failed read is tried again on the next poll.
            Err(err) => tracing::warn!(mover = %name, error = %err, "reading the mover pod failed"),
        }
        tokio::time::sleep(POLL).await;
    }
    Err("the mover pod did not finish before the operation's deadline".into())
}

/// How long ago the pod was created, by this process's clock against the API server's stamp.
fn created_ago(pod: &Value) -> Duration {
    pod["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|created| Timestamp::now().duration_since(created).unsigned_abs())
        .unwrap_or_default()
}
