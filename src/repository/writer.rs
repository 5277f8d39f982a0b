//! Writing a snapshot: streams cut into content-defined chunks, new chunks compressed and
//! sealed on every core, packed into ~8 MiB packs uploaded as they fill; the manifest last.
//! Memory is bounded by the batch and pack sizes, whatever a stream's length.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use jiff::Timestamp;
use object_store::{PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::Repository;
use super::error::RepoError;
use super::format::{
    self, ChunkId, ChunkerParams, Chunking, Compression, IndexEntry, Manifest, PackIndex,
    StreamEntry, VERSION, names,
};
use super::locks::{self, HeldLock};

/// Input gathered before chunking (more for larger chunks: see [`batch_size`]).
const BATCH: usize = 2 * 1024 * 1024;
/// A pack is uploaded once it holds this much (~8 MiB: few objects, flat memory).
const PACK_TARGET: usize = 8 * 1024 * 1024;
/// Room for one more write beyond a batch.
const CHUNK_MAX: usize = 1024 * 1024;
/// Packs uploading at once.
const UPLOADS_IN_FLIGHT: usize = 1;
/// Batches being hashed, compressed and sealed at once: two keep both cores busy while the
/// next batch is read and cut.
const BATCHES_IN_FLIGHT: usize = 2;

/// Totals of one finished stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream's name.
    pub name: String,
    /// Bytes written into it.
    pub logical_bytes: u64,
    /// Bytes it added to the repository.
    pub stored_bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

struct OpenStream {
    name: String,
    buffer: Vec<u8>,
    /// Offsets in `buffer` where a chunk must end (see [`SnapshotWriter::cut`]), ascending.
    cuts: Vec<usize>,
    compression: Compression,
    /// The sizes it is cut with, and the input gathered before chunking.
    chunker: ChunkerParams,
    batch: usize,
    checksum: Checksum,
    size: u64,
    stored: u64,
    chunks: Vec<String>,
}

/// The stream's SHA-256, computed in order on its own blocking thread beside the chunk work.
struct Checksum {
    batches: tokio::sync::mpsc::Sender<Arc<Vec<u8>>>,
    digest: tokio::task::JoinHandle<Sha256>,
}

impl Checksum {
    fn start() -> Self {
        let (batches, mut received) =
            tokio::sync::mpsc::channel::<Arc<Vec<u8>>>(BATCHES_IN_FLIGHT + 1);
        let digest = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(batch) = received.blocking_recv() {
                hasher.update(batch.as_slice());
            }
            hasher
        });
        Self { batches, digest }
    }

    async fn add(&self, batch: Arc<Vec<u8>>) -> Result<(), RepoError> {
        self.batches
            .send(batch)
            .await
            .map_err(|_| RepoError::Io(std::io::Error::other("the checksum task stopped")))
    }

    async fn finish(self) -> Result<String, RepoError> {
        drop(self.batches);
        let hasher = self
            .digest
            .await
            .map_err(|e| RepoError::Io(std::io::Error::other(e)))?;
        Ok(hex::encode(hasher.finalize()))
    }
}

/// A snapshot being written.
pub struct SnapshotWriter {
    repo: Repository,
    metadata: BTreeMap<String, String>,
    known: Arc<Mutex<HashSet<ChunkId>>>,
    /// The blobs of the pack being filled; uploaded as one object without being copied
    /// into one buffer (a fresh megabyte buffer per pack costs page faults on every pack).
    pack: Vec<Bytes>,
    pack_len: usize,
    pack_hasher: blake3::Hasher,
    pack_entries: Vec<IndexEntry>,
    /// Batch buffers given back after sealing, reused for the next batches.
    spare_buffers: Vec<Vec<u8>>,
    uploads: JoinSet<Result<(), RepoError>>,
    streams: Vec<StreamEntry>,
    current: Option<OpenStream>,
    pending: VecDeque<tokio::task::JoinHandle<Batch>>,
    lock: Option<HeldLock>,
}

/// A batch sealed on the blocking pool: each chunk with its blob when it is new.
struct Batch {
    chunks: Vec<(ChunkId, u32, Option<Vec<u8>>)>,
    /// The input, handed back so its buffer can be reused once the checksum is done with it.
    input: Arc<Vec<u8>>,
}

