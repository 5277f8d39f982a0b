//! A volume's file tree as one repository stream: `backup` reads a directory into a snapshot,
//! `restore` recreates it. What a mover pod runs (`rewind volume …`); no Kubernetes here.
//!
//! `tree` is the record format and its rules (pure), `decode` reads it back checking them,
//! `walk` (with `source`) reads a tree in parallel into it, `extract` writes one back, both
//! through open directory descriptors (`fs`); this file only joins them to the repository's
//! writer and reader. docs/volumes.md says what a restore recreates and what it refuses.

pub mod decode;
pub mod extract;
mod fs;
mod inflight;
mod source;
pub mod tree;
pub mod walk;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;

use crate::repository::{Chunking, Compression, RepoError, Repository, Verify};

pub use extract::{ExtractCounts, ExtractError, ExtractOptions};
pub use walk::{TreeCounts, WalkError, WalkOptions};

/// The stream name `rewind volume backup` uses unless told otherwise.
pub const DEFAULT_STREAM: &str = "volume.tree";

/// Why a volume backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The repository failed.
    #[error(transparent)]
    Repository(#[from] RepoError),
    /// Reading the source tree failed.
    #[error("reading the source: {0}")]
    Walk(#[from] WalkError),
    /// Writing the target tree failed.
    #[error("restoring: {0}")]
    Extract(#[from] ExtractError),
    /// A worker thread went away.
    #[error("{0}")]
    Worker(String),
}

impl VolumeError {
    /// A short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Repository(err) => err.category(),
            Self::Walk(err) => err.category(),
            Self::Extract(err) => err.category(),
            Self::Worker(_) => "worker",
        }
    }
}

/// What `backup` wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    /// The new snapshot.
    pub snapshot: String,
    /// The tree stream's name in it.
    pub stream: String,
    /// What the tree holds.
    #[serde(flatten)]
    pub counts: TreeCounts,
    /// The stream's length.
    pub stream_bytes: u64,
    /// What the stream added to the repository (new chunks, compressed and sealed).
    pub stored_bytes: u64,
}

/// Reads the tree under `source` into stream `stream` of a new snapshot with `metadata`
/// (`options`: reader threads, and whether a writable source is accepted).
pub async fn backup(
    repo: &Repository,
    source: &Path,
    stream: &str,
    metadata: BTreeMap<String, String>,
    options: WalkOptions,
) -> Result<BackupSummary, VolumeError> {
    let mut writer = repo.start_snapshot(metadata).await?;
    writer.start_stream(stream).await?;
    writer.set_compression(Compression::Better);
    writer.set_chunking(Chunking::Large);
    let (blocks_tx, mut blocks) = tokio::sync::mpsc::channel::<walk::Block>(4);
    let (spare_tx, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(6);
    let source: PathBuf = source.to_path_buf();
    let encoder = std::thread::spawn(move || {
        walk::encode_tree(&source, options, |block| {
            blocks_tx
                .blocking_send(block)
                .map_err(|_| WalkError::Stopped("the repository writer failed".into()))?;
            Ok(spare.try_recv().ok())
        })
    });
    while let Some(block) = blocks.recv().await {
        let mut start = 0;
        for cut in block.cuts {
            writer.write(&block.bytes[start..cut]).await?;
            writer.cut();
            start = cut;
        }
        writer.write(&block.bytes[start..]).await?;
        let _ = spare_tx.try_send(block.bytes);
    }
    let counts = tokio::task::spawn_blocking(move || encoder.join())
        .await
        .map_err(|e| VolumeError::Worker(e.to_string()))?
        .map_err(|_| VolumeError::Worker("the tree encoder panicked".into()))??;
    let summary = writer.finish_stream().await?;
    let manifest = writer.commit().await?;
    Ok(BackupSummary {
        snapshot: manifest.id,
        stream: summary.name,
        counts,
        stream_bytes: summary.logical_bytes,
        stored_bytes: summary.stored_bytes,
    })
}

/// Verified chunks of a stream as a blocking `Read`, for the extractor's thread.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Recreates stream `stream` of snapshot `snapshot` under `target`.
pub async fn restore(
    repo: &Repository,
    snapshot: &str,
    stream: &str,
    target: &Path,
    options: ExtractOptions,
) -> Result<ExtractCounts, VolumeError> {
    let mut chunks = repo
        .read_stream_chunks(snapshot, stream, Verify::Chunks)
        .await?;
    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel(16);
    let target = target.to_path_buf();
    let extractor = tokio::task::spawn_blocking(move || {
        extract::extract(
            ChunkReader {
                chunks: chunks_rx,
                current: Bytes::new(),
            },
            &target,
            options,
        )
    });
    while let Some(chunk) = chunks.next().await {
        if chunks_tx.send(chunk).await.is_err() {
            break; // the extractor stopped; its error says why
        }
    }
    drop(chunks_tx);
    Ok(extractor
        .await
        .map_err(|e| VolumeError::Worker(e.to_string()))??)
}
