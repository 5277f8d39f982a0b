//! The copy step of a backup: every project's manifests, listed page by page into the repository.
//!
//! Each project becomes one stream `projects/<namespace>/manifests.jsonl`: one
//! sanitized object per line. Lists are paginated, so memory does not grow
//! with the number of objects.

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::Timestamp;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{info, warn};

use super::decide::{BackupOutcome, ObservedProject};
use super::error::BackupError;
use super::progress::ProgressReporter;
use super::store::{SnapshotStore, StoreError};
use crate::api::{AccountBackup, ItemOutcome, ProjectSummary};
use crate::manifest::{BackedUpType, object_skip_reason, sanitize_for_backup};

/// Objects per list page.
const PAGE_SIZE: u32 = 500;
/// Bytes buffered before a write into the repository stream.
const WRITE_BUFFER: usize = 256 * 1024;

/// The stream name of a project's manifests.
pub fn manifest_stream(project: &str) -> String {
    format!("projects/{project}/manifests.jsonl")
}

/// The metadata recorded with the repository snapshot.
pub fn snapshot_metadata(backup: &AccountBackup, now: Timestamp) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    metadata.insert("account".into(), backup.spec.account.clone());
    metadata.insert(
        "backup".into(),
        backup.metadata.name.clone().unwrap_or_default(),
    );
    if let Some(uid) = &backup.metadata.uid {
        metadata.insert("backup-uid".into(), uid.clone());
    }
    if let Some(notes) = &backup.spec.notes {
        metadata.insert("notes".into(), notes.clone());
    }
    if let Some(name) = &backup.spec.display_name {
        metadata.insert("display-name".into(), name.clone());
    }
    if let Some(requested_by) = backup.status.as_ref().and_then(|s| s.requested_by.clone()) {
        metadata.insert("requested-by".into(), requested_by);
    }
    metadata.insert("ttl".into(), backup.spec.ttl.clone());
    metadata.insert("started-at".into(), now.to_string());
    metadata
}

fn store_error(err: StoreError) -> BackupError {
    BackupError::Repository(err.message)
}

/// Copies every project's manifests into one new repository snapshot.
pub async fn copy_manifests(
    client: &Client,
    store: &dyn SnapshotStore,
    backup: &AccountBackup,
    projects: &[ObservedProject],
    types: &[BackedUpType],
    progress: &mut ProgressReporter,
) -> Result<BackupOutcome, BackupError> {
    let mut sink = store
        .begin(snapshot_metadata(backup, Timestamp::now()))
        .await
        .map_err(store_error)?;
    let mut outcome = BackupOutcome::default();
    for project in projects.iter().filter(|p| !p.terminating) {
        let stream = manifest_stream(&project.name);
        sink.start_stream(&stream).await.map_err(store_error)?;
        let mut summary = ProjectSummary {
            name: project.name.clone(),
            stream: Some(stream),
            ..ProjectSummary::default()
        };
        let mut buffer = Vec::with_capacity(WRITE_BUFFER);
        for backed_up in types {
            let resource = &backed_up.resource;
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &project.name, resource);
            let mut continue_token: Option<String> = None;
            loop {
                let mut params = ListParams::default().limit(PAGE_SIZE);
                if let Some(token) = &continue_token {
                    params = params.continue_token(token);
                }
                let page = match api.list(&params).await {
                    Ok(page) => page,
                    Err(err) => {
                        warn!(project = %project.name, kind = %resource.kind, error = %err, "listing failed");
                        summary.failed += 1;
                        outcome.failed.push(ItemOutcome {
                            project: project.name.clone(),
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
                    serde_json::to_writer(&mut buffer, &object)?;
                    buffer.push(b'\n');
                    summary.resources += 1;
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
        progress.project_done(&summary).await;
        info!(project = %summary.name, resources = summary.resources, bytes = summary.bytes, "project backed up");
        outcome.projects.push(summary);
    }
    outcome.snapshot_id = sink.commit().await.map_err(store_error)?;
    Ok(outcome)
}
