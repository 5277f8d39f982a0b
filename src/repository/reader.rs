//! Reading a stream back: chunks fetched a few at a time, each verified, the whole
//! stream's SHA-256 checked at its end (a mismatch is an error, never silent).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use super::error::RepoError;
use super::format::{self, names};
use super::{Index, Repository};

/// Chunks fetched concurrently while reading.
const READ_AHEAD: usize = 8;

type ChunkStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

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

/// Fetches and verifies one chunk.
pub(crate) async fn fetch_chunk(
    repo: &Repository,
    index: &Index,
    id: &format::ChunkId,
) -> Result<Vec<u8>, RepoError> {
    let location = index.get(id).ok_or_else(|| RepoError::Missing {
        object: format!("chunk {} (in no index)", hex::encode(id)),
    })?;
    let pack = names::pack(&location.pack);
    let range = location.offset..location.offset + u64::from(location.length);
    let blob = match repo
        .store()
        .get_range(&object_store::path::Path::from(pack.as_str()), range)
        .await
    {
        Ok(blob) => blob,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(RepoError::Missing { object: pack });
        }
        Err(err) => return Err(err.into()),
    };
    if blob.len() != location.length as usize {
        return Err(RepoError::corrupt(&pack, "truncated"));
    }
    // Decrypting and decompressing run on the blocking pool, so read-ahead uses every core.
    let keys = repo.keys().clone();
    let id = *id;
    let raw_length = location.raw_length as usize;
    tokio::task::spawn_blocking(move || format::decode_blob(&keys, &id, &blob, raw_length, &pack))
        .await
        .map_err(|e| RepoError::Io(std::io::Error::other(e)))?
}

/// Opens stream `name` of snapshot `snapshot`.
pub async fn open(
    repo: &Repository,
    snapshot: &str,
    name: &str,
) -> Result<StreamReader, RepoError> {
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
    // The stream's SHA-256 runs on its own blocking thread, in order, beside decoding; the
    // end of the stream waits for it and fails if it does not match.
    let (to_hasher, mut hashed) = tokio::sync::mpsc::channel::<Bytes>(READ_AHEAD);
    let digest = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        while let Some(chunk) = hashed.blocking_recv() {
            hasher.update(&chunk);
        }
        hex::encode(hasher.finalize())
    });
    let sender = Arc::new(Mutex::new(Some(to_hasher)));
    let chunk_sender = sender.clone();
    let repo = repo.clone();
    let chunks = futures::stream::iter(ids)
        .map(move |id| {
            let repo = repo.clone();
            let index = index.clone();
            async move { fetch_chunk(&repo, &index, &id).await }
        })
        .buffered(READ_AHEAD)
        .then(move |chunk| {
            let to_hasher = chunk_sender.lock().ok().and_then(|s| s.clone());
            async move {
                let chunk = Bytes::from(chunk.map_err(io_error)?);
                if let Some(to_hasher) = to_hasher {
                    let _ = to_hasher.send(chunk.clone()).await;
                }
                Ok(chunk)
            }
        });
    let expected = entry.sha256.clone();
    let stream_name = format!("stream {name} of snapshot {snapshot}");
    let verify = futures::stream::once(async move {
        if let Ok(mut sender) = sender.lock() {
            sender.take();
        }
        let actual = digest.await.unwrap_or_default();
        if actual == expected {
            Ok(Bytes::new())
        } else {
            Err(io_error(RepoError::corrupt(
                stream_name,
                "its checksum does not match what was written",
            )))
        }
    });
    let all: ChunkStream = Box::pin(chunks.chain(verify));
    Ok(StreamReader {
        inner: tokio_util::io::StreamReader::new(all),
    })
}
