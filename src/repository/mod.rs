//! The backup repository: content-defined chunks, deduplicated across snapshots, compressed,
//! encrypted and packed, on any object store. No Kubernetes dependency.
//!
//! Crash safety comes from ordering: a pack is uploaded before its index, every index before
//! the snapshot manifest that needs it, and the manifest last. A crash leaves at most
//! unreferenced packs, which `prune` removes. Prune and writers exclude each other through
//! lock objects (see `locks`).

pub mod backend;
pub mod crypto;
pub mod error;
pub mod format;
mod locks;
mod maintenance;
mod read_plan;
mod reader;
pub mod stdio;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use crypto::MasterKey;
pub use error::RepoError;
pub use format::{ChunkerParams, Chunking, Compression, Manifest, StreamEntry};
pub use maintenance::{CheckProblem, CheckReport, PruneReport, SnapshotStats, Stats};
pub use reader::{ChunkStream, Verify};
pub use writer::{SnapshotWriter, StreamSummary};

use crypto::RepoKeys;
use format::{ChunkId, Config, PackIndex, VERSION, names};

/// Where a chunk's blob is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack's id.
    pub pack: Arc<str>,
    /// Offset in the pack.
    pub offset: u64,
    /// Blob length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// Every indexed chunk.
pub type Index = HashMap<ChunkId, Location>;

struct Inner {
    store: Arc<dyn ObjectStore>,
    url: String,
    keys: RepoKeys,
    config: Config,
}

/// An open repository; cheap to clone.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &self.inner.url)
            .finish()
    }
}

fn path(name: &str) -> Path {
    Path::from(name)
}

