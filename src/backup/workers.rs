//! The database step of a backup with workers on: each database pod is dumped by a worker pod
//! straight into a repository snapshot of its own; the operator only creates, watches and
//! removes the workers (docs/volumes.md, "Database workers"), so no dump byte passes through it.

use std::time::Duration;

use kube::{Client, Resource};
use tokio::time::Instant;

use super::databases::{DatabaseResults, Dumpable, database_pods, failure};
use crate::api::{AccountBackup, DatabaseDumpRecord};
use crate::mover::{
    DatabasePod, MoverSettings, WorkerJob, WorkerSpec, apply, dump_summary, worker,
};

/// Dumps every database pod of `project` through a worker each, one after another (between the
/// project's hooks, as the in-process dumps run), within `time_left`.
pub async fn dump_project(
    client: &Client,
    settings: &MoverSettings,
    backup: &AccountBackup,
    project: &str,
    dump_timeout: Duration,
    time_left: Duration,
) -> Result<DatabaseResults, kube::Error> {
    let started = Instant::now();
    let (dumpable, failed) = database_pods(client, project).await?;
    let mut results = DatabaseResults {
        failed,
        ..DatabaseResults::default()
    };
    let Some(owner) = backup.controller_owner_ref(&()) else {
        return Ok(results);
    };
    let uid = backup.metadata.uid.clone().unwrap_or_default();
    for Dumpable { target, workload } in dumpable {
        let left = time_left.saturating_sub(started.elapsed());
        let built = worker(
            settings,
            &WorkerSpec {
                operation_uid: &uid,
                owner: &owner,
                database: DatabasePod {
                    namespace: project,
                    pod: &target.pod,
                    container: target.container.as_deref(),
                    command: &target.backup_command,
                },
                job: WorkerJob::Dump { project },
                command_timeout: dump_timeout,
            },
            left,
        );
        let dumped = match built {
            Ok(built) => apply::run_worker(client, &settings.namespace, &built, left)
                .await
                .and_then(|summary| dump_summary(&summary)),
            Err(err) => Err(err.to_string()),
        };
        match dumped {
            Ok(dump) => {
                results.logical_bytes += dump.bytes;
                results.stored_bytes += dump.stored_bytes;
                results.records.push(DatabaseDumpRecord {
                    project: project.to_string(),
                    pod: target.pod.clone(),
                    container: target.container.clone(),
                    workload: Some(workload),
                    engine: target.engine.as_str().to_string(),
                    stream: dump.stream,
                    bytes: dump.bytes,
                    sha256: dump.sha256,
                    snapshot: Some(dump.snapshot),
                });
            }
            Err(reason) => results.failed.push(failure(
                project,
                &target.pod,
                format!("dump failed: {reason}"),
            )),
        }
    }
    Ok(results)
}
