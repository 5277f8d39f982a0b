//! A mover's objects on the cluster (client required, idempotent): created when absent, read,
//! and removed by name or by operation — always in the operator's namespace (and the helper
//! VolumeSnapshotContents, which are cluster-scoped).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
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
        "Role" => Api::namespaced_with(
            client.clone(),
            namespace,
            &kube::api::ApiResource::erase::<Role>(&()),
        ),
        "RoleBinding" => Api::namespaced_with(
            client.clone(),
            namespace,
            &kube::api::ApiResource::erase::<RoleBinding>(&()),
        ),
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
    crate::snapshot::delete_content(client, &contents, name).await?;
    Ok(())
}

/// Removes one database worker: its pod in the operator's namespace, its RoleBinding and Role
/// in the database's namespace (each absent one is fine).
pub async fn remove_worker(
    client: &Client,
    namespace: &str,
    database_namespace: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), database_namespace);
    let roles: Api<Role> = Api::namespaced(client.clone(), database_namespace);
    delete_quietly(&pods, name).await?;
    delete_quietly(&bindings, name).await?;
    delete_quietly(&roles, name).await?;
    Ok(())
}

/// Removes the Roles and RoleBindings of an operation's database workers, in whatever
/// namespace they are. Found by label, but removed only when the operation is their controller
/// owner: those namespaces are tenants', and a tenant can put our labels on its own objects.
async fn remove_worker_access(client: &Client, operation_uid: &str) -> Result<usize, kube::Error> {
    let params = ListParams::default().labels(&selector(operation_uid));
    let ours = |meta: &kube::api::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|owner| owner.controller == Some(true) && owner.uid == operation_uid)
    };
    let mut removed = 0;
    let bindings: Api<RoleBinding> = Api::all(client.clone());
    for binding in bindings.list_metadata(&params).await?.items {
        if ours(&binding.metadata) {
            let namespace = binding.metadata.namespace.clone().unwrap_or_default();
            let api: Api<RoleBinding> = Api::namespaced(client.clone(), &namespace);
            delete_quietly(&api, &binding.name_any()).await?;
            removed += 1;
        }
    }
    let roles: Api<Role> = Api::all(client.clone());
    for role in roles.list_metadata(&params).await?.items {
        if ours(&role.metadata) {
            let namespace = role.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Role> = Api::namespaced(client.clone(), &namespace);
            delete_quietly(&api, &role.name_any()).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes every mover and worker object of one operation, found by its labels: after the
/// operation ends, whatever attempt made them (a restarted operator's included).
pub async fn remove_all(
    client: &Client,
    namespace: &str,
    operation_uid: &str,
) -> Result<usize, kube::Error> {
    let access = remove_worker_access(client, operation_uid).await?;
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
    Ok(names.len() + access)
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

/// Runs one database worker to its end and removes it, whatever happened: its Role and
/// RoleBinding first (the pod's token must find its access in place), then its pod. Returns the
/// worker's summary, or why it failed in the words of the item.
pub async fn run_worker(
    client: &Client,
    namespace: &str,
    worker: &super::worker::Worker,
    time_left: Duration,
) -> Result<String, String> {
    let started = async {
        for object in [&worker.role, &worker.binding, &worker.pod] {
            create_if_absent(client, object)
                .await
                .map_err(|err| format!("the Kubernetes API refused the database worker: {err}"))?;
        }
        tracing::info!(worker = %worker.name, namespace = %worker.database_namespace, "database worker started");
        wait_for_pod(client, namespace, &worker.name, &worker.pod, time_left)
            .await
            .map_err(|reason| super::worker::worker_failure(&reason))
    }
    .await;
    if let Err(err) =
        remove_worker(client, namespace, &worker.database_namespace, &worker.name).await
    {
        tracing::warn!(worker = %worker.name, error = %err, "removing a database worker failed; it is removed when the operation ends");
    }
    started
}
