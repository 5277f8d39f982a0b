//! The copy step of a backup: manifests listed page by page into the repository, then
//! consistency hooks around volume snapshots and database dumps.
//!
//! Each project becomes one stream `projects/<namespace>/manifests.jsonl`: one
//! sanitized object per line. Lists are paginated, so memory does not grow
//! with the number of objects.

use bytes::Bytes;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{info, warn};

use super::decide::ObservedProject;
use super::error::BackupError;
use super::hooks::{self, HookStage};
use super::progress::ProgressReporter;
use super::{databases, volumes};
use crate::api::{AccountBackup, ItemOutcome, ProjectSummary};
use crate::archive::layout::{
    BackupOutcome, OUTCOME_STREAM, encode_outcome, manifest_stream, snapshot_metadata,
};
use crate::archive::store::{SnapshotSink, SnapshotStore, StoreError};
use crate::manifest::{BackedUpType, is_token, object_skip_reason, sanitize_for_backup};

/// Objects per list page.
const PAGE_SIZE: u32 = 500;
/// Bytes buffered before a write into the repository stream.
const WRITE_BUFFER: usize = 256 * 1024;

fn store_error(err: StoreError) -> BackupError {
    BackupError::Repository(err.message)
}

/// Limits and switches of the copy step.
pub struct CopySettings<'a> {
    /// Namespaced types to list.
    pub types: &'a [BackedUpType],
    /// VolumeSnapshotClasses of the cluster.
    pub classes: &'a [crate::snapshot::ClassInfo],
    /// Step time limits.
    pub timeouts: crate::context::StepTimeouts,
    /// Mover pods that copy volumes into the repository and database workers that dump into
    /// it, or why there are none (then dumps stream through the operator).
    pub movers: &'a crate::mover::Movers,
    /// What is left of the operation timeout when the copy starts.
    pub time_left: std::time::Duration,
}

/// Copies every project — manifests, then hooks around volume snapshots and database dumps —
/// into one new repository snapshot.
pub async fn copy_account(
    client: &Client,
    store: &dyn SnapshotStore,
    backup: &AccountBackup,
    projects: &[ObservedProject],
    settings: &CopySettings<'_>,
    progress: &mut ProgressReporter,
) -> Result<BackupOutcome, BackupError> {
    let started = tokio::time::Instant::now();
    let mut sink = store
        .begin(snapshot_metadata(backup, Timestamp::now()))
        .await
        .map_err(store_error)?;
    let mut outcome = BackupOutcome::default();
    for project in projects.iter().filter(|p| !p.terminating) {
        let mut summary = copy_manifests(
            client,
            sink.as_mut(),
            &project.name,
            settings.types,
            backup.spec.token_selector.as_ref(),
            &mut outcome,
            progress,
        )
        .await?;
        summary.pod_security = project.pod_security.clone();
        let pre = hooks::run_hooks(
            client,
            &project.name,
            HookStage::Pre,
            settings.timeouts.hook,
        )
        .await?;
        summary.failed += pre.failed.len() as u64;
        outcome.warnings.extend(pre.warnings.iter().cloned());
        if pre.blocks_snapshots() {
            outcome.failed.extend(pre.failed.iter().cloned());
            outcome.failed.push(ItemOutcome {
                project: project.name.clone(),
                kind: "Project".into(),
                name: project.name.clone(),
                reason: "volumes and databases not backed up: a pre-backup hook failed (see the Hook item)".into(),
            });
        } else {
            let volumes = volumes::snapshot_project(
                client,
                backup,
                &project.name,
                settings.classes,
                settings.timeouts.snapshot,
            )
            .await?;
            summary.volumes = volumes.records.len() as u64;
            summary.failed += volumes.failed.len() as u64;
            outcome.items += (volumes.records.len() + volumes.failed.len()) as u64;
            outcome.volume_snapshots.extend(volumes.records);
            outcome.failed.extend(volumes.failed);
            outcome.excluded.extend(volumes.excluded);
            if backup.spec.databases.enabled {
                let databases = match settings.movers {
                    // Workers on the nodes move the dumps; the operator moves no byte of them.
                    crate::mover::Movers::On {
                        settings: movers, ..
                    } => {
                        let left = settings.time_left.saturating_sub(started.elapsed());
                        super::workers::dump_project(
                            client,
                            movers,
                            backup,
                            &project.name,
                            settings.timeouts.dump,
                            left,
                        )
                        .await?
                    }
                    crate::mover::Movers::Off(_) => {
                        databases::dump_project(
                            client,
                            sink.as_mut(),
                            &project.name,
                            settings.timeouts.dump,
                        )
                        .await?
                    }
                };
                summary.databases = databases.records.len() as u64;
                summary.failed += databases.failed.len() as u64;
                summary.bytes += databases.logical_bytes;
                outcome.items += (databases.records.len() + databases.failed.len()) as u64;
                outcome.logical_bytes += databases.logical_bytes;
                outcome.stored_bytes += databases.stored_bytes;
                outcome.database_dumps.extend(databases.records);
                outcome.failed.extend(databases.failed);
            }
        }
        // Post hooks run even when the snapshot step failed.
        let post = hooks::run_hooks(
            client,
            &project.name,
            HookStage::Post,
            settings.timeouts.hook,
        )
        .await?;
        summary.failed += post.failed.len() as u64;
        outcome.failed.extend(post.failed);
        outcome.warnings.extend(post.warnings);
        progress.project_done(&summary).await;
        info!(project = %summary.name, resources = summary.resources, volumes = summary.volumes, databases = summary.databases, "project backed up");
        outcome.projects.push(summary);
    }
    if backup.spec.volumes.copy_to_repository {
        let left = settings.time_left.saturating_sub(started.elapsed());
        copy_volumes(client, backup, settings.movers, left, &mut outcome).await;
    }
    // What this backup produced goes into the snapshot too, so the object can be rebuilt from
    // the repository if it is ever lost (see `sync`).
    sink.start_stream(OUTCOME_STREAM)
        .await
        .map_err(store_error)?;
    sink.write(Bytes::from(encode_outcome(&outcome, Timestamp::now())?))
        .await
        .map_err(store_error)?;
    sink.finish_stream().await.map_err(store_error)?;
    outcome.snapshot_id = sink.commit().await.map_err(store_error)?;
    Ok(outcome)
}