/// Input gathered before a stream cut with `chunker` is chunked: more than its largest chunk, so
/// a batch (at least this long) always ends in at least two chunks, and the last one (which
/// may end at the batch's edge rather than where the content says) is kept for the next batch.
/// Not more: every batch buffer in flight is this large (a million-file tree's peak RSS grew
/// by 26 MiB with twice the largest chunk).
fn batch_size(chunker: ChunkerParams) -> usize {
    BATCH.max(chunker.max as usize + chunker.avg as usize)
}

/// Runs `work` over `items` on every core, keeping order. Each thread takes the next item
/// when it is free, so a batch whose chunks cost very different amounts (text compressed, random
/// bytes stored raw) still keeps every core busy to its end; the calling thread is one of them.
fn parallel_map<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let take = || {
        let mut done = Vec::new();
        loop {
            let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(at) else {
                return done;
            };
            done.push((at, work(item)));
        }
    };
    let mut indexed: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(take)).collect();
        let mut all = take();
        for helper in helpers {
            // A panic in `work` is a bug; passed on rather than returning fewer results.
            all.extend(
                helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        all
    });
    indexed.sort_unstable_by_key(|(at, _)| *at);
    indexed.into_iter().map(|(_, result)| result).collect()
}

impl SnapshotWriter {
    pub(crate) async fn start(
        repo: Repository,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self, RepoError> {
        let lock = locks::acquire(&repo, "writer", "prune").await?;
        let known = Arc::new(Mutex::new(repo.load_index().await?.into_keys().collect()));
        Ok(Self {
            repo,
            metadata,
            known,
            pack: Vec::new(),
            pack_len: 0,
            pack_hasher: blake3::Hasher::new(),
            pack_entries: Vec::new(),
            spare_buffers: Vec::new(),
            uploads: JoinSet::new(),
            streams: Vec::new(),
            current: None,
            pending: VecDeque::new(),
            lock: Some(lock),
        })
    }

    /// Starts a stream; a stream still open is finished first. A name already used in this
    /// snapshot is refused (the first stream would otherwise be lost).
    pub async fn start_stream(&mut self, name: &str) -> Result<(), RepoError> {
        if self.current.is_some() {
            self.finish_stream().await?;
        }
        if self.streams.iter().any(|s| s.name == name) {
            return Err(RepoError::DuplicateStream(name.to_string()));
        }
        let chunker = self.repo.chunker();
        self.current = Some(OpenStream {
            name: name.to_string(),
            buffer: Vec::with_capacity(BATCH + CHUNK_MAX),
            cuts: Vec::new(),
            compression: Compression::default(),
            chunker,
            batch: batch_size(chunker),
            checksum: Checksum::start(),
            size: 0,
            stored: 0,
            chunks: Vec::new(),
        });
        Ok(())
    }

    /// Appends bytes to the open stream.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), RepoError> {
        let stream = self.current.as_mut().ok_or_else(|| {
            RepoError::NotFound("an open stream (call start_stream first)".into())
        })?;
        stream.size += data.len() as u64;
        stream.buffer.extend_from_slice(data);
        if stream.buffer.len() >= stream.batch {
            self.process(false).await?;
        }
        Ok(())
    }

    /// How hard the open stream's chunks from here on are compressed.
    pub fn set_compression(&mut self, compression: Compression) {
        if let Some(stream) = self.current.as_mut() {
            stream.compression = compression;
        }
    }

    /// Which sizes the open stream is cut with from here on (tree streams: [`Chunking::Large`]).
    pub fn set_chunking(&mut self, chunking: Chunking) {
        if let Some(stream) = self.current.as_mut() {
            stream.chunker = match chunking {
                Chunking::Standard => self.repo.chunker(),
                Chunking::Large => format::LARGE_CHUNKS,
            };
            stream.batch = batch_size(stream.chunker);
        }
    }

    /// Ends a chunk here, whatever the content: what follows is chunked afresh. A writer that
    /// knows where its records begin (a tree stream's files) cuts there, so a change in one
    /// record touches only the chunk holding it. Readers see no difference: a stream is its
    /// chunks' bytes in order, wherever they were cut.
    pub fn cut(&mut self) {
        if let Some(stream) = self.current.as_mut() {
            let at = stream.buffer.len();
            if at > 0 && stream.cuts.last() != Some(&at) {
                stream.cuts.push(at);
            }
        }
    }