impl Repository {
    /// Creates a repository at `url`, its keys wrapped by `master`.
    pub async fn init(url: &str, master: &MasterKey) -> Result<Self, RepoError> {
        let store = backend::open_store(url)?;
        let keys = RepoKeys::generate();
        let mut id = [0u8; 16];
        rand::fill(&mut id[..]);
        let config = Config {
            format: "rewind-repository".into(),
            version: VERSION,
            repository_id: hex::encode(id),
            chunker: ChunkerParams::default(),
            wrapped_keys: base64::engine::general_purpose::STANDARD.encode(keys.wrap(master)),
        };
        let body = serde_json::to_vec_pretty(&config)
            .map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match store
            .put_opts(&path(names::CONFIG), PutPayload::from(body), options)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(RepoError::AlreadyExists(url.to_string()));
            }
            Err(err) => return Err(err.into()),
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                url: url.to_string(),
                keys,
                config,
            }),
        })
    }

    /// Opens the repository at `url` with `master`.
    pub async fn open(url: &str, master: &MasterKey) -> Result<Self, RepoError> {
        let store = backend::open_store(url)?;
        let config_path = path(names::CONFIG);
        let got = idempotent(|| async { store.get(&config_path).await?.bytes().await }).await;
        let raw = match got {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RepoError::NotARepository(url.to_string()));
            }
            Err(err) => return Err(err.into()),
        };
        let value: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        if value["format"] != "rewind-repository" {
            return Err(RepoError::NotARepository(url.to_string()));
        }
        let version = value["version"].as_u64().unwrap_or(0) as u32;
        if version != VERSION {
            return Err(RepoError::UnsupportedVersion {
                object: "config".into(),
                found: version,
                supported: VERSION,
            });
        }
        let config: Config = serde_json::from_value(value)
            .map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        // `config` is plain JSON that anyone with write access to the bucket could edit; the
        // chunker sizes are therefore not read from it but fixed by the format version, and a
        // config that says otherwise was changed outside Rewind.
        if config.chunker != ChunkerParams::default() {
            return Err(RepoError::corrupt(
                "config",
                format!(
                    "its chunker sizes {:?} are not format version {VERSION}'s {:?}: the file was changed outside Rewind; put back the original config",
                    config.chunker,
                    ChunkerParams::default()
                ),
            ));
        }
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&config.wrapped_keys)
            .map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        let keys = RepoKeys::unwrap(&wrapped, master)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                url: url.to_string(),
                keys,
                config,
            }),
        })
    }

    /// Opens, or creates when absent.
    pub async fn open_or_init(url: &str, master: &MasterKey) -> Result<Self, RepoError> {
        match Self::open(url, master).await {
            Err(RepoError::NotARepository(_)) => match Self::init(url, master).await {
                Err(RepoError::AlreadyExists(_)) => Self::open(url, master).await,
                other => other,
            },
            other => other,
        }
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    pub(crate) fn keys(&self) -> &RepoKeys {
        &self.inner.keys
    }

    pub(crate) fn chunker(&self) -> ChunkerParams {
        self.inner.config.chunker
    }

    /// Names of every object under `prefix`.
    pub(crate) async fn list_names(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, u64, i64)>, RepoError> {
        let listed: Vec<_> = idempotent(|| async {
            self.store()
                .list(Some(&path(prefix)))
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        Ok(listed
            .into_iter()
            .map(|meta| {
                (
                    meta.location.to_string(),
                    meta.size,
                    meta.last_modified.timestamp(),
                )
            })
            .collect())
    }

    pub(crate) async fn get_object(&self, name: &str) -> Result<bytes::Bytes, RepoError> {
        let got = idempotent(|| async { self.store().get(&path(name)).await?.bytes().await }).await;
        match got {
            Ok(bytes) => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => Err(RepoError::Missing {
                object: name.to_string(),
            }),
            Err(err) => Err(err.into()),
        }
    }

    pub(crate) async fn put_payload(&self, name: &str, body: PutPayload) -> Result<(), RepoError> {
        self.store().put(&path(name), body).await?;
        Ok(())
    }

    pub(crate) async fn put_object(&self, name: &str, body: Vec<u8>) -> Result<(), RepoError> {
        self.put_payload(name, PutPayload::from(body)).await
    }

    pub(crate) async fn delete_object(&self, name: &str) -> Result<(), RepoError> {
        let location = path(name);
        match idempotent(|| self.store().delete(&location)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Every pack index, read and verified (8 at a time).
    pub async fn pack_indexes(&self) -> Result<Vec<PackIndex>, RepoError> {
        let names = self.list_names("index").await?;
        futures::stream::iter(names.into_iter().map(|(name, _, _)| async move {
            let sealed = self.get_object(&name).await?;
            let index: PackIndex = format::open_json(self.keys(), &name, &sealed)?;
            Ok::<PackIndex, RepoError>(index)
        }))
        .buffer_unordered(8)
        .try_collect()
        .await
    }

    /// Chunk id → location, for every indexed chunk.
    pub async fn load_index(&self) -> Result<Index, RepoError> {
        let mut index = Index::new();
        for pack in self.pack_indexes().await? {
            let pack_id: Arc<str> = Arc::from(pack.pack.as_str());
            for blob in pack.blobs {
                let id = format::parse_id(&blob.id, &names::index(&pack.pack))?;
                index.insert(
                    id,
                    Location {
                        pack: pack_id.clone(),
                        offset: blob.offset,
                        length: blob.length,
                        raw_length: blob.raw_length,
                    },
                );
            }
        }
        Ok(index)
    }

    /// One snapshot's manifest.
    pub async fn manifest(&self, id: &str) -> Result<Manifest, RepoError> {
        let name = names::snapshot(id);
        let sealed = match self.get_object(&name).await {
            Err(RepoError::Missing { .. }) => {
                return Err(RepoError::NotFound(format!("snapshot {id}")));
            }
            other => other?,
        };
        format::open_json(self.keys(), &name, &sealed)
    }

    /// Every snapshot, oldest first (one deleted while the list is read is left out).
    pub async fn list_snapshots(&self) -> Result<Vec<Manifest>, RepoError> {
        let mut ids: Vec<String> = self
            .list_names("snapshots")
            .await?
            .into_iter()
            .filter_map(|(name, _, _)| name.strip_prefix("snapshots/").map(String::from))
            .collect();
        ids.sort();
        let mut manifests = Vec::with_capacity(ids.len());
        for id in ids {
            match self.manifest(&id).await {
                Ok(manifest) => manifests.push(manifest),
                Err(RepoError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(manifests)
    }

    /// Starts a snapshot; nothing is visible until [`SnapshotWriter::commit`].
    pub async fn start_snapshot(
        &self,
        metadata: BTreeMap<String, String>,
    ) -> Result<SnapshotWriter, RepoError> {
        SnapshotWriter::start(self.clone(), metadata).await
    }

    /// Reads a stream back, verifying every chunk and the stream's size (see [`Verify`]).
    pub async fn read_stream(
        &self,
        snapshot: &str,
        stream: &str,
    ) -> Result<reader::StreamReader, RepoError> {
        reader::open(self, snapshot, stream, Verify::Chunks).await
    }

    /// Reads a stream back as its chunks, in order, each verified; the last item fails when
    /// the stream's size (or, with [`Verify::Checksum`], its SHA-256) does not match.
    pub async fn read_stream_chunks(
        &self,
        snapshot: &str,
        stream: &str,
        verify: Verify,
    ) -> Result<reader::ChunkStream, RepoError> {
        reader::chunks(self, snapshot, stream, verify).await
    }

    /// Deletes a snapshot's manifest; its data goes with the next prune unless shared.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), RepoError> {
        self.delete_object(&names::snapshot(id)).await
    }
}

/// How many times a read, list or delete is tried when the store fails transiently.
const IDEMPOTENT_ATTEMPTS: u32 = 4;

/// Runs an idempotent store request (a get, a list, a delete) again when it failed in a way
/// a retry can mend: a connection reset, a 5xx, a body cut off halfway. The store client retries
/// some of these itself, but not a body that breaks while it is read, nor a bulk delete's POST —
/// and a lock object left behind by one failed delete would block every backup for minutes.
async fn idempotent<T, F, Fut>(mut request: F) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Err(err) if attempt < IDEMPOTENT_ATTEMPTS && is_transient(&err) => {
                tracing::debug!(attempt, error = %err, "repository request failed; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(250 << (2 * (attempt - 1))))
                    .await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether a store failure may pass when tried again (pure).
fn is_transient(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::Generic { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn reset() -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: "connection reset by peer".into(),
        }
    }

    #[tokio::test]
    async fn a_delete_or_list_that_fails_transiently_is_tried_again_until_it_passes() {
        let calls = AtomicU32::new(0);
        let result = idempotent(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(reset()),
                _ => Ok("done"),
            }
        })
        .await;
        assert_eq!(result.ok(), Some("done"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_store_that_keeps_failing_is_given_up_after_four_attempts() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = idempotent(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(reset())
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), IDEMPOTENT_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_missing_object_is_an_answer_not_a_failure_to_retry() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = idempotent(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(object_store::Error::NotFound {
                path: "locks/prune-1".into(),
                source: "404".into(),
            })
        })
        .await;
        assert!(matches!(result, Err(object_store::Error::NotFound { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
