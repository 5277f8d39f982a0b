//! The on-store format, version 1 (docs/repository-format.md describes it for other readers).
//!
//! ```text
//! <prefix>/config                      JSON: version, chunker, wrapped repository keys
//! <prefix>/packs/<id[..2]>/<id>        blobs: nonce ‖ XChaCha20-Poly1305(flag ‖ data), AAD = chunk id
//! <prefix>/index/<pack id>             sealed JSON: the pack's blobs (chunk id, offset, length)
//! <prefix>/snapshots/<snapshot id>     sealed JSON: metadata and streams (chunk ids in order); written last
//! <prefix>/locks/<writer id>           JSON: who writes or prunes, since when
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::crypto::RepoKeys;
use super::error::RepoError;

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// A chunk's id (keyed BLAKE3 of its plaintext).
pub type ChunkId = [u8; 32];

/// The `config` object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Always `rewind-repository`.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Random id of this repository.
    pub repository_id: String,
    /// Content-defined chunking sizes in bytes.
    pub chunker: ChunkerParams,
    /// The repository keys wrapped by the master key, base64.
    pub wrapped_keys: String,
}

/// FastCDC (2020) sizes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Smallest chunk.
    pub min: u32,
    /// Average chunk.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self {
            min: 64 * 1024,
            avg: 256 * 1024,
            max: 1024 * 1024,
        }
    }
}

/// Which sizes a stream is cut with. Not recorded: a stream is the list of its chunks, so a
/// reader never needs them; chunks dedup only against chunks cut the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunking {
    /// The config's sizes (format version 1: 64 KiB / 256 KiB / 1 MiB): dumps and raw streams.
    #[default]
    Standard,
    /// [`LARGE_CHUNKS`]: tree streams, whose writer cuts around every file of 16 KiB or more
    /// anyway, so only the contents of larger files see these sizes.
    Large,
}

/// The sizes of [`Chunking::Large`]: fewer, larger chunks compress better (zstd sees more of a
/// file at once) and cost less per byte (ids, seals, index entries, lookups).
pub const LARGE_CHUNKS: ChunkerParams = ChunkerParams {
    min: 512 * 1024,
    avg: 1024 * 1024,
    max: 4 * 1024 * 1024,
};

/// Where one blob is inside a pack.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Chunk id, hex.
    pub id: String,
    /// Byte offset of the blob in the pack.
    pub offset: u64,
    /// Byte length of the blob (nonce, ciphertext and tag).
    pub length: u32,
    /// Length of the chunk's plaintext.
    pub raw_length: u32,
}

/// The index object of one pack.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PackIndex {
    /// Format version.
    pub version: u32,
    /// The pack's id (hex BLAKE3 of its bytes).
    pub pack: String,
    /// Its blobs.
    pub blobs: Vec<IndexEntry>,
}

/// One stream of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// Its name, e.g. `projects/shop/manifests.jsonl`.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Bytes this stream added to the repository.
    pub stored_bytes: u64,
    /// Chunk ids in order, hex.
    pub chunks: Vec<String>,
}

/// A snapshot manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The snapshot id.
    pub id: String,
    /// RFC 3339 time of commit.
    pub created: String,
    /// Free-form metadata (account, backup, notes, ...).
    pub metadata: BTreeMap<String, String>,
    /// Its streams.
    pub streams: Vec<StreamEntry>,
}

/// A lock object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// `writer` or `prune`.
    pub kind: String,
    /// Unix seconds when taken or last refreshed.
    pub refreshed: i64,
    /// Who holds it (host, pid).
    pub holder: String,
}

/// Object names.
pub mod names {
    /// The config object.
    pub const CONFIG: &str = "config";
    /// A pack.
    pub fn pack(id: &str) -> String {
        format!("packs/{}/{id}", &id[..2.min(id.len())])
    }
    /// A pack's index.
    pub fn index(pack: &str) -> String {
        format!("index/{pack}")
    }
    /// A snapshot manifest.
    pub fn snapshot(id: &str) -> String {
        format!("snapshots/{id}")
    }
    /// A lock.
    pub fn lock(id: &str) -> String {
        format!("locks/{id}")
    }
}

