//! Database step of a backup: each database pod's dump streamed over exec into the repository.

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::{DatabaseDumpRecord, ItemOutcome};
use crate::archive::layout::dump_stream;
use crate::archive::store::{SnapshotSink, StoreError};
use crate::database::{DatabaseTarget, controller_owner, database_target, workload_of};
use crate::exec::ExecError;

/// What the database step of one project gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseResults {
    /// Dumps stored, each with bytes and checksum.
    pub records: Vec<DatabaseDumpRecord>,
    /// Dumps that failed, with why.
    pub failed: Vec<ItemOutcome>,
    /// Bytes read from dumps.
    pub logical_bytes: u64,
    /// Bytes the repository added for them.
    pub stored_bytes: u64,
}

/// The failed item of one database pod.
pub fn failure(project: &str, pod: &str, reason: String) -> ItemOutcome {
    ItemOutcome {
        project: project.to_string(),
        kind: "Database".into(),
        name: pod.to_string(),
        reason,
    }
}

/// Why one dump did not count.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The command in the pod failed, or its stream broke.
    #[error("{0}")]
    Exec(#[from] ExecError),
    /// The repository refused a write.
    #[error("the repository refused the dump: {0}")]
    Store(#[from] StoreError),
    /// The repository stored another byte count than the command wrote.
    #[error("the dump's byte count does not match what was stored ({read} read, {stored} stored)")]
    Mismatch {
        /// Bytes the command wrote.
        read: u64,
        /// Bytes the stream holds.
        stored: u64,
    },
}

/// Streams one pod's dump into stream `dump_stream(project, pod)` of `sink`; the record (its
/// `snapshot` unset) and the bytes the repository added. What a worker pod runs too
/// (`rewind database dump`), into a snapshot of its own.
pub async fn dump_one(
    pods: &Api<Pod>,
    sink: &mut dyn SnapshotSink,
    project: &str,
    target: &DatabaseTarget,
    target_workload: &str,
    timeout: Duration,
) -> Result<(DatabaseDumpRecord, u64), DumpError> {
    let stream = dump_stream(project, &target.pod);
    sink.start_stream(&stream).await?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    let exec = crate::exec::run(
        pods,
        &target.pod,
        target.container.as_deref(),
        &target.backup_command,
        None,
        timeout,
        Some(sender),
    );
    let drain = async {
        while let Some(chunk) = receiver.recv().await {
            sink.write(chunk).await?;
        }
        Ok::<(), StoreError>(())
    };
    let (executed, drained) = tokio::join!(exec, drain);
    let output = match (executed, drained) {
        (Ok(output), Ok(())) => output,
        (Err(err), _) => {
            sink.abort_stream().await?;
            return Err(err.into());
        }
        (Ok(_), Err(err)) => {
            sink.abort_stream().await?;
            return Err(err.into());
        }
    };
    let totals = sink.finish_stream().await?;
    if totals.logical_bytes != output.stdout_bytes {
        return Err(DumpError::Mismatch {
            read: output.stdout_bytes,
            stored: totals.logical_bytes,
        });
    }
    Ok((
        DatabaseDumpRecord {
            project: project.to_string(),
            pod: target.pod.clone(),
            container: target.container.clone(),
            workload: Some(target_workload.to_string()),
            engine: target.engine.as_str().to_string(),
            stream,
            bytes: output.stdout_bytes,
            sha256: output.stdout_sha256,
            snapshot: None,
        },
        totals.stored_bytes,
    ))
}

/// One database pod of a project to dump: what to run, and the workload it belongs to.
pub struct Dumpable {
    /// The pod and its commands.
    pub target: DatabaseTarget,
    /// `Deployment/db`, ...: where a restore loads the dump.
    pub workload: String,
}

/// The database pods of a project (sorted by name), and the failures of those that cannot be
/// dumped (bad annotations, not Running).
pub async fn database_pods(
    client: &Client,
    project: &str,
) -> Result<(Vec<Dumpable>, Vec<ItemOutcome>), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), project);
    let mut dumpable = Vec::new();
    let mut failed = Vec::new();
    let mut listed = pods.list(&ListParams::default()).await?.items;
    listed.sort_by_key(|p| p.name_any());
    for pod in listed {
        let name = pod.name_any();
        let target = match database_target(&name, pod.annotations()) {
            Ok(Some(target)) => target,
            Ok(None) => continue,
            Err(err) => {
                failed.push(failure(project, &name, err.to_string()));
                continue;
            }
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase != "Running" {
            failed.push(failure(project, &name, format!("the pod is {phase}, not Running: nothing to dump from; take a new backup once it runs")));
            continue;
        }
        let workload = workload_of(&name, controller_owner(&pod));
        dumpable.push(Dumpable { target, workload });
    }
    Ok((dumpable, failed))
}

/// Dumps every database pod of a project, one after another; a failure affects only its pod.
pub async fn dump_project(
    client: &Client,
    sink: &mut dyn SnapshotSink,
    project: &str,
    timeout: Duration,
) -> Result<DatabaseResults, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), project);
    let (dumpable, failed) = database_pods(client, project).await?;
    let mut results = DatabaseResults {
        failed,
        ..DatabaseResults::default()
    };
    for Dumpable { target, workload } in dumpable {
        match dump_one(&pods, sink, project, &target, &workload, timeout).await {
            Ok((record, stored)) => {
                results.logical_bytes += record.bytes;
                results.stored_bytes += stored;
                results.records.push(record);
            }
            Err(err) => {
                results
                    .failed
                    .push(failure(project, &target.pod, format!("dump failed: {err}")))
            }
        }
    }
    Ok(results)
}
