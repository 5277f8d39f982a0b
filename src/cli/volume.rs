//! `rewind volume`: back a directory tree up into the repository and restore it — what a mover
//! pod runs against a volume made from a snapshot.

use std::path::PathBuf;

use anyhow::Context;

use super::repo::RepositoryArgs;
use crate::repository::Repository;
use crate::volume::{self, ExtractOptions};

/// Copy a volume's files into the repository, or back.
#[derive(clap::Args, Debug)]
pub struct VolumeArgs {
    #[command(flatten)]
    pub repository: RepositoryArgs,
    /// Also write the JSON summary to this file (a mover pod: /dev/termination-log, so the
    /// operator reads it from the pod's status without reading logs).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: VolumeCommand,
}

/// The volume subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum VolumeCommand {
    /// Store the tree under --source as a tree stream of a new snapshot; prints a JSON summary.
    Backup {
        /// The directory to back up (its own mode, owner and time are recorded too).
        #[arg(long)]
        source: PathBuf,
        /// The stream's name in the snapshot.
        #[arg(long, default_value = volume::DEFAULT_STREAM)]
        stream: String,
        /// Metadata of the snapshot, KEY=VALUE (repeatable).
        #[arg(long = "snapshot-meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Threads that stat and read files in parallel.
        #[arg(long, default_value_t = 4)]
        readers: usize,
        /// Accept a source that is not a read-only mount: files may change while they are
        /// read and the copy may be inconsistent (without it such a source is refused).
        #[arg(long)]
        live: bool,
    },
    /// Recreate a tree stream's files in --target (created when missing; it must be empty
    /// but for lost+found); prints a JSON summary. See docs/volumes.md for what is left out.
    Restore {
        /// The snapshot id (see `rewind repo ls`).
        #[arg(long)]
        snapshot: String,
        /// The tree stream's name.
        #[arg(long, default_value = volume::DEFAULT_STREAM)]
        stream: String,
        /// Where to recreate the tree.
        #[arg(long)]
        target: PathBuf,
        /// Create character and block devices (left out and counted by default).
        #[arg(long)]
        devices: bool,
        /// Restore file capabilities (security.capability; left out by default).
        #[arg(long)]
        capabilities: bool,
    },
}

/// Runs a volume subcommand.
pub async fn run(args: VolumeArgs) -> anyhow::Result<()> {
    let key = super::repo::master_key(args.repository.key_file.as_deref())?;
    let repo = Repository::open(&args.repository.url, &key).await?;
    let started = std::time::Instant::now();
    match args.command {
        VolumeCommand::Backup {
            source,
            stream,
            meta,
            readers,
            live,
        } => {
            let metadata = super::repo::snapshot_metadata(&meta, "--snapshot-meta")?;
            let summary = volume::backup(
                &repo,
                &source,
                &stream,
                metadata,
                volume::WalkOptions { readers, live },
            )
            .await
            .with_context(|| format!("backing up {}", source.display()))?;
            let mut json = serde_json::to_value(&summary)?;
            json["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
            report(&json, args.summary_file.as_deref())?;
        }
        VolumeCommand::Restore {
            snapshot,
            stream,
            target,
            devices,
            capabilities,
        } => {
            let options = ExtractOptions {
                devices,
                capabilities,
                ..ExtractOptions::for_this_process()
            };
            let counts = volume::restore(&repo, &snapshot, &stream, &target, options)
                .await
                .with_context(|| {
                    format!("restoring {stream} of {snapshot} into {}", target.display())
                })?;
            let mut json = serde_json::to_value(counts)?;
            json["snapshot"] = serde_json::json!(snapshot);
            json["stream"] = serde_json::json!(stream);
            json["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
            report(&json, args.summary_file.as_deref())?;
        }
    }
    Ok(())
}

/// Prints the summary, and writes it to `file` when given.
fn report(json: &serde_json::Value, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!("{json}");
    if let Some(file) = file {
        std::fs::write(file, format!("{json}\n"))
            .with_context(|| format!("writing the summary to {}", file.display()))?;
    }
    Ok(())
}
