//! The database step of a restore with workers on: each dump is loaded into its restored
//! database pod by a worker pod that reads it from the repository and feeds it over exec,
//! checking exit code, size and checksum; the operator moves no byte of it
//! (docs/volumes.md, "Database workers").

use std::time::Duration;

use kube::{Client, Resource};

use crate::api::{DatabaseDumpRecord, ProjectRestore};
use crate::mover::{DatabasePod, MoverSettings, WorkerJob, WorkerSpec, apply, worker};

/// One dump to load.
pub struct Load<'a> {
    /// The restore.
    pub restore: &'a ProjectRestore,
    /// The namespace the project is restored into.
    pub target_namespace: &'a str,
    /// The dump as the backup recorded it.
    pub record: &'a DatabaseDumpRecord,
    /// The backup's own snapshot: where a dump without a snapshot of its own lives.
    pub backup_snapshot: &'a str,
}

/// Waits for the restored database pod of the dump's workload, then loads the dump into it
/// through a worker; the pod's name, or why the item failed.
pub async fn load_dump(
    client: &Client,
    settings: &MoverSettings,
    load: &Load<'_>,
    dump_timeout: Duration,
    time_left: Duration,
) -> Result<String, String> {
    let started = tokio::time::Instant::now();
    let record = load.record;
    let workload = record
        .workload
        .clone()
        .unwrap_or_else(|| format!("Pod/{}", record.pod));
    let (pod, container, command) = super::databases::wait_for_pod(
        client,
        load.target_namespace,
        &workload,
        dump_timeout.min(time_left),
    )
    .await?;
    let owner = load
        .restore
        .controller_owner_ref(&())
        .ok_or_else(|| "the restore has no UID yet".to_string())?;
    let uid = load.restore.metadata.uid.clone().unwrap_or_default();
    let left = time_left.saturating_sub(started.elapsed());
    let built = worker(
        settings,
        &WorkerSpec {
            operation_uid: &uid,
            owner: &owner,
            database: DatabasePod {
                namespace: load.target_namespace,
                pod: &pod,
                container: container.as_deref(),
                command: &command,
            },
            job: WorkerJob::Load {
                project: &record.project,
                snapshot: super::decide::dump_snapshot(record, load.backup_snapshot),
                stream: &record.stream,
                bytes: record.bytes,
                sha256: &record.sha256,
            },
            command_timeout: dump_timeout,
        },
        left,
    )
    .map_err(|err| err.to_string())?;
    apply::run_worker(client, &settings.namespace, &built, left).await?;
    Ok(pod)
}
