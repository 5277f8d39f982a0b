//! `rewind database`: dump a database pod into a repository snapshot of its own, or load a dump
//! back into a pod — what a worker pod runs, so that dump bytes move between the database pod
//! and the object store on a node, never through the operator (docs/volumes.md, "Database workers").
//! Both exec into the pod with the worker's own service-account token (in-cluster config).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

use super::repo::RepositoryArgs;
use crate::archive::store::SnapshotStore;
use crate::backup::databases::{DumpError, dump_one};
use crate::database::{DatabaseTarget, Engine};
use crate::repository::Repository;
use crate::restore::databases::{ExpectedDump, load_into};

/// Dump a database pod into the repository, or load a dump back.
#[derive(clap::Args, Debug)]
pub struct DatabaseArgs {
    #[command(flatten)]
    pub repository: RepositoryArgs,
    /// Also write the JSON summary to this file (a worker pod: /dev/termination-log, so the
    /// operator reads it from the pod's status without reading logs).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
    /// How long the command in the database pod may run, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout_seconds: u64,
    #[command(subcommand)]
    pub command: DatabaseCommand,
}

/// The pod a dump or load runs in.
#[derive(clap::Args, Debug)]
pub struct PodArgs {
    /// The database pod's namespace.
    #[arg(long)]
    pub namespace: String,
    /// The database pod.
    #[arg(long)]
    pub pod: String,
    /// Its container (the pod's default when unset).
    #[arg(long)]
    pub container: Option<String>,
}

/// The database subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DatabaseCommand {
    /// Run COMMAND in the pod and store its stdout as stream --stream of a new snapshot; prints
    /// a JSON summary (snapshot, stream, bytes, sha256, storedBytes).
    Dump {
        #[command(flatten)]
        pod: PodArgs,
        /// The project the dump belongs to (its stream is projects/<project>/databases/<pod>.dump).
        #[arg(long)]
        project: String,
        /// Metadata of the snapshot, KEY=VALUE (repeatable).
        #[arg(long = "snapshot-meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// The dump command (`sh -c SCRIPT`), writing the dump to stdout.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Feed stream --stream of --snapshot to COMMAND in the pod, exactly --bytes bytes, and
    /// check its exit code, the byte count and --sha256; prints a JSON summary.
    Load {
        #[command(flatten)]
        pod: PodArgs,
        /// The snapshot holding the dump.
        #[arg(long)]
        snapshot: String,
        /// The dump's stream.
        #[arg(long)]
        stream: String,
        /// The dump's size as the backup recorded it.
        #[arg(long)]
        bytes: u64,
        /// The dump's SHA-256 as the backup recorded it, hex.
        #[arg(long)]
        sha256: String,
        /// The restore command (`sh -c SCRIPT`), reading the dump from stdin.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Runs a database subcommand.
pub async fn run(args: DatabaseArgs) -> anyhow::Result<()> {
    let key = super::repo::master_key(args.repository.key_file.as_deref())?;
    let repo = Repository::open(&args.repository.url, &key).await?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster service-account token)")?;
    let timeout = Duration::from_secs(args.timeout_seconds);
    let started = std::time::Instant::now();
    let mut summary = match args.command {
        DatabaseCommand::Dump {
            pod,
            project,
            meta,
            command,
        } => {
            let metadata = super::repo::snapshot_metadata(&meta, "--snapshot-meta")?;
            let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
            let target = DatabaseTarget {
                pod: pod.pod.clone(),
                container: pod.container.clone(),
                // Only the commands are used; the operator recorded the engine.
                engine: Engine::Custom,
                backup_command: command,
                restore_command: Vec::new(),
            };
            let mut sink = repo
                .begin(metadata)
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let dumped = dump_one(&pods, sink.as_mut(), &project, &target, "", timeout).await;
            let (record, stored) = match dumped {
                Ok(done) => done,
                Err(err) => {
                    // No snapshot without its dump; the writer lock goes now, not when stale.
                    if let Err(abandoned) = sink.abandon().await {
                        eprintln!(
                            "releasing the repository's writer lock: {}",
                            abandoned.message
                        );
                    }
                    match err {
                        DumpError::Store(err) => bail!("the repository refused the dump: {err}"),
                        err => bail!("dumping {}/{}: {err}", pod.namespace, pod.pod),
                    }
                }
            };
            let snapshot = sink
                .commit()
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            json!({
                "snapshot": snapshot,
                "stream": record.stream,
                "bytes": record.bytes,
                "sha256": record.sha256,
                "storedBytes": stored,
            })
        }
        DatabaseCommand::Load {
            pod,
            snapshot,
            stream,
            bytes,
            sha256,
            command,
        } => {
            let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
            let dump = SnapshotStore::read_stream(&repo, &snapshot, &stream)
                .await
                .map_err(|e| anyhow::anyhow!("reading {stream} of {snapshot}: {}", e.message))?;
            let expected = ExpectedDump {
                bytes,
                sha256: &sha256,
            };
            load_into(
                &pods,
                &pod.pod,
                pod.container.as_deref(),
                &command,
                &expected,
                dump,
                timeout,
            )
            .await
            .map_err(|failed| anyhow::anyhow!(failed.reason))?;
            json!({"snapshot": snapshot, "stream": stream, "bytes": bytes, "sha256": sha256})
        }
    };
    summary["seconds"] = json!(started.elapsed().as_secs_f64());
    println!("{summary}");
    if let Some(file) = &args.summary_file {
        std::fs::write(file, format!("{summary}\n"))
            .with_context(|| format!("writing the summary to {}", file.display()))?;
    }
    Ok(())
}
