//! The seam between the controllers and the repository: what a backup writes, a restore reads and a deletion releases.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

/// Totals of one finished stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamTotals {
    /// Bytes written into the stream.
    pub logical_bytes: u64,
    /// Bytes the repository had to add for it (after dedup, compression, encryption).
    pub stored_bytes: u64,
    /// SHA-256 of the stream's bytes, hex.
    pub sha256: String,
}

/// Why the repository could not take or release data.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// What went wrong, for people.
    pub message: String,
    /// Retrying cannot help (e.g. wrong key, unknown format).
    pub permanent: bool,
}

/// A committed snapshot as the backup sync sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Snapshot id.
    pub id: String,
    /// RFC 3339 time of commit.
    pub created: String,
    /// Its metadata (account, backup, ttl, ...).
    pub metadata: BTreeMap<String, String>,
    /// Its stream names.
    pub streams: Vec<String>,
}

/// A snapshot being written; nothing is visible until [`SnapshotSink::commit`].
#[async_trait]
pub trait SnapshotSink: Send {
    /// Starts a named stream; the previous stream must be finished first.
    async fn start_stream(&mut self, name: &str) -> Result<(), StoreError>;
    /// Appends bytes to the current stream.
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError>;
    /// Ends the current stream.
    async fn finish_stream(&mut self) -> Result<StreamTotals, StoreError>;
    /// Drops the current stream: it will not be part of the snapshot (a failed dump).
    async fn abort_stream(&mut self) -> Result<(), StoreError>;
    /// Writes the snapshot's manifest; returns the snapshot id.
    async fn commit(self: Box<Self>) -> Result<String, StoreError>;
    /// Gives the snapshot up without committing it (a worker whose only stream failed).
    async fn abandon(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The repository as the controllers use it.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Begins a snapshot carrying `metadata` (account, backup name, notes, times).
    async fn begin(
        &self,
        metadata: BTreeMap<String, String>,
    ) -> Result<Box<dyn SnapshotSink>, StoreError>;
    /// Releases a snapshot and frees the data no other snapshot uses. Idempotent.
    async fn release(&self, snapshot_id: &str) -> Result<(), StoreError>;
    /// Reads one stream of a snapshot back, verified as it is read.
    async fn read_stream(
        &self,
        snapshot_id: &str,
        name: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, StoreError>;
    /// Every committed snapshot, oldest first.
    async fn list(&self) -> Result<Vec<StoredSnapshot>, StoreError>;
}

/// The repository as a [`SnapshotSink`].
struct RepositorySink {
    writer: crate::repository::SnapshotWriter,
}

fn store_error(err: crate::repository::RepoError) -> StoreError {
    StoreError {
        permanent: err.is_permanent(),
        message: err.to_string(),
    }
}

#[async_trait]
impl SnapshotSink for RepositorySink {
    async fn start_stream(&mut self, name: &str) -> Result<(), StoreError> {
        self.writer.start_stream(name).await.map_err(store_error)
    }

    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.writer.write(&bytes).await.map_err(store_error)
    }

    async fn finish_stream(&mut self) -> Result<StreamTotals, StoreError> {
        let summary = self.writer.finish_stream().await.map_err(store_error)?;
        Ok(StreamTotals {
            logical_bytes: summary.logical_bytes,
            stored_bytes: summary.stored_bytes,
            sha256: summary.sha256,
        })
    }

    async fn abort_stream(&mut self) -> Result<(), StoreError> {
        self.writer.abort_stream().await.map_err(store_error)
    }

    async fn commit(self: Box<Self>) -> Result<String, StoreError> {
        Ok(self.writer.commit().await.map_err(store_error)?.id)
    }

    async fn abandon(self: Box<Self>) -> Result<(), StoreError> {
        self.writer.abandon().await.map_err(store_error)
    }
}

#[async_trait]
impl SnapshotStore for crate::repository::Repository {
    async fn begin(
        &self,
        metadata: BTreeMap<String, String>,
    ) -> Result<Box<dyn SnapshotSink>, StoreError> {
        let writer = self.start_snapshot(metadata).await.map_err(store_error)?;
        Ok(Box::new(RepositorySink { writer }))
    }

    async fn release(&self, snapshot_id: &str) -> Result<(), StoreError> {
        self.delete_snapshot(snapshot_id)
            .await
            .map_err(store_error)?;
        // Free what no other snapshot uses. A prune that finds a backup writing steps aside;
        // the next release (or `rewind repo prune`) frees the data then.
        match self.prune().await {
            Ok(_) | Err(crate::repository::RepoError::Busy(_)) => Ok(()),
            Err(err) => Err(store_error(err)),
        }
    }

    async fn read_stream(
        &self,
        snapshot_id: &str,
        name: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, StoreError> {
        let reader = crate::repository::Repository::read_stream(self, snapshot_id, name)
            .await
            .map_err(store_error)?;
        Ok(Box::new(reader))
    }

    async fn list(&self) -> Result<Vec<StoredSnapshot>, StoreError> {
        let manifests = self.list_snapshots().await.map_err(store_error)?;
        Ok(manifests
            .into_iter()
            .map(|manifest| StoredSnapshot {
                id: manifest.id,
                created: manifest.created,
                metadata: manifest.metadata,
                streams: manifest.streams.into_iter().map(|s| s.name).collect(),
            })
            .collect())
    }
}