    /// Drops the open stream: it will not be part of the snapshot (its chunks become garbage).
    pub async fn abort_stream(&mut self) -> Result<(), RepoError> {
        self.collect_pending(0).await?;
        self.current = None;
        Ok(())
    }

    /// Ends the open stream.
    pub async fn finish_stream(&mut self) -> Result<StreamSummary, RepoError> {
        self.process(true).await?;
        let stream = self
            .current
            .take()
            .ok_or_else(|| RepoError::NotFound("an open stream".into()))?;
        let sha256 = stream.checksum.finish().await?;
        let summary = StreamSummary {
            name: stream.name.clone(),
            logical_bytes: stream.size,
            stored_bytes: stream.stored,
            sha256: sha256.clone(),
        };
        self.streams.push(StreamEntry {
            name: stream.name,
            size: stream.size,
            sha256,
            stored_bytes: stream.stored,
            chunks: stream.chunks,
        });
        Ok(summary)
    }

    /// Chunks the buffered input (all of it when `last`) and hands the batch to the blocking pool.
    /// Up to [`BATCHES_IN_FLIGHT`] batches seal at once while the next one is read and cut;
    /// they are collected in order, so streams list their chunks in order.
    async fn process(&mut self, last: bool) -> Result<(), RepoError> {
        let mut next_buffer = self
            .spare_buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH + CHUNK_MAX));
        next_buffer.clear();
        let batch = match self.current.as_mut() {
            Some(stream) if !stream.buffer.is_empty() => {
                let params = stream.chunker;
                // Each run between forced cuts is chunked on its own, by content.
                let mut cuts: Vec<(usize, usize)> = Vec::new();
                let mut start = 0;
                for end in stream
                    .cuts
                    .iter()
                    .copied()
                    .chain(std::iter::once(stream.buffer.len()))
                {
                    if end > start {
                        cuts.extend(
                            fastcdc::v2020::FastCDC::new(
                                &stream.buffer[start..end],
                                params.min as usize,
                                params.avg as usize,
                                params.max as usize,
                            )
                            .map(|c| (start + c.offset, c.length)),
                        );
                    }
                    start = end;
                }
                let tail_is_cut = stream.cuts.last() == Some(&stream.buffer.len());
                if !last && !tail_is_cut && cuts.len() > 1 {
                    cuts.pop(); // the tail may end at the buffer's edge, not at a content boundary
                }
                let consumed = cuts.last().map(|(o, l)| o + l).unwrap_or(0);
                stream.cuts.retain(|at| *at > consumed);
                for at in &mut stream.cuts {
                    *at -= consumed;
                }
                let mut input = std::mem::replace(&mut stream.buffer, next_buffer);
                stream.buffer.extend_from_slice(&input[consumed..]);
                input.truncate(consumed);
                let input = Arc::new(input);
                stream.checksum.add(input.clone()).await?;
                Some((input, cuts, stream.compression))
            }
            _ => {
                self.spare_buffers.push(next_buffer);
                None
            }
        };
        if let Some((input, cuts, compression)) = batch {
            self.collect_pending(BATCHES_IN_FLIGHT - 1).await?;
            let keys = self.repo.keys().clone();
            let known = self.known.clone();
            self.pending.push_back(tokio::task::spawn_blocking(move || {
                let pieces: Vec<&[u8]> = cuts.iter().map(|(o, l)| &input[*o..o + l]).collect();
                let ids = parallel_map(&pieces, |piece| keys.chunk_id(piece));
                // One chunk is encoded once, by whichever batch claims it first; the shared set
                // makes that safe with several batches in flight.
                let fresh: Vec<bool> = match known.lock() {
                    Ok(mut known) => ids.iter().map(|id| known.insert(*id)).collect(),
                    Err(_) => vec![true; ids.len()],
                };
                let to_encode: Vec<(ChunkId, &[u8])> = pieces
                    .iter()
                    .zip(&ids)
                    .zip(&fresh)
                    .filter(|(_, fresh)| **fresh)
                    .map(|((piece, id), _)| (*id, *piece))
                    .collect();
                let mut blobs = parallel_map(&to_encode, |(id, piece)| {
                    format::encode_blob_with(&keys, id, piece, compression)
                })
                .into_iter();
                let chunks = cuts
                    .iter()
                    .zip(ids)
                    .zip(fresh)
                    .map(|(((_, length), id), fresh)| {
                        (id, *length as u32, if fresh { blobs.next() } else { None })
                    })
                    .collect();
                drop(pieces);
                Batch { chunks, input }
            }));
        }
        if last {
            self.collect_pending(0).await?;
        }
        Ok(())
    }

    /// Appends sealed batches, oldest first, to the stream and the pack until at most `keep`
    /// remain in flight.
    async fn collect_pending(&mut self, keep: usize) -> Result<(), RepoError> {
        while self.pending.len() > keep {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            let batch = pending
                .await
                .map_err(|e| RepoError::Io(std::io::Error::other(e)))?;
            if let Ok(buffer) = Arc::try_unwrap(batch.input)
                && self.spare_buffers.len() < BATCHES_IN_FLIGHT + 1
            {
                self.spare_buffers.push(buffer);
            }
            for (id, raw_length, blob) in batch.chunks {
                // A new chunk goes into the pack even when its stream was aborted: the set of
                // known chunks already counts it, so a later stream may refer to it.
                if let Some(stream) = self.current.as_mut() {
                    stream.chunks.push(hex::encode(id));
                    stream.stored += blob.as_ref().map_or(0, |b| b.len() as u64);
                }
                let Some(blob) = blob else { continue };
                self.pack_entries.push(IndexEntry {
                    id: hex::encode(id),
                    offset: self.pack_len as u64,
                    length: blob.len() as u32,
                    raw_length,
                });
                self.pack_len += blob.len();
                self.pack_hasher.update(&blob);
                self.pack.push(Bytes::from(blob));
                if self.pack_len >= PACK_TARGET {
                    self.flush_pack().await?;
                }
            }
        }
        Ok(())
    }

    /// Uploads the current pack, then its index.
    async fn flush_pack(&mut self) -> Result<(), RepoError> {
        if self.pack_entries.is_empty() {
            return Ok(());
        }
        let pack: PutPayload = std::mem::take(&mut self.pack).into_iter().collect();
        self.pack_len = 0;
        let entries = std::mem::take(&mut self.pack_entries);
        let id = std::mem::take(&mut self.pack_hasher)
            .finalize()
            .to_hex()
            .to_string();
        let index = PackIndex {
            version: VERSION,
            pack: id.clone(),
            blobs: entries,
        };
        let sealed_index = format::seal_json(self.repo.keys(), &names::index(&id), &index)?;
        let repo = self.repo.clone();
        while self.uploads.len() >= UPLOADS_IN_FLIGHT {
            if let Some(done) = self.uploads.join_next().await {
                done.map_err(|e| RepoError::Io(std::io::Error::other(e)))??;
            }
        }
        self.uploads.spawn(async move {
            repo.put_payload(&names::pack(&id), pack).await?;
            super::backend::make_object_durable(repo.url(), &names::pack(&id)).await?;
            repo.put_object(&names::index(&id), sealed_index).await
        });
        Ok(())
    }

    /// Gives the snapshot up: nothing is committed and the writer lock is released at once
    /// (instead of going stale); chunks already stored stay until a prune finds them unused.
    pub async fn abandon(mut self) -> Result<(), RepoError> {
        if let Some(lock) = self.lock.take() {
            lock.release(&self.repo).await?;
        }
        Ok(())
    }

    /// Writes everything still buffered, then the manifest; returns the snapshot's manifest.
    pub async fn commit(mut self) -> Result<Manifest, RepoError> {
        if self.current.is_some() {
            self.finish_stream().await?;
        }
        self.flush_pack().await?;
        while let Some(done) = self.uploads.join_next().await {
            done.map_err(|e| RepoError::Io(std::io::Error::other(e)))??;
        }
        super::backend::make_durable(self.repo.url()).await?;
        let now = Timestamp::now();
        let mut suffix = [0u8; 4];
        rand::fill(&mut suffix[..]);
        let id = format!("{}-{}", now.strftime("%Y%m%dT%H%M%SZ"), hex::encode(suffix));
        let manifest = Manifest {
            version: VERSION,
            id: id.clone(),
            created: now.to_string(),
            metadata: self.metadata.clone(),
            streams: std::mem::take(&mut self.streams),
        };
        let sealed = format::seal_json(self.repo.keys(), &names::snapshot(&id), &manifest)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.repo
            .store()
            .put_opts(
                &object_store::path::Path::from(names::snapshot(&id)),
                PutPayload::from(sealed),
                options,
            )
            .await?;
        super::backend::make_durable(self.repo.url()).await?;
        if let Some(lock) = self.lock.take() {
            lock.release(&self.repo).await?;
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use crate::repository::{Chunking, MasterKey, Repository, Verify};

    /// `len` bytes of xorshift noise from `seed`: data that neither compresses nor repeats.
    fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn parallel_map_keeps_the_order_of_items_whose_work_takes_very_different_times() {
        let items: Vec<u64> = (0..37).collect();
        let squares = super::parallel_map(&items, |n| {
            // Every third item is slow, so threads finish out of order.
            if n % 3 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            n * n
        });
        assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
        assert!(super::parallel_map(&[] as &[u64], |n| *n).is_empty());
        assert_eq!(super::parallel_map(&[4u64], |n| n + 1), [5]);
    }

    #[tokio::test]
    async fn a_cut_ends_a_chunk_exactly_there_and_the_stream_reads_back_whole() {
        let key = MasterKey::from_text(&"ab".repeat(32)).expect("key");
        let repo = Repository::init("memory://", &key).await.expect("init");
        let data = pseudo_random(7, 3_000_000);
        let cuts = [1_000, 70_000, 70_001, 2_500_000];
        let mut writer = repo
            .start_snapshot(Default::default())
            .await
            .expect("start");
        writer.start_stream("s").await.expect("stream");
        let mut from = 0;
        for cut in cuts {
            writer.write(&data[from..cut]).await.expect("write");
            writer.cut();
            writer.cut(); // a second cut at the same place changes nothing
            from = cut;
        }
        writer.write(&data[from..]).await.expect("write");
        let manifest = writer.commit().await.expect("commit");
        let mut chunks = repo
            .read_stream_chunks(&manifest.id, "s", Verify::Checksum)
            .await
            .expect("read");
        let (mut read, mut ends) = (Vec::new(), Vec::new());
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.expect("chunk");
            if !chunk.is_empty() {
                read.extend_from_slice(&chunk);
                ends.push(read.len());
            }
        }
        assert!(read == data, "the stream reads back whole");
        for cut in cuts {
            assert!(ends.contains(&cut), "a chunk ends at {cut}: {ends:?}");
        }
    }

    #[tokio::test]
    async fn large_chunking_cuts_large_chunks_reads_back_whole_and_dedups_among_its_streams() {
        use crate::repository::format::LARGE_CHUNKS;
        let key = MasterKey::from_text(&"cd".repeat(32)).expect("key");
        let repo = Repository::init("memory://", &key).await.expect("init");
        let data = pseudo_random(11, 20_000_000);
        let mut writer = repo
            .start_snapshot(Default::default())
            .await
            .expect("start");
        let mut stored = Vec::new();
        for (name, chunking) in [
            ("large", Chunking::Large),
            ("standard", Chunking::Standard),
            ("large again", Chunking::Large),
        ] {
            writer.start_stream(name).await.expect("stream");
            writer.set_chunking(chunking);
            // Written in uneven pieces, as a tree's blocks arrive.
            for piece in data.chunks(700_001) {
                writer.write(piece).await.expect("write");
            }
            stored.push(writer.finish_stream().await.expect("finish").stored_bytes);
        }
        let manifest = writer.commit().await.expect("commit");
        assert_eq!(
            stored[2], 0,
            "the same bytes cut the same way store nothing"
        );
        let mut lengths = Vec::new();
        for name in ["large", "standard"] {
            let mut chunks = repo
                .read_stream_chunks(&manifest.id, name, Verify::Checksum)
                .await
                .expect("read");
            let (mut read, mut sizes) = (Vec::new(), Vec::new());
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.expect("chunk");
                read.extend_from_slice(&chunk);
                sizes.push(chunk.len());
            }
            assert!(read == data, "{name} reads back whole");
            lengths.push(sizes);
        }
        let (large, standard) = (&lengths[0], &lengths[1]);
        let body = &large[..large.len() - 1]; // the last chunk ends where the data does
        assert!(
            body.iter()
                .all(|l| *l >= LARGE_CHUNKS.min as usize && *l <= LARGE_CHUNKS.max as usize),
            "{large:?}"
        );
        assert!(
            large.len() * 2 < standard.len(),
            "{} large chunks, {} standard ones",
            large.len(),
            standard.len()
        );
    }
}