/// Compression flag of a blob's plaintext.
const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// zstd level 1 with the parameters zstd itself picks for inputs beyond 256 KiB (hash log
/// 13, minimum match 6), for every chunk: the table for smaller inputs (hash log 14, minimum
/// match 5) cost 10–15% more CPU on database dumps for no gain there, and about 1.5% of size
/// on source code and binaries (measured with `zstd -b1 -B256K`, docs/performance.md).
fn compressor() -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut compressor = zstd::bulk::Compressor::new(1).ok()?;
    compressor.set_parameter(CParameter::HashLog(13)).ok()?;
    compressor.set_parameter(CParameter::MinMatch(6)).ok()?;
    Some(compressor)
}

/// zstd level 3 (the double-fast strategy) with smaller tables (hash log 16, chain log 13) and
/// a minimum match of 6, for file trees: on 1 MiB chunks it compresses 20–80% faster than
/// plain level 3 (docs/performance.md has the table), stores 2–7% less of text logs and
/// database dumps and 2–4% more of source code and binaries.
fn compressor_better() -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut compressor = zstd::bulk::Compressor::new(3).ok()?;
    compressor.set_parameter(CParameter::HashLog(16)).ok()?;
    compressor.set_parameter(CParameter::ChainLog(13)).ok()?;
    compressor.set_parameter(CParameter::MinMatch(6)).ok()?;
    Some(compressor)
}

/// How hard a stream's chunks are compressed. Not recorded: every blob is one zstd frame
/// whatever the level, and reads back the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// zstd level 1 as tuned above: dumps and manifests, where ingest speed counts most.
    #[default]
    Fast,
    /// zstd level 3 with the smaller tables above (`compressor_better`): file trees, where the
    /// repository's size counts as much as ingest speed.
    Better,
}

thread_local! {
    /// One zstd context per thread: creating one per chunk would allocate and clear its
    /// tables every time.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(compressor());
    static COMPRESSOR_BETTER: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(compressor_better());
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// Compresses `chunk` onto the end of `out`, in place; false (and `out` as it was) when that
/// would not save at least 64 bytes.
fn compress_onto(chunk: &[u8], out: &mut Vec<u8>, compression: Compression) -> bool {
    if compression == Compression::Better && looks_incompressible(chunk) {
        return false;
    }
    let start = out.len();
    out.reserve(zstd::zstd_safe::compress_bound(chunk.len()));
    let written = {
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        let (contexts, level) = match compression {
            Compression::Fast => (&COMPRESSOR, 1),
            Compression::Better => (&COMPRESSOR_BETTER, 3),
        };
        contexts.with(|cell| match cell.borrow_mut().as_mut() {
            Some(compressor) => compressor.compress_to_buffer(chunk, &mut cursor),
            None => zstd::bulk::Compressor::new(level)
                .and_then(|mut compressor| compressor.compress_to_buffer(chunk, &mut cursor)),
        })
    };
    match written {
        Ok(written) if written + 64 < chunk.len() && out.len() == start + written => true,
        _ => {
            out.truncate(start);
            false
        }
    }
}

/// Whether a chunk looks incompressible (random, or compressed already): three 2 KiB samples
/// (start, middle, end) that the fast compressor cannot shrink by 3%. Such a chunk is stored
/// raw without a full attempt at the slower level, which would find nothing either.
fn looks_incompressible(chunk: &[u8]) -> bool {
    const SAMPLE: usize = 2048;
    if chunk.len() < 8 * SAMPLE {
        return false;
    }
    let middle = chunk.len() / 2 - SAMPLE / 2;
    let mut sample = Vec::with_capacity(3 * SAMPLE);
    for at in [0, middle, chunk.len() - SAMPLE] {
        sample.extend_from_slice(&chunk[at..at + SAMPLE]);
    }
    let mut compressed = Vec::with_capacity(zstd::zstd_safe::compress_bound(sample.len()));
    let written = COMPRESSOR.with(|cell| {
        cell.borrow_mut()
            .as_mut()
            .map(|compressor| compressor.compress_to_buffer(&sample, &mut compressed))
    });
    matches!(written, Some(Ok(size)) if size * 100 >= sample.len() * 97)
}

fn decompress(body: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR
        .with(|cell| {
            cell.borrow_mut()
                .as_mut()
                .map(|decompressor| decompressor.decompress(body, limit))
        })
        .unwrap_or_else(|| zstd::bulk::decompress(body, limit))
}

/// Compresses (when it helps) and seals one chunk into a blob (pure apart from the nonce).
/// The blob is built in one buffer: compressed and encrypted where it lies.
pub fn encode_blob(keys: &RepoKeys, id: &ChunkId, chunk: &[u8]) -> Vec<u8> {
    encode_blob_with(keys, id, chunk, Compression::Fast)
}

/// [`encode_blob`] at a chosen compression.
pub fn encode_blob_with(
    keys: &RepoKeys,
    id: &ChunkId,
    chunk: &[u8],
    compression: Compression,
) -> Vec<u8> {
    let mut blob = RepoKeys::sealing_buffer(1 + chunk.len() / 2);
    let header = blob.len();
    blob.push(ZSTD);
    if !compress_onto(chunk, &mut blob, compression) {
        blob.truncate(header);
        blob.push(RAW);
        blob.extend_from_slice(chunk);
    }
    let mut blob = keys.seal_buffer(id, blob);
    // The buffer had room for the worst case; a pack holds many blobs, so give the rest back
    // (the allocator shrinks in place, without copying).
    blob.shrink_to_fit();
    blob
}

/// Where a decoded chunk lies: inside its opened blob (it was stored raw) or in a buffer of
/// its own (it was inflated).
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The chunk is this range of the blob's buffer.
    InPlace(std::ops::Range<usize>),
    /// The chunk was decompressed into this buffer.
    Inflated(Vec<u8>),
}

