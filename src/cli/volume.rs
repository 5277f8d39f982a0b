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
    },
    /// Recreate a tree stream's files under --target (created when missing; existing
    /// directories are reused, nothing else is overwritten); prints a JSON summary.
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
        } => {
            let metadata = super::repo::snapshot_metadata(&meta, "--snapshot-meta")?;
            let summary = volume::backup(&repo, &source, &stream, metadata, readers)
                .await
                .with_context(|| format!("backing up {}", source.display()))?;
            let mut json = serde_json::to_value(&summary)?;
            json["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
            println!("{json}");
        }
        VolumeCommand::Restore {
            snapshot,
            stream,
            target,
        } => {
            let counts = volume::restore(
                &repo,
                &snapshot,
                &stream,
                &target,
                ExtractOptions::for_this_process(),
            )
            .await
            .with_context(|| {
                format!("restoring {stream} of {snapshot} into {}", target.display())
            })?;
            let mut json = serde_json::to_value(counts)?;
            json["snapshot"] = serde_json::json!(snapshot);
            json["stream"] = serde_json::json!(stream);
            json["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
            println!("{json}");
        }
    }
    Ok(())
}
