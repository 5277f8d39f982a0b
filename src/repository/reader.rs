//! Reading a stream back: neighbouring blobs fetched with one ranged read, a few reads at a
//! time, every chunk verified, the stream's size (and for `check` its SHA-256) checked at its
//! end — a mismatch is an error, never silent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use super::Repository;
use super::crypto::RepoKeys;
use super::error::RepoError;
use super::format::{self, ChunkId, Decoded, names};
use super::read_plan::{PackRead, ReadPlan};

/// Reads (each up to `read_plan::MAX_READ`) fetched and decoded concurrently.
const READ_AHEAD: usize = 4;

/// A verified stream of a snapshot, as an `AsyncRead`.
pub struct StreamReader {
    inner: tokio_util::io::StreamReader<ChunkStream, Bytes>,
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncBufRead for StreamReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        Pin::new(&mut self.get_mut().inner).consume(amount);
    }
}

fn io_error(err: RepoError) -> std::io::Error {
    std::io::Error::other(err)
}

/// Fetches one read with one request and decodes its blobs on the blocking pool.
async fn fetch(repo: &Repository, read: PackRead) -> Result<Vec<Bytes>, RepoError> {
    let pack = names::pack(&read.pack);
    let expected = (read.range.end - read.range.start) as usize;
    let bytes = match repo
        .store()
        .get_range(&object_store::path::Path::from(pack.as_str()), read.range)
        .await
    {
        Ok(bytes) => bytes,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(RepoError::Missing { object: pack });
        }
        Err(err) => return Err(err.into()),
    };
    if bytes.len() != expected {
        return Err(RepoError::corrupt(&pack, "truncated"));
    }
    let keys = repo.keys().clone();
    tokio::task::spawn_blocking(move || decode_read(&keys, bytes, &read.blobs, &pack))
        .await
        .map_err(|e| RepoError::Io(std::io::Error::other(e)))?
}

/// Decrypts every blob of a read where it lies and verifies it; raw chunks stay slices of the
/// read's buffer, compressed ones are inflated into their own.
fn decode_read(
    keys: &RepoKeys,
    bytes: Bytes,
    blobs: &[(ChunkId, Range<usize>, usize)],
    object: &str,
) -> Result<Vec<Bytes>, RepoError> {
    let mut buffer = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    let mut decoded = Vec::with_capacity(blobs.len());
    for (id, place, raw_length) in blobs {
        let blob = buffer
            .get_mut(place.clone())
            .ok_or_else(|| RepoError::corrupt(object, "truncated"))?;
        decoded.push(
            match format::decode_blob_in_place(keys, id, blob, *raw_length, object)? {
                Decoded::InPlace(range) => {
                    Decoded::InPlace(place.start + range.start..place.start + range.end)
                }
                inflated => inflated,
            },
        );
    }
    let buffer = buffer.freeze();
    Ok(decoded
        .into_iter()
        .map(|chunk| match chunk {
            Decoded::InPlace(range) => buffer.slice(range),
            Decoded::Inflated(chunk) => Bytes::from(chunk),
        })
        .collect())
}

/// A stream's chunks, verified, in order; the last item fails if the stream's checksum
/// does not match.
pub type ChunkStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// What a read verifies beyond every chunk, which is always authenticated and hashed against
/// its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Every chunk and the stream's size. The manifest that lists the chunks in order is
    /// authenticated too, so the bytes are exactly those written: what restores use.
    Chunks,
    /// Also the stream's SHA-256, recomputed on its own thread: what `check` uses, to catch
    /// a writer that recorded a wrong checksum.
    Checksum,
}

/// Opens stream `name` of snapshot `snapshot` as a reader.
pub async fn open(
    repo: &Repository,
    snapshot: &str,
    name: &str,
    verify: Verify,
) -> Result<StreamReader, RepoError> {
    Ok(StreamReader {
        inner: tokio_util::io::StreamReader::new(chunks(repo, snapshot, name, verify).await?),
    })
}

/// The stream's SHA-256 on its own blocking thread, fed in order beside decoding.
struct StreamHasher {
    /// Taken out (closing the channel) when the stream ends; each chunk sends through a clone.
    sender: Arc<Mutex<Option<tokio::sync::mpsc::Sender<Bytes>>>>,
    digest: tokio::task::JoinHandle<String>,
}

impl StreamHasher {
    fn start() -> Self {
        let (sender, mut hashed) = tokio::sync::mpsc::channel::<Bytes>(READ_AHEAD * 16);
        let digest = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(chunk) = hashed.blocking_recv() {
                hasher.update(&chunk);
            }
            hex::encode(hasher.finalize())
        });
        Self {
            sender: Arc::new(Mutex::new(Some(sender))),
            digest,
        }
    }

    async fn finish(self) -> String {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        self.digest.await.unwrap_or_default()
    }
}