/// Opens, decompresses and verifies one blob against its id.
pub fn decode_blob(
    keys: &RepoKeys,
    id: &ChunkId,
    blob: &[u8],
    raw_length: usize,
    object: &str,
) -> Result<Vec<u8>, RepoError> {
    let mut owned = blob.to_vec();
    match decode_blob_in_place(keys, id, &mut owned, raw_length, object)? {
        Decoded::InPlace(range) => {
            owned.truncate(range.end);
            owned.drain(..range.start);
            Ok(owned)
        }
        Decoded::Inflated(chunk) => Ok(chunk),
    }
}

/// [`decode_blob`] without copying: the blob is decrypted where it lies (a read of a whole
/// run of blobs is decoded in its own buffer), and only compressed chunks get a new buffer.
pub fn decode_blob_in_place(
    keys: &RepoKeys,
    id: &ChunkId,
    blob: &mut [u8],
    raw_length: usize,
    object: &str,
) -> Result<Decoded, RepoError> {
    let plain = keys.open_in_place(id, blob).map_err(|_| {
        RepoError::corrupt(
            object,
            format!(
                "blob {} does not decrypt (bit rot or tampering)",
                hex::encode(id)
            ),
        )
    })?;
    let decoded = match plain_body(&blob[plain.clone()], object)? {
        Body::Raw(_) => Decoded::InPlace(plain.start + 1..plain.end),
        Body::Zstd(body) => Decoded::Inflated(inflate(body, raw_length, object)?),
    };
    let chunk = match &decoded {
        Decoded::InPlace(range) => &blob[range.clone()],
        Decoded::Inflated(chunk) => chunk.as_slice(),
    };
    if keys.chunk_id(chunk) != *id {
        return Err(RepoError::corrupt(
            object,
            format!("blob {} does not hash to its id", hex::encode(id)),
        ));
    }
    Ok(decoded)
}