/// Copies the snapshotted volumes' files into the repository through mover pods, or says in a
/// warning why they stay snapshots only.
async fn copy_volumes(
    client: &Client,
    backup: &AccountBackup,
    movers: &crate::mover::Movers,
    time_left: std::time::Duration,
    outcome: &mut BackupOutcome,
) {
    if !outcome
        .volume_snapshots
        .iter()
        .any(|v| v.snapshot_handle.is_some())
    {
        return;
    }
    let (settings, parallel) = match movers {
        crate::mover::Movers::On { settings, parallel } => (settings, *parallel),
        crate::mover::Movers::Off(why) => {
            outcome.warnings.push(format!(
                "volumes are kept as CSI snapshots only, not copied into the repository: {why}; such a backup is lost with the storage system"
            ));
            return;
        }
    };
    let failed = super::movers::copy_volumes(
        client,
        settings,
        parallel,
        backup,
        &mut outcome.volume_snapshots,
        time_left,
    )
    .await;
    for volume in &outcome.volume_snapshots {
        let Some(copy) = &volume.repository_copy else {
            continue;
        };
        outcome.logical_bytes += copy.bytes;
        outcome.stored_bytes += copy.stored_bytes;
        if let Some(project) = outcome
            .projects
            .iter_mut()
            .find(|p| p.name == volume.project)
        {
            project.bytes += copy.bytes;
        }
    }
    for item in &failed {
        if let Some(project) = outcome.projects.iter_mut().find(|p| p.name == item.project) {
            project.failed += 1;
        }
    }
    outcome.failed.extend(failed);
}

/// `Kind` of the core group, `Kind.group` of the others: how a project's objects are counted.
fn kind_key(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// Streams one project's manifests into `projects/<project>/manifests.jsonl`, counting them per
/// kind and naming its resource tokens (what a restore will regenerate).
async fn copy_manifests(
    client: &Client,
    sink: &mut dyn SnapshotSink,
    project: &str,
    types: &[BackedUpType],
    token_selector: Option<&LabelSelector>,
    outcome: &mut BackupOutcome,
    progress: &mut ProgressReporter,
) -> Result<ProjectSummary, BackupError> {
    let stream = manifest_stream(project);
    sink.start_stream(&stream).await.map_err(store_error)?;
    let mut summary = ProjectSummary {
        name: project.to_string(),
        stream: Some(stream),
        ..ProjectSummary::default()
    };
    let mut buffer = Vec::with_capacity(WRITE_BUFFER);
    for backed_up in types {
        let resource = &backed_up.resource;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), project, resource);
        let mut continue_token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE_SIZE);
            if let Some(token) = &continue_token {
                params = params.continue_token(token);
            }
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(err) => {
                    warn!(project, kind = %resource.kind, error = %err, "listing failed");
                    summary.failed += 1;
                    outcome.failed.push(ItemOutcome {
                        project: project.to_string(),
                        kind: resource.kind.clone(),
                        name: "*".into(),
                        reason: format!(
                            "listing {} failed: {err}; check the operator's RBAC and the API service, then take a new backup",
                            resource.plural
                        ),
                    });
                    break;
                }
            };
            for item in page.items {
                let mut object = serde_json::to_value(&item)?;
                if object_skip_reason(&resource.group, &resource.kind, &object).is_some() {
                    continue;
                }
                sanitize_for_backup(&resource.group, &resource.kind, &mut object);
                if let Some(map) = object.as_object_mut() {
                    map.insert(
                        "apiVersion".into(),
                        Value::String(resource.api_version.clone()),
                    );
                    map.insert("kind".into(), Value::String(resource.kind.clone()));
                }
                if is_token(&object, token_selector) {
                    summary.count_token(object["metadata"]["name"].as_str().unwrap_or_default());
                }
                serde_json::to_writer(&mut buffer, &object)?;
                buffer.push(b'\n');
                summary.resources += 1;
                summary.count_object(&kind_key(&resource.group, &resource.kind));
                if buffer.len() >= WRITE_BUFFER {
                    summary.bytes += buffer.len() as u64;
                    let full = std::mem::replace(&mut buffer, Vec::with_capacity(WRITE_BUFFER));
                    sink.write(Bytes::from(full)).await.map_err(store_error)?;
                }
            }
            progress
                .add_items(summary.resources, summary.bytes + buffer.len() as u64)
                .await;
            continue_token = page.metadata.continue_.filter(|t| !t.is_empty());
            if continue_token.is_none() {
                break;
            }
        }
    }
    if !buffer.is_empty() {
        summary.bytes += buffer.len() as u64;
        sink.write(Bytes::from(buffer)).await.map_err(store_error)?;
    }
    let totals = sink.finish_stream().await.map_err(store_error)?;
    outcome.logical_bytes += totals.logical_bytes;
    outcome.stored_bytes += totals.stored_bytes;
    outcome.items += summary.resources + summary.failed;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_the_core_group_count_by_kind_and_the_others_by_kind_and_group() {
        assert_eq!(kind_key("", "ConfigMap"), "ConfigMap");
        assert_eq!(kind_key("apps", "Deployment"), "Deployment.apps");
    }
}