/// Opens stream `name` of snapshot `snapshot` as its verified chunks, in order.
pub async fn chunks(
    repo: &Repository,
    snapshot: &str,
    name: &str,
    verify: Verify,
) -> Result<ChunkStream, RepoError> {
    let manifest = repo.manifest(snapshot).await?;
    let entry = manifest
        .streams
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| RepoError::NotFound(format!("stream {name} in snapshot {snapshot}")))?;
    let index = Arc::new(repo.load_index().await?);
    let ids = entry
        .chunks
        .iter()
        .map(|id| format::parse_id(id, &names::snapshot(snapshot)))
        .collect::<Result<Vec<_>, _>>()?;
    let hasher = (verify == Verify::Checksum).then(StreamHasher::start);
    let to_hasher = hasher.as_ref().map(|h| h.sender.clone());
    let read_bytes = Arc::new(AtomicU64::new(0));
    let counter = read_bytes.clone();
    let repo = repo.clone();
    let chunks = futures::stream::iter(ReadPlan::new(ids, index))
        .map(move |read| {
            let repo = repo.clone();
            async move { fetch(&repo, read?).await }
        })
        .buffered(READ_AHEAD)
        .map_ok(|chunks| futures::stream::iter(chunks.into_iter().map(Ok)))
        .try_flatten()
        .then(move |chunk| {
            counter.fetch_add(
                chunk.as_ref().map_or(0, |c| c.len() as u64),
                Ordering::Relaxed,
            );
            let to_hasher = to_hasher
                .as_ref()
                .and_then(|sender| sender.lock().ok().and_then(|s| s.clone()));
            async move {
                let chunk = chunk.map_err(io_error)?;
                if let Some(to_hasher) = to_hasher {
                    let _ = to_hasher.send(chunk.clone()).await;
                }
                Ok(chunk)
            }
        });
    let stream_name = format!("stream {name} of snapshot {snapshot}");
    let end = futures::stream::once(async move {
        let read = read_bytes.load(Ordering::Relaxed);
        if read != entry.size {
            return Err(io_error(RepoError::corrupt(
                stream_name,
                format!("read {read} bytes, the manifest says {}", entry.size),
            )));
        }
        let digest = match hasher {
            Some(hasher) => Some(hasher.finish().await),
            None => None,
        };
        match digest {
            Some(digest) if digest != entry.sha256 => Err(io_error(RepoError::corrupt(
                stream_name,
                "its checksum does not match what was written",
            ))),
            _ => Ok(Bytes::new()),
        }
    });
    Ok(Box::pin(chunks.chain(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn memory_repo_with(data: &[u8]) -> (Repository, String) {
        let key = crate::repository::MasterKey::from_text(&"cd".repeat(32)).expect("key");
        let repo = Repository::init("memory://", &key).await.expect("init");
        let mut writer = repo
            .start_snapshot(Default::default())
            .await
            .expect("start");
        writer.start_stream("s").await.expect("stream");
        writer.write(data).await.expect("write");
        let manifest = writer.commit().await.expect("commit");
        (repo, manifest.id)
    }

    /// Rewrites the snapshot's manifest with `edit` applied to its only stream.
    async fn tamper_with_manifest(
        repo: &Repository,
        id: &str,
        edit: impl FnOnce(&mut format::StreamEntry),
    ) {
        let mut manifest = repo.manifest(id).await.expect("manifest");
        edit(&mut manifest.streams[0]);
        let name = names::snapshot(id);
        let sealed = format::seal_json(repo.keys(), &name, &manifest).expect("seal");
        repo.store()
            .put(&object_store::path::Path::from(name), sealed.into())
            .await
            .expect("put");
    }

    async fn read_all(repo: &Repository, id: &str, verify: Verify) -> std::io::Result<Vec<u8>> {
        let mut chunks = chunks(repo, id, "s", verify).await.map_err(io_error)?;
        let mut out = Vec::new();
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_wrong_recorded_checksum_is_caught_by_a_checksum_read_and_by_check() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (repo, id) = memory_repo_with(&data).await;
        assert_eq!(
            read_all(&repo, &id, Verify::Checksum).await.expect("reads"),
            data
        );
        tamper_with_manifest(&repo, &id, |s| s.sha256 = "00".repeat(32)).await;
        assert_eq!(
            read_all(&repo, &id, Verify::Chunks)
                .await
                .expect("chunks verify"),
            data
        );
        let err = read_all(&repo, &id, Verify::Checksum)
            .await
            .expect_err("checksum differs");
        assert!(err.to_string().contains("checksum does not match"), "{err}");
        let report = repo.check().await.expect("check runs");
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].problem.contains("checksum"));
    }

    #[tokio::test]
    async fn a_stream_shorter_than_its_recorded_size_is_an_error_for_every_read() {
        let data = vec![42u8; 100_000];
        let (repo, id) = memory_repo_with(&data).await;
        tamper_with_manifest(&repo, &id, |s| s.size += 1).await;
        for verify in [Verify::Chunks, Verify::Checksum] {
            let err = read_all(&repo, &id, verify)
                .await
                .expect_err("size differs");
            assert!(
                err.to_string()
                    .contains("read 100000 bytes, the manifest says 100001"),
                "{err}"
            );
        }
    }
}