/// The body of a decrypted blob, by its compression flag.
enum Body<'a> {
    Raw(&'a [u8]),
    Zstd(&'a [u8]),
}

fn plain_body<'a>(plain: &'a [u8], object: &str) -> Result<Body<'a>, RepoError> {
    let (flag, body) = plain
        .split_first()
        .ok_or_else(|| RepoError::corrupt(object, "empty blob"))?;
    match *flag {
        RAW => Ok(Body::Raw(body)),
        ZSTD => Ok(Body::Zstd(body)),
        other => Err(RepoError::corrupt(
            object,
            format!("unknown compression flag {other}"),
        )),
    }
}

fn inflate(body: &[u8], raw_length: usize, object: &str) -> Result<Vec<u8>, RepoError> {
    // A blob never holds more than its chunk; refuse to inflate beyond it.
    let limit = raw_length.clamp(1, 64 * 1024 * 1024);
    decompress(body, limit)
        .map_err(|e| RepoError::corrupt(object, format!("does not decompress: {e}")))
}

/// The chunk inside a decrypted blob: `flag ‖ body` (fuzzed directly: it sees untrusted bytes).
pub fn decode_plain(plain: &[u8], raw_length: usize, object: &str) -> Result<Vec<u8>, RepoError> {
    match plain_body(plain, object)? {
        Body::Raw(body) => Ok(body.to_vec()),
        Body::Zstd(body) => inflate(body, raw_length, object),
    }
}

/// Seals a JSON object bound to its name.
pub fn seal_json<T: Serialize>(
    keys: &RepoKeys,
    name: &str,
    value: &T,
) -> Result<Vec<u8>, RepoError> {
    let json = serde_json::to_vec(value).map_err(|e| RepoError::corrupt(name, e.to_string()))?;
    let compressed = zstd::bulk::compress(&json, 3).map_err(RepoError::Io)?;
    Ok(keys.seal(name.as_bytes(), &compressed))
}

/// Opens a sealed JSON object and checks its version.
pub fn open_json<T: for<'de> Deserialize<'de>>(
    keys: &RepoKeys,
    name: &str,
    sealed: &[u8],
) -> Result<T, RepoError> {
    let compressed = keys.open(name.as_bytes(), sealed).map_err(|_| {
        RepoError::corrupt(
            name,
            "does not decrypt with this repository's key (damaged, or from another repository)",
        )
    })?;
    parse_json(&compressed, name)
}

