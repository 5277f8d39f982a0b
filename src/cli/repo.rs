//! `rewind repo`: init, put, cat, ls, check, stats and prune a repository from the shell.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;

use crate::repository::stdio::{StdinBlocks, StdoutChunks};
use crate::repository::{MasterKey, Repository, Verify};

/// Where the repository is and the key that opens it: `rewind repo` and `rewind volume` alike.
#[derive(clap::Args, Debug)]
pub struct RepositoryArgs {
    /// Repository URL: file:///path, s3://bucket/prefix (AWS_* env for endpoint, region, credentials), gs://…, az://…
    #[arg(
        long = "repo",
        env = "REWIND_REPOSITORY",
        global = true,
        default_value = "file:///var/lib/rewind"
    )]
    pub url: String,
    /// File holding the master key. Without it, REWIND_REPO_KEY holds the key itself.
    #[arg(long, env = "REWIND_REPOSITORY_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
}

/// Work with a backup repository directly.
#[derive(clap::Args, Debug)]
pub struct RepoArgs {
    #[command(flatten)]
    pub repository: RepositoryArgs,
    #[command(subcommand)]
    pub command: RepoCommand,
}

/// The repository subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RepoCommand {
    /// Create a new repository at --repo (refuses to overwrite one).
    Init,
    /// Store standard input as stream NAME of a new snapshot; prints the snapshot id.
    Put {
        /// The stream's name.
        #[arg(long, default_value = "stdin")]
        name: String,
        /// Metadata of the snapshot, KEY=VALUE (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Write stream STREAM of snapshot SNAPSHOT to standard output, verified: every chunk is
    /// authenticated and hashed against its id, and the total size is checked.
    Cat {
        /// The snapshot id (see `ls`).
        snapshot: String,
        /// The stream name.
        stream: String,
        /// Also recompute the stream's SHA-256 and compare it with the recorded one (`check`
        /// always does); a mismatch fails after the data was written.
        #[arg(long)]
        checksum: bool,
    },
    /// List snapshots with their metadata and streams.
    Ls,
    /// Read everything back and verify it; exits 1 naming each damaged snapshot and stream.
    Check,
    /// Logical and stored sizes, per snapshot and in total.
    Stats,
    /// Delete data no snapshot references (refuses while a backup writes).
    Prune,
    /// Delete one snapshot (its data goes with the next prune unless shared).
    Forget {
        /// The snapshot id.
        snapshot: String,
    },
}

/// The master key from --key-file or REWIND_REPO_KEY.
pub fn master_key(key_file: Option<&std::path::Path>) -> anyhow::Result<MasterKey> {
    if let Some(path) = key_file {
        return Ok(MasterKey::from_file(path)?);
    }
    match std::env::var("REWIND_REPO_KEY") {
        Ok(text) => Ok(MasterKey::from_text(&text)?),
        Err(_) => bail!(
            "no repository key: pass --key-file FILE or set REWIND_REPO_KEY (generate one with `openssl rand -hex 32`)"
        ),
    }
}

/// Snapshot metadata from KEY=VALUE arguments of `flag`.
pub fn snapshot_metadata(pairs: &[String], flag: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{flag} takes KEY=VALUE"))
        })
        .collect()
}

fn human(bytes: u64) -> String {
    crate::api::human_bytes(bytes)
}

/// Runs a repository subcommand.
pub async fn run(args: RepoArgs) -> anyhow::Result<()> {
    let RepositoryArgs { url, key_file } = &args.repository;
    let key = master_key(key_file.as_deref())?;
    if let RepoCommand::Init = args.command {
        Repository::init(url, &key).await?;
        println!("initialized a repository at {url}");
        return Ok(());
    }
    let repo = Repository::open(url, &key).await?;
    match args.command {
        RepoCommand::Init => {}
        RepoCommand::Put { name, meta } => {
            let mut writer = repo
                .start_snapshot(snapshot_metadata(&meta, "--meta")?)
                .await?;
            writer.start_stream(&name).await?;
            let mut stdin = StdinBlocks::start();
            while let Some(block) = stdin.next().await {
                let block = block.context("reading standard input")?;
                writer.write(&block).await?;
                stdin.recycle(block);
            }
            let summary = writer.finish_stream().await?;
            let manifest = writer.commit().await?;
            eprintln!(
                "{}: {} read, {} added",
                summary.name,
                human(summary.logical_bytes),
                human(summary.stored_bytes)
            );
            println!("{}", manifest.id);
        }
        RepoCommand::Cat {
            snapshot,
            stream,
            checksum,
        } => {
            let verify = if checksum {
                Verify::Checksum
            } else {
                Verify::Chunks
            };
            let mut chunks = repo.read_stream_chunks(&snapshot, &stream, verify).await?;
            let stdout = StdoutChunks::start();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.context("reading the stream back")?;
                if !chunk.is_empty() {
                    stdout
                        .write(chunk)
                        .await
                        .context("writing standard output")?;
                }
            }
            stdout.finish().await.context("writing standard output")?;
        }
        RepoCommand::Ls => {
            for manifest in repo.list_snapshots().await? {
                let size: u64 = manifest.streams.iter().map(|s| s.size).sum();
                let meta: Vec<String> = manifest
                    .metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{}  {}  {}  {}",
                    manifest.id,
                    manifest.created,
                    human(size),
                    meta.join(" ")
                );
                for stream in &manifest.streams {
                    println!("    {}  {}", stream.name, human(stream.size));
                }
            }
        }
        RepoCommand::Check => {
            let report = repo.check().await?;
            for problem in &report.problems {
                println!(
                    "DAMAGED snapshot {} stream {}: {}",
                    problem.snapshot, problem.stream, problem.problem
                );
            }
            println!(
                "checked {} snapshots, {} streams, {} verified",
                report.snapshots,
                report.streams,
                human(report.bytes)
            );
            if !report.problems.is_empty() {
                bail!("{} problems found", report.problems.len());
            }
        }
        RepoCommand::Stats => {
            let stats = repo.stats().await?;
            for snapshot in &stats.snapshots {
                println!(
                    "{}  logical {}  added {}",
                    snapshot.id,
                    human(snapshot.logical_bytes),
                    human(snapshot.added_bytes)
                );
            }
            println!(
                "total: logical {}  stored {}",
                human(stats.logical_bytes),
                human(stats.stored_bytes)
            );
        }
        RepoCommand::Prune => {
            let report = repo.prune().await?;
            println!(
                "deleted {} packs, freed {}; {} packs partly used are kept",
                report.packs_deleted,
                human(report.bytes_freed),
                report.packs_partly_used
            );
        }
        RepoCommand::Forget { snapshot } => {
            repo.delete_snapshot(&snapshot).await?;
            println!("forgot {snapshot}; run `rewind repo prune` to free its data");
        }
    }
    Ok(())
}