/// zstd-compressed JSON with a `version` field (fuzzed directly: it sees untrusted bytes).
pub fn parse_json<T: for<'de> Deserialize<'de>>(
    compressed: &[u8],
    name: &str,
) -> Result<T, RepoError> {
    let mut json = Vec::new();
    let decoder = zstd::stream::Decoder::new(compressed)
        .map_err(|e| RepoError::corrupt(name, format!("does not decompress: {e}")))?;
    // Indexes and manifests stay far below 256 MiB; a decompression bomb must not exhaust memory.
    std::io::Read::read_to_end(&mut std::io::Read::take(decoder, 256 << 20), &mut json)
        .map_err(|e| RepoError::corrupt(name, format!("does not decompress: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|e| RepoError::corrupt(name, format!("not JSON: {e}")))?;
    let version = value["version"].as_u64().unwrap_or(0) as u32;
    if version != VERSION {
        return Err(RepoError::UnsupportedVersion {
            object: name.to_string(),
            found: version,
            supported: VERSION,
        });
    }
    serde_json::from_value(value)
        .map_err(|e| RepoError::corrupt(name, format!("unexpected shape: {e}")))
}

/// Parses a hex chunk id.
pub fn parse_id(hex_id: &str, object: &str) -> Result<ChunkId, RepoError> {
    hex::decode(hex_id)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| RepoError::corrupt(object, format!("{hex_id:?} is not a chunk id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_compressible_and_random_data() {
        let keys = RepoKeys::generate();
        let compressible = vec![7u8; 100_000];
        let mut random = vec![0u8; 10_000];
        rand::fill(&mut random[..]);
        for chunk in [compressible, random, Vec::new()] {
            let id = keys.chunk_id(&chunk);
            let blob = encode_blob(&keys, &id, &chunk);
            assert_eq!(
                decode_blob(&keys, &id, &blob, chunk.len(), "p").expect("decodes"),
                chunk
            );
        }
    }

    #[test]
    fn better_compression_stores_random_chunks_raw_and_shrinks_text_further() {
        let keys = RepoKeys::generate();
        let mut random = vec![0u8; 200_000];
        rand::fill(&mut random[..]);
        assert!(looks_incompressible(&random));
        let id = keys.chunk_id(&random);
        let mut blob = encode_blob_with(&keys, &id, &random, Compression::Better);
        assert!(matches!(
            decode_blob_in_place(&keys, &id, &mut blob, random.len(), "p"),
            Ok(Decoded::InPlace(_))
        ));
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| {
                format!("GET /api/v1/orders/{} 200 {}ms\n", i * 7 % 1000, i % 97).into_bytes()
            })
            .collect();
        assert!(!looks_incompressible(&text));
        assert!(
            !looks_incompressible(&random[..1000]),
            "short chunks are always tried"
        );
        let id = keys.chunk_id(&text);
        let fast = encode_blob_with(&keys, &id, &text, Compression::Fast);
        let better = encode_blob_with(&keys, &id, &text, Compression::Better);
        assert!(
            better.len() <= fast.len(),
            "{} > {}",
            better.len(),
            fast.len()
        );
        assert_eq!(
            decode_blob(&keys, &id, &better, text.len(), "p").expect("decodes"),
            text
        );
    }

    #[test]
    fn decoding_in_place_leaves_raw_chunks_where_they_lie_and_inflates_compressed_ones() {
        let keys = RepoKeys::generate();
        let mut random = vec![0u8; 10_000];
        rand::fill(&mut random[..]);
        let id = keys.chunk_id(&random);
        let mut blob = encode_blob(&keys, &id, &random);
        match decode_blob_in_place(&keys, &id, &mut blob, random.len(), "p") {
            Ok(Decoded::InPlace(range)) => assert_eq!(&blob[range], random.as_slice()),
            other => panic!("expected the raw chunk in place, got {other:?}"),
        }
        let compressible = vec![7u8; 100_000];
        let id = keys.chunk_id(&compressible);
        let mut blob = encode_blob(&keys, &id, &compressible);
        assert_eq!(
            decode_blob_in_place(&keys, &id, &mut blob, compressible.len(), "p").expect("decodes"),
            Decoded::Inflated(compressible)
        );
        let other = keys.chunk_id(b"something else");
        let mut blob = encode_blob(&keys, &other, &random);
        assert!(matches!(
            decode_blob_in_place(&keys, &other, &mut blob, random.len(), "p"),
            Err(RepoError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_bit_flipped_blob_is_a_typed_error_not_wrong_data() {
        let keys = RepoKeys::generate();
        let chunk = b"important bytes".to_vec();
        let id = keys.chunk_id(&chunk);
        let mut blob = encode_blob(&keys, &id, &chunk);
        let last = blob.len() - 1;
        blob[last] ^= 0x80;
        assert!(matches!(
            decode_blob(&keys, &id, &blob, chunk.len(), "packs/ab/x"),
            Err(RepoError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_blob(&keys, &id, &blob[..10], chunk.len(), "p"),
            Err(RepoError::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_format_version_is_refused_by_name() {
        let keys = RepoKeys::generate();
        let sealed =
            seal_json(&keys, "snapshots/s", &serde_json::json!({"version": 9})).expect("seal");
        match open_json::<Manifest>(&keys, "snapshots/s", &sealed) {
            Err(RepoError::UnsupportedVersion { found: 9, .. }) => {}
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn sealed_json_bound_to_its_name_cannot_be_swapped() {
        let keys = RepoKeys::generate();
        let sealed =
            seal_json(&keys, "snapshots/a", &serde_json::json!({"version": 1})).expect("seal");
        assert!(matches!(
            open_json::<serde_json::Value>(&keys, "snapshots/b", &sealed),
            Err(RepoError::Corrupt { .. })
        ));
    }
}
